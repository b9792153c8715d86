package cli

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/pathname"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

// collectionRef is one collection in an analysis pod.
type collectionRef struct {
	namespace, pod, id string
	analysis           exec.Target
	dir                string // the collection's directory in the analysis pod
	// manifestSHA256 is the manifest's hash the agent recorded in the pod's status, and uid
	// the pod's UID, when the status names this collection ("" otherwise).
	manifestSHA256, uid string
}

// identity is what the collection must be, as the verifier takes it.
func (r collectionRef) identity() verify.Identity {
	return verify.Identity{Namespace: r.namespace, Pod: r.pod, Collection: r.id, UID: r.uid, ManifestSHA256: r.manifestSHA256}
}

// analysis is the analysis pod the agent would choose (its configuration given by flags).
func (o *Options) analysis(ctx context.Context) (exec.Target, error) {
	return destination.Chooser{Client: o.client, Config: destination.Config{
		Namespace: o.AnalysisNamespace, Selector: o.AnalysisSelector, Dir: o.Dir}}.Choose(ctx, "")
}

// resolve reads COLLECTION: POD (its latest collection, from its status), POD/ID or
// NS/POD/ID.
func (o *Options) resolve(ctx context.Context, arg string) (collectionRef, error) {
	ns, pod, id := o.namespace, "", ""
	parts := strings.Split(arg, "/")
	switch len(parts) {
	case 1:
		pod = parts[0]
	case 2:
		pod, id = parts[0], parts[1]
	case 3:
		ns, pod, id = parts[0], parts[1], parts[2]
	default:
		return collectionRef{}, fmt.Errorf("collection %q: use POD, POD/COLLECTION-ID or NAMESPACE/POD/COLLECTION-ID", arg)
	}
	return o.resolveIn(ctx, ns, pod, id)
}

// resolveIn finds collection id ("": the latest the status names) of pod in namespace ns.
func (o *Options) resolveIn(ctx context.Context, ns, pod, id string) (collectionRef, error) {
	ref := collectionRef{namespace: ns, pod: pod, id: id}
	if id != "" {
		if err := layout.ValidCollectionID(id); err != nil {
			return ref, err
		}
	}
	l, err := layout.New(o.Dir, ref.namespace, ref.pod)
	if err != nil {
		return ref, err
	}
	if p, err := o.client.CoreV1().Pods(ref.namespace).Get(ctx, ref.pod, metav1.GetOptions{}); err == nil {
		if st, ok := status.Get(p); ok && (ref.id == "" || ref.id == st.Collection) && st.Collection != "follow" && st.Destination != "" {
			if st.Phase != status.Succeeded {
				return ref, fmt.Errorf("collection %s of %s/%s is %s: %s", status.Printable(st.Collection), ref.namespace, ref.pod, st.Phase, status.Printable(st.Message))
			}
			if ref.analysis, ref.dir, err = o.trustedDestination(ctx, l, st); err != nil {
				return ref, err
			}
			ref.id, ref.manifestSHA256, ref.uid = st.Collection, st.ManifestSHA256, string(p.UID)
			return ref, nil
		}
	} else if ref.id == "" {
		return ref, err
	}
	if ref.id == "" {
		return ref, fmt.Errorf("pod %s/%s has no collection; name one as POD/COLLECTION-ID (kubectl podcopy ls %s)", ref.namespace, ref.pod, ref.pod)
	}
	if ref.dir, err = l.Collection(ref.id); err != nil {
		return ref, err
	}
	ref.analysis, err = o.analysis(ctx)
	return ref, err
}

