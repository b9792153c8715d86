// Package evidence reads collections with one user's own clients and has every byte checked
// by the one verifier (pkg/verify): the analysis pod (resolve, inspect, stream, verify in
// place, preview), a bucket (by version) and a followed file's chain. The kubectl plugin's
// commands and the evidence console both call it with plain arguments; flags and printing
// stay with them.
package evidence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/pathname"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

// Reader reads collections as one user.
type Reader struct {
	// Client and Exec are the user's own (nil Client: no cluster, a bucket or a directory).
	Client kubernetes.Interface
	Exec   exec.Executor
	// Namespace is the source pods' namespace.
	Namespace string
	// AnalysisNamespace, AnalysisSelector and Dir find analysis pods and collections (the
	// agent's destination.namespace, .selector and .dir).
	AnalysisNamespace, AnalysisSelector, Dir string
	// Keys are the keys records verify with, and whether the cluster signs.
	Keys func(ctx context.Context) (verify.Keys, error)
	// S3 is the user's own client of a bucket.
	S3 func(ctx context.Context) (*s3.Client, error)
	// MaxManifestBytes and MaxRecordBytes bound what is read of a manifest and a record (0:
	// 64 MiB each; a server sets the agent's own caps).
	MaxManifestBytes, MaxRecordBytes int
	// Stall is how long a stream waits for the analysis pod's next output (5 minutes when
	// zero).
	Stall time.Duration
	// SpoolDir and SpoolMaxBytes are where and how much of a collection's stream from the
	// analysis pod may wait on disk while the sink is slower than the stream (after 8 MiB
	// in memory): the stream is read at the analysis pod's pace, because the relays lose
	// the tail of an exec stream that is read more slowly than it is written ("":
	// os.TempDir(); 0: 256 MiB).
	SpoolDir      string
	SpoolMaxBytes int64
}

// maxManifest bounds a manifest read.
func (r *Reader) maxManifest() int {
	if r.MaxManifestBytes > 0 {
		return r.MaxManifestBytes
	}
	return maxManifestRead
}

// maxRecord bounds a custody record read.
func (r *Reader) maxRecord() int {
	if r.MaxRecordBytes > 0 {
		return r.MaxRecordBytes
	}
	return custody.MaxRecordBytes
}

// Ref is one collection in an analysis pod.
type Ref struct {
	Namespace, Pod, ID string
	Analysis           exec.Target
	// Dir is the collection's directory in the analysis pod.
	Dir string
	// ManifestSHA256 is the manifest's hash the agent recorded in the pod's status, and UID
	// the pod's UID, when the status names this collection ("" otherwise).
	ManifestSHA256, UID string
}

// Identity is what the collection must be, as the verifier takes it.
func (r Ref) Identity() verify.Identity {
	return verify.Identity{Namespace: r.Namespace, Pod: r.Pod, Collection: r.ID, UID: r.UID, ManifestSHA256: r.ManifestSHA256}
}

// pod runs commands in the analysis pod a through the user's executor.
func (r *Reader) pod(a exec.Target) analysis.Pod { return analysis.Pod{Exec: r.Exec, Target: a} }

// analysis is the analysis pod the agent would choose (its configuration given by flags).
func (r *Reader) analysis(ctx context.Context) (exec.Target, error) {
	return destination.Chooser{Client: r.Client, Config: destination.Config{
		Namespace: r.AnalysisNamespace, Selector: r.AnalysisSelector, Dir: r.Dir}}.Choose(ctx, "")
}

// ResolveArg reads COLLECTION: POD (its latest collection, from its status), POD/ID or
// NS/POD/ID.
func (r *Reader) ResolveArg(ctx context.Context, arg string) (Ref, error) {
	ns, pod, id := r.Namespace, "", ""
	parts := strings.Split(arg, "/")
	switch len(parts) {
	case 1:
		pod = parts[0]
	case 2:
		pod, id = parts[0], parts[1]
	case 3:
		ns, pod, id = parts[0], parts[1], parts[2]
	default:
		return Ref{}, fmt.Errorf("collection %q: use POD, POD/COLLECTION-ID or NAMESPACE/POD/COLLECTION-ID", arg)
	}
	return r.Resolve(ctx, ns, pod, id)
}