// trustedDestination accepts a status's destination only where the agent could have
// written: an analysis pod in --analysis-namespace matching --analysis-selector, one of its
// containers, at the directory the layout computes for this pod and a valid collection id.
// Anyone who can create a pod can preset its status, so nothing else is believed: a forged
// status must not send the investigator's credentials into another pod or fetch's writes
// outside -o.
func (o *Options) trustedDestination(ctx context.Context, l layout.Layout, st status.Status) (exec.Target, string, error) {
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
	if target.Namespace != o.AnalysisNamespace {
		return refuse(fmt.Sprintf("destination namespace %q is not --analysis-namespace=%s", status.Printable(target.Namespace), o.AnalysisNamespace))
	}
	chooser := destination.Chooser{Client: o.client, Config: destination.Config{Namespace: o.AnalysisNamespace, Selector: o.AnalysisSelector, Dir: o.Dir}}
	if _, err := chooser.Choose(ctx, target.Pod); err != nil {
		var invalid *failure.Invalid
		if errors.As(err, &invalid) {
			return refuse(fmt.Sprintf("destination pod %q does not match --analysis-selector=%s in %s", status.Printable(target.Pod), o.AnalysisSelector, o.AnalysisNamespace))
		}
		return exec.Target{}, "", err
	}
	p, err := o.client.CoreV1().Pods(target.Namespace).Get(ctx, target.Pod, metav1.GetOptions{})
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

func (o *Options) fetchCommand() *cobra.Command {
	var out, selector string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fetch (COLLECTION | -l SELECTOR | s3://BUCKET/NS/POD/ID) -o DIR",
		Short: "Download a collection from the analysis pod, verifying every file's SHA-256 against its manifest while writing",
		Example: `  kubectl podcopy fetch mysql-0 -o ./evidence          # the pod's latest collection
  kubectl podcopy fetch mysql-0/20261123T101500Z-1a2b3c4d -o ./evidence`,
		Args: func(cmd *cobra.Command, args []string) error {
			if selector != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				o.Output = "json"
			}
			if selector != "" {
				if err := o.complete(); err != nil {
					return err
				}
				return o.fetchSelected(cmd.Context(), selector, out)
			}
			if fref, ok, err := parseFollowRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.followChain(cmd.Context(), fref, out)
			}
			if bref, ok, err := parseBucketRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.fetchBucket(cmd.Context(), bref, out)
			}
			if err := o.complete(); err != nil {
				return err
			}
			ref, err := o.resolve(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return o.fetch(cmd.Context(), ref, out)
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "fetch the latest collection of every pod matching this label selector, each into DIR/<pod>/")
	// SPEC §8: -o names the directory here; --json gives the machine-readable result.
	cmd.Flags().StringVarP(&out, "output", "o", ".", "directory to write <collection id>/ into (that subdirectory must not exist yet)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	o.keysFlags(cmd)
	return cmd
}

// fetchSelected fetches the latest collection of every pod matching selector into
// out/<pod>/, and fails naming each pod whose fetch failed.
func (o *Options) fetchSelected(ctx context.Context, selector, out string) error {
	pods, err := o.selectPods(ctx, selector)
	if err != nil {
		return err
	}
	var errs []error
	for _, pod := range pods {
		ref, err := o.resolve(ctx, pod)
		if err == nil {
			err = os.MkdirAll(filepath.Join(out, pod), 0o755)
		}
		if err == nil {
			err = o.fetch(ctx, ref, filepath.Join(out, pod))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", o.namespace, pod, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d pods failed: %w", len(errs), len(pods), errors.Join(errs...))
	}
	return nil
}

// Result is what a fetch, a download or a verification found: the verifier's verdict.
type Result = verify.Verdict

// fetch streams the collection as tar from the analysis pod into <out>/<id>, hashing each
// file as it is written, and compares every hash with the manifest read first.
func (o *Options) fetch(ctx context.Context, ref collectionRef, out string) error {
	dest := filepath.Join(out, ref.id)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return fmt.Errorf("%w (fetch writes into a new directory)", err)
	}
	root, err := os.OpenRoot(dest) // every write below stays inside dest (no .., no symlinks out)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	res, err := o.stream(ctx, ref, &rootSink{root: root, buf: make([]byte, 256<<10)})
	res.Dir = dest
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
		return err
	}
	return o.report(res, "fetched", fmt.Sprintf("%d files (%s) to %s", res.Files, size(res.Bytes), dest))
}