// Resolve finds collection id ("": the latest the status names) of pod in namespace ns.
func (r *Reader) Resolve(ctx context.Context, ns, pod, id string) (Ref, error) {
	ref := Ref{Namespace: ns, Pod: pod, ID: id}
	if id != "" {
		if err := layout.ValidCollectionID(id); err != nil {
			return ref, err
		}
	}
	l, err := layout.New(r.Dir, ref.Namespace, ref.Pod)
	if err != nil {
		return ref, err
	}
	if p, err := r.Client.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Pod, metav1.GetOptions{}); err == nil {
		if st, ok := status.Get(p); ok && (ref.ID == "" || ref.ID == st.Collection) && st.Collection != "follow" && st.Destination != "" {
			if st.Phase != status.Succeeded {
				return ref, fmt.Errorf("collection %s of %s/%s is %s: %s", status.Printable(st.Collection), ref.Namespace, ref.Pod, st.Phase, status.Printable(st.Message))
			}
			if ref.Analysis, ref.Dir, err = r.trustedDestination(ctx, l, st); err != nil {
				return ref, err
			}
			ref.ID, ref.ManifestSHA256, ref.UID = st.Collection, st.ManifestSHA256, string(p.UID)
			return ref, nil
		}
	} else if ref.ID == "" {
		return ref, err
	}
	if ref.ID == "" {
		return ref, fmt.Errorf("pod %s/%s has no collection; name one as POD/COLLECTION-ID (kubectl podcopy ls %s)", ref.Namespace, ref.Pod, ref.Pod)
	}
	if ref.Dir, err = l.Collection(ref.ID); err != nil {
		return ref, err
	}
	ref.Analysis, err = r.analysis(ctx)
	return ref, err
}

// trustedDestination accepts a status's destination only where the agent could have
// written: an analysis pod in --analysis-namespace matching --analysis-selector, one of its
// containers, at the directory the layout computes for this pod and a valid collection id.
// Anyone who can create a pod can preset its status, so nothing else is believed: a forged
// status must not send the investigator's credentials into another pod or fetch's writes
// outside -r.
func (r *Reader) trustedDestination(ctx context.Context, l layout.Layout, st status.Status) (exec.Target, string, error) {
	refuse := func(why string) (exec.Target, string, error) {
		return exec.Target{}, "", fmt.Errorf("refusing the pod's status (it may be forged: anyone who can create the pod can set it): %s", why)
	}
	want, err := l.Collection(st.Collection)
	if err != nil {
		return refuse(status.Printable(err.Error()))
	}
	target, dir, err := parseDestination(st.Destination)
	if err != nil {
		return refuse(status.Printable(err.Error()))
	}
	if dir != want {
		return refuse(fmt.Sprintf("destination directory %q is not %s, where collection %s of this pod is written", status.Printable(dir), want, st.Collection))
	}
	if target.Namespace != r.AnalysisNamespace {
		return refuse(fmt.Sprintf("destination namespace %q is not --analysis-namespace=%s", status.Printable(target.Namespace), r.AnalysisNamespace))
	}
	chooser := destination.Chooser{Client: r.Client, Config: destination.Config{Namespace: r.AnalysisNamespace, Selector: r.AnalysisSelector, Dir: r.Dir}}
	if _, err := chooser.Choose(ctx, target.Pod); err != nil {
		var invalid *failure.Invalid
		if errors.As(err, &invalid) {
			return refuse(fmt.Sprintf("destination pod %q does not match --analysis-selector=%s in %s", status.Printable(target.Pod), r.AnalysisSelector, r.AnalysisNamespace))
		}
		return exec.Target{}, "", err
	}
	p, err := r.Client.CoreV1().Pods(target.Namespace).Get(ctx, target.Pod, metav1.GetOptions{})
	if err != nil {
		return exec.Target{}, "", err
	}
	if !slices.ContainsFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == target.Container }) {
		return refuse(fmt.Sprintf("analysis pod %s has no container %q", target.Pod, status.Printable(target.Container)))
	}
	return target, dir, nil
}