// stream reads the collection as tar from the analysis pod into s, hashing each file as it
// passes here, and has the verifier compare every hash with the signed digests (checked
// first, with the manifest). Nothing is held whole: each file goes from the exec's stream
// to s. A verdict that fails is returned with its *verify.Error.
func (o *Options) stream(ctx context.Context, ref collectionRef, s verify.Sink) (Result, error) {
	c, err := o.open(ctx, ref)
	if err != nil {
		return Result{}, err
	}
	if c.Failed() {
		v := c.Finish()
		return v, v.Err()
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	wctx, stdout, stop := watched(ctx, o.Stall, pw, "reading from "+ref.analysis.String())
	defer stop()
	go func() {
		err := o.exec.Exec(wctx, exec.Request{Target: ref.analysis, Command: []string{"tar", "-c", "-f", "-", "-C", ref.dir, "."}, Stdout: stdout})
		if cause := context.Cause(wctx); err != nil && cause != nil && ctx.Err() == nil {
			err = cause // the stall, not the cancelled stream
		}
		pw.CloseWithError(err) // nil: the reader sees io.EOF
		done <- err
	}()
	werr := c.Tar(tar.NewReader(bufio.NewReaderSize(pr, 256<<10)), s)
	if werr != nil {
		pr.CloseWithError(werr)
	} else {
		_, _ = io.Copy(io.Discard, pr)
	}
	if err := <-done; err != nil && werr == nil {
		werr = fmt.Errorf("reading the collection from %s: %w", ref.analysis, err)
	}
	v := c.Finish()
	v.Dir = fmt.Sprintf("%s:%s", ref.analysis, ref.dir)
	if werr != nil {
		return v, werr
	}
	return v, v.Err()
}

// rootSink writes below a directory; every name stays inside it (os.Root).
type rootSink struct {
	root *os.Root
	buf  []byte
}

func (r *rootSink) Mkdir(name string) error { return r.root.MkdirAll(name, 0o755) }

func (r *rootSink) Create(e verify.Entry, src io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := writeFileN(r.root, e.Name, src, r.buf, h)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

func (r *rootSink) Link(name, target string) (int64, string, error) {
	lf, err := r.root.Open(target)
	if err != nil {
		return 0, "", verify.ErrNoLinkTarget
	}
	defer func() { _ = lf.Close() }()
	return r.Create(verify.Entry{Name: name}, lf) // a copy, hashed again
}

// writeFileN writes a new file name below root from r, and says how many bytes.
func writeFileN(root *os.Root, name string, r io.Reader, buf []byte, h io.Writer) (int64, error) {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	var w io.Writer = f
	if h != nil {
		w = io.MultiWriter(f, h)
	}
	n, err := io.CopyBuffer(w, r, buf)
	return n, errors.Join(err, f.Close())
}

// report prints a fetch or verify verdict: the record's identity first, then the result;
// anything wrong is an error naming every problem.
func (o *Options) report(v Result, verb, summary string) error {
	if o.Output == "json" {
		if err := o.printJSON(v); err != nil {
			return err
		}
		return v.Err()
	}
	if !v.OK() {
		return v.Err()
	}
	if r := v.Record; r != nil {
		fmt.Fprintf(o.Out, "custody record: collection %s of pod %s/%s (uid %s) on node %s, signed by key %s\n",
			status.Printable(r.Collection), status.Printable(r.Namespace), status.Printable(r.Pod), status.Printable(r.UID), status.Printable(r.Node), v.SignedBy)
	}
	fmt.Fprintf(o.Out, "%s %s; every SHA-256 matches %s\n", verb, summary, v.Against())
	return nil
}

func (o *Options) verifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify COLLECTION | s3://BUCKET/NS/POD/ID | DIR",
		Short: "Check a collection's signed custody record, then re-hash every file in place in the analysis pod (or in DIR, a fetched collection, offline with --key)",
		Example: `  kubectl podcopy verify mysql-0                                  # in the analysis pod
  kubectl podcopy verify ./evidence/20261123T101500Z-1a2b3c4d --key keys.pem   # offline`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ref, ok, err := parseFollowRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.followChain(cmd.Context(), ref, "")
			}
			if ref, ok, err := parseBucketRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.verifyBucket(cmd.Context(), ref)
			}
			if isLocalCollection(args[0]) {
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.verifyLocal(cmd.Context(), args[0])
			}
			if err := o.complete(); err != nil {
				return err
			}
			ref, err := o.resolve(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return o.verify(cmd.Context(), ref)
		},
	}
	o.keysFlags(cmd)
	cmd.Flags().StringVar(&o.Expect, "expect", "", "offline (DIR): the collection the directory must be, NAMESPACE/POD[/COLLECTION-ID] (default: the collection id is the directory's name; namespace and pod are printed, not checked)")
	cmd.Flags().StringVar(&o.ExpectUID, "expect-uid", "", "offline (DIR): the source pod's UID the record must name")
	return cmd
}

// verify reads the collection from the analysis pod and hashes it here (nothing the
// analysis pod computes is believed), then reports.
func (o *Options) verify(ctx context.Context, ref collectionRef) error {
	res, err := o.verifyInPlace(ctx, ref)
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
		return err
	}
	return o.report(res, "verified", fmt.Sprintf("%d files (%s) in %s", res.Files, size(res.Bytes), res.Dir))
}

// verifyInPlace streams the collection's bytes from the analysis pod to this process, as
// fetch does but without writing, and has the verifier hash and check them: names the
// directory holds that nothing signed are reported too.
func (o *Options) verifyInPlace(ctx context.Context, ref collectionRef) (Result, error) {
	return o.stream(ctx, ref, verify.NewDiscard())
}