// parseDestination reads a status destination "<ns>/<pod>/<container>:<dir>".
func parseDestination(s string) (exec.Target, string, error) {
	target, dir, ok := strings.Cut(s, ":")
	parts := strings.Split(target, "/")
	if !ok || len(parts) != 3 || pathname.Canonical(dir) != nil {
		return exec.Target{}, "", fmt.Errorf("status destination %q is not <namespace>/<pod>/<container>:<dir>", s)
	}
	return exec.Target{Namespace: parts[0], Pod: parts[1], Container: parts[2]}, dir, nil
}

// open reads ref's custody record and manifest from the analysis pod and hands them to the
// verifier, bound to the collection ref names. The check says whether they hold; an error
// is a read that failed.
func (r *Reader) open(ctx context.Context, ref Ref) (*verify.Check, error) {
	keys, err := r.Keys(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := r.ReadRecord(ctx, ref)
	if err != nil {
		return nil, err
	}
	c := verify.Open(ctx, keys, ref.Identity(), fmt.Sprintf("collection %s in %s", ref.ID, ref.Analysis), raw)
	if c.Failed() {
		return c, nil
	}
	mraw, err := r.ReadManifestRaw(ctx, ref)
	if err != nil {
		return nil, err
	}
	c.Manifest(mraw)
	return c, nil
}

// ReadRecord reads the collection's custody record in the analysis pod (nil: there is none).
func (r *Reader) ReadRecord(ctx context.Context, ref Ref) ([]byte, error) {
	out := &exec.Output{Max: r.maxRecord()}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	p := ref.Dir + "/" + custody.FileName
	found, err := r.pod(ref.Analysis).ReadFile(ctx, p, out)
	if err == nil && !found {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", p, ref.Analysis, err)
	}
	return out.Bytes(), nil
}

// Refs lists the collection directories of pod in the analysis pod, newest first
// (complete or not: nothing is read in them).
func (r *Reader) Refs(ctx context.Context, pod string) ([]Ref, error) {
	l, err := layout.New(r.Dir, r.Namespace, pod)
	if err != nil {
		return nil, err
	}
	a, err := r.analysis(ctx)
	if err != nil {
		return nil, err
	}
	out := &exec.Output{Max: maxListing}
	// ls of the pod's directory: collection ids are directory names (staging and follow are
	// skipped below); a missing directory is an empty list.
	lctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	if err := r.pod(a).List(lctx, l.Root(), out); err != nil {
		if exit := (*exec.ExitError)(nil); !errors.As(err, &exit) {
			return nil, err
		}
	}
	var refs []Ref
	for _, id := range strings.Fields(out.String()) {
		ref := Ref{Namespace: r.Namespace, Pod: pod, ID: id, Analysis: a}
		if ref.Dir, err = l.Collection(id); err != nil {
			continue // not a collection id: the follow directory or staging
		}
		refs = append(refs, ref)
	}
	// Collection ids begin with their UTC start time: newest first.
	sort.Slice(refs, func(i, j int) bool { return refs[i].ID > refs[j].ID })
	return refs, nil
}

// ReadManifest reads a collection's manifest.json from the analysis pod, for a listing
// (ls believes it as ls always has: fetch and verify check it).
func (r *Reader) ReadManifest(ctx context.Context, ref Ref) (manifest.Manifest, error) {
	var m manifest.Manifest
	raw, err := r.ReadManifestRaw(ctx, ref)
	if err == nil {
		err = json.Unmarshal(raw, &m)
	}
	return m, err
}

// ReadManifestRaw reads the collection's manifest.json (at most maxManifest bytes); a
// missing one is an error (the collection is not complete).
func (r *Reader) ReadManifestRaw(ctx context.Context, ref Ref) ([]byte, error) {
	out := &exec.Output{Max: r.maxManifest()}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	if err := r.pod(ref.Analysis).Cat(ctx, ref.Dir+"/"+layout.ManifestName, out); err != nil {
		return nil, fmt.Errorf("reading %s/manifest.json in %s: %w", ref.Dir, ref.Analysis, err)
	}
	return out.Bytes(), nil
}
