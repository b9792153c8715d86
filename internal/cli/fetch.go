package cli

import (
	"archive/tar"
	"bufio"
	"bytes"
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
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/exec"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/pathname"
	"github.com/podcopy/podcopy/pkg/status"
)

// collectionRef is one collection in an analysis pod.
type collectionRef struct {
	namespace, pod, id string
	analysis           exec.Target
	dir                string // the collection's directory in the analysis pod
	// manifestSHA256 is the manifest's hash the agent recorded in the pod's status ("" when
	// the status is about another collection).
	manifestSHA256 string
}

// analysis is the analysis pod the agent would choose (its configuration given by flags).
func (o *Options) analysis(ctx context.Context) (exec.Target, error) {
	return destination.Chooser{Client: o.client, Config: destination.Config{
		Namespace: o.AnalysisNamespace, Selector: o.AnalysisSelector, Dir: o.Dir}}.Choose(ctx, "")
}

// resolve reads COLLECTION: POD (its latest collection, from its status), POD/ID or
// NS/POD/ID.
func (o *Options) resolve(ctx context.Context, arg string) (collectionRef, error) {
	ref := collectionRef{namespace: o.namespace}
	parts := strings.Split(arg, "/")
	switch len(parts) {
	case 1:
		ref.pod = parts[0]
	case 2:
		ref.pod, ref.id = parts[0], parts[1]
	case 3:
		ref.namespace, ref.pod, ref.id = parts[0], parts[1], parts[2]
	default:
		return ref, fmt.Errorf("collection %q: use POD, POD/COLLECTION-ID or NAMESPACE/POD/COLLECTION-ID", arg)
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
			ref.id, ref.manifestSHA256 = st.Collection, st.ManifestSHA256
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

// Result is what a fetch, a download or a verification found.
type Result struct {
	Collection string   `json:"collection"`
	Dir        string   `json:"dir"`
	Files      int      `json:"files"`
	Bytes      int64    `json:"bytes"`
	Mismatched []string `json:"mismatched,omitempty"`
	Missing    []string `json:"missing,omitempty"`
	Unexpected []string `json:"unexpected,omitempty"`
	// SignedBy is the key id whose signature on the custody record verified ("": unsigned).
	SignedBy string `json:"signedBy,omitempty"`
}

func (r Result) ok() bool {
	return len(r.Mismatched)+len(r.Missing)+len(r.Unexpected) == 0
}

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
	if err != nil {
		return err
	}
	res.Dir = dest
	return o.report(res, "fetched", fmt.Sprintf("%d files (%s) to %s", res.Files, size(res.Bytes), dest))
}

// stream reads the collection as tar from the analysis pod into s, hashing each file as it
// passes, and compares every hash with the (signed) manifest read first. Nothing is held
// whole: each file goes from the exec's stream to s.
func (o *Options) stream(ctx context.Context, ref collectionRef, s sink) (Result, error) {
	sig, m, sum, err := o.signedManifest(ctx, ref)
	if err != nil {
		return Result{}, err
	}
	ref.manifestSHA256 = sum // the manifest.json in the stream must be the one just read
	want := map[string]expected{}
	for _, e := range expectations(m, sig) {
		want[e.rel] = e
	}
	res := Result{Collection: ref.id}
	sig.checkManifest(sum, &res)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	wctx, stdout, stop := watched(ctx, o.Stall, pw, "fetching from "+ref.analysis.String())
	defer stop()
	go func() {
		err := o.exec.Exec(wctx, exec.Request{Target: ref.analysis, Command: []string{"tar", "-c", "-f", "-", "-C", ref.dir, "."}, Stdout: stdout})
		if cause := context.Cause(wctx); err != nil && cause != nil && ctx.Err() == nil {
			err = cause // the stall, not the cancelled stream
		}
		pw.CloseWithError(err) // nil: the reader sees io.EOF
		done <- err
	}()
	werr := untar(s, tar.NewReader(bufio.NewReaderSize(pr, 256<<10)), sums{manifest: ref.manifestSHA256, record: sig.recordSum()}, want, &res)
	if werr != nil {
		pr.CloseWithError(werr)
	} else {
		_, _ = io.Copy(io.Discard, pr)
	}
	if err := <-done; err != nil && werr == nil {
		werr = fmt.Errorf("reading the collection from %s: %w", ref.analysis, err)
	}
	if werr != nil {
		return res, werr
	}
	for _, e := range want {
		res.Missing = append(res.Missing, e.src)
	}
	sort.Strings(res.Missing)
	return res, nil
}

// sums are the hashes the stream's manifest.json and custody record must have (the copies
// read and checked before the stream); record is "" for an unsigned collection.
type sums struct{ manifest, record string }

// sink is where a checked stream goes: a directory (fetch) or a new tar stream (the web
// console's download). Both hash what they write.
type sink interface {
	// mkdir makes a directory (and its parents).
	mkdir(name string) error
	// create writes a new regular file from r and returns its size and hex SHA-256.
	create(hdr *tar.Header, name string, r io.Reader) (int64, string, error)
	// link makes name the same content as target, written before, and returns its size and
	// hex SHA-256.
	link(name, target string) (int64, string, error)
}

// untar writes regular files and directories of the stream to s, checking names and
// hashes. A file is found in want by its name in the collection, then removed from want.
func untar(s sink, tr *tar.Reader, sums sums, want map[string]expected, res *Result) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the collection stream: %w", err)
		}
		name := strings.TrimPrefix(path.Clean(hdr.Name), "./")
		if name == "." {
			continue
		}
		if meta, ok := map[string]string{custody.ManifestSubject: sums.manifest, custody.FileName: sums.record}[name]; ok && hdr.Typeflag == tar.TypeReg {
			if meta == "" { // a record where none was read: not written, not believed
				res.Unexpected = append(res.Unexpected, name+" (appeared after the collection was checked)")
				continue
			}
			_, got, err := s.create(hdr, name, tr)
			if err != nil {
				return err
			}
			if got != meta {
				res.Mismatched = append(res.Mismatched, fmt.Sprintf("%s: sha256 %s, but %s was read and checked", name, got, meta))
			}
			continue
		}
		if pathname.Canonical("/"+name) != nil {
			res.Unexpected = append(res.Unexpected, hdr.Name+" (not a clean name)")
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := s.mkdir(name); err != nil {
				return err
			}
			continue
		case tar.TypeReg, tar.TypeLink:
		default:
			res.Unexpected = append(res.Unexpected, name+" (not a regular file)")
			continue
		}
		e, known := want[name]
		if !known {
			res.Unexpected = append(res.Unexpected, name+" (not in the "+recordName(sums)+")")
			continue
		}
		delete(want, name)
		var n int64
		var got string
		if hdr.Typeflag == tar.TypeLink { // a hard link of a file written before
			if n, got, err = s.link(name, strings.TrimPrefix(path.Clean(hdr.Linkname), "./")); errors.Is(err, errNoLinkTarget) {
				res.Mismatched = append(res.Mismatched, e.src+" (its hard link target is missing)")
				continue
			}
		} else {
			n, got, err = s.create(hdr, name, tr)
		}
		if err != nil {
			return err
		}
		if got != e.sha256 {
			res.Mismatched = append(res.Mismatched, fmt.Sprintf("%s: sha256 %s, %s %s", e.src, got, recordName(sums), e.sha256))
		}
		res.Files++
		res.Bytes += n
	}
}

// errNoLinkTarget is a hard link whose target was not written before it.
var errNoLinkTarget = errors.New("hard link target missing")

// rootSink writes below a directory; every name stays inside it (os.Root).
type rootSink struct {
	root *os.Root
	buf  []byte
}

func (r *rootSink) mkdir(name string) error { return r.root.MkdirAll(name, 0o755) }

func (r *rootSink) create(_ *tar.Header, name string, src io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := writeFileN(r.root, name, src, r.buf, h)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

func (r *rootSink) link(name, target string) (int64, string, error) {
	lf, err := r.root.Open(target)
	if err != nil {
		return 0, "", errNoLinkTarget
	}
	defer func() { _ = lf.Close() }()
	return r.create(nil, name, lf) // a copy, hashed again
}

// recordName names where the digests came from.
func recordName(s sums) string {
	if s.record != "" {
		return digestOrigin(&signed{})
	}
	return digestOrigin(nil)
}

// signedManifest reads and checks the collection's custody record (nil when the cluster does
// not sign), then its manifest and the manifest's SHA-256. With a record, the signed digest
// decides (and names what differs) instead of the status's pin.
func (o *Options) signedManifest(ctx context.Context, ref collectionRef) (*signed, manifest.Manifest, string, error) {
	raw, err := o.readRecord(ctx, ref)
	if err != nil {
		return nil, manifest.Manifest{}, "", err
	}
	sig, err := o.checkRecord(ctx, raw, fmt.Sprintf("collection %s in %s", ref.id, ref.analysis))
	if err != nil {
		return nil, manifest.Manifest{}, "", err
	}
	if sig != nil {
		ref.manifestSHA256 = ""
	}
	m, sum, err := o.readManifestSum(ctx, ref)
	return sig, m, sum, err
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

// hashOne hashes one file in the analysis pod, its name passed as an argument (a name with a
// newline cannot be a line of sha256sum -c's input). GNU sha256sum prefixes such a line with
// a backslash; the hash is the 64 hex digits after it.
func (o *Options) hashOne(ctx context.Context, ref collectionRef, p string) (string, error) {
	out := &exec.Output{Max: 64 << 10}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	if err := o.exec.Exec(ctx, exec.Request{Target: ref.analysis, Command: []string{"sha256sum", "--", p}, Stdout: out, Stderr: io.Discard}); err != nil {
		return "", err
	}
	s := strings.TrimPrefix(out.String(), "\\")
	if len(s) < 64 {
		return "", fmt.Errorf("sha256sum printed %q", out.String())
	}
	return s[:64], nil
}

// digestSource says what a file's digest came from.
func digestSource(s *signed) string {
	if s != nil {
		return "sha256 the custody record signed"
	}
	return "manifest's sha256"
}

// report prints a fetch or verify result; anything wrong is an error naming the files.
func (o *Options) report(res Result, verb, summary string) error {
	if o.Output == "json" {
		if err := o.printJSON(res); err != nil {
			return err
		}
	}
	if res.ok() {
		if o.Output != "json" {
			against := "manifest.json (the collection is unsigned: no custody key is published)"
			if res.SignedBy != "" {
				against = "the custody record signed by key " + res.SignedBy
			}
			fmt.Fprintf(o.Out, "%s %s; every SHA-256 matches %s\n", verb, summary, against)
		}
		return nil
	}
	var lines []string
	for _, l := range res.Mismatched {
		lines = append(lines, "  MISMATCH "+status.Printable(l))
	}
	for _, l := range res.Missing {
		lines = append(lines, "  MISSING  "+status.Printable(l))
	}
	for _, l := range res.Unexpected {
		lines = append(lines, "  EXTRA    "+status.Printable(l))
	}
	return fmt.Errorf("verification FAILED for collection %s (%d mismatched, %d missing, %d unexpected):\n%s",
		res.Collection, len(res.Mismatched), len(res.Missing), len(res.Unexpected), strings.Join(lines, "\n"))
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
	return cmd
}

// verify runs sha256sum -c in the analysis pod over the manifest's files and reports.
func (o *Options) verify(ctx context.Context, ref collectionRef) error {
	res, err := o.verifyInPlace(ctx, ref)
	if err != nil {
		return err
	}
	return o.report(res, "verified", fmt.Sprintf("%d files (%s) in %s", res.Files, size(res.Bytes), res.Dir))
}

// verifyInPlace checks the custody record and the manifest, then runs sha256sum -c in the
// analysis pod over every file they name.
func (o *Options) verifyInPlace(ctx context.Context, ref collectionRef) (Result, error) {
	sig, m, sum, err := o.signedManifest(ctx, ref)
	if err != nil {
		return Result{}, err
	}
	res := Result{Collection: ref.id, Dir: fmt.Sprintf("%s:%s", ref.analysis, ref.dir)}
	sig.checkManifest(sum, &res)
	var list bytes.Buffer
	byLocal := map[string]string{}
	var special []expected // names sha256sum -c cannot take on a line (newline, backslash)
	files := expectations(m, sig)
	for _, f := range files {
		local := ref.dir + "/" + f.rel
		if strings.ContainsAny(local, "\n\r\\") {
			special = append(special, f)
			continue
		}
		byLocal[local] = f.src
		fmt.Fprintf(&list, "%s  %s\n", f.sha256, local)
	}
	// sha256sum -c prints a line per input line: "PATH: OK" or "PATH: FAILED open or read",
	// never longer than the input line plus its verdict. More is not sha256sum talking.
	out := &exec.Output{Max: list.Len() + 32*len(files) + 4096}
	wctx, w, stop := watched(ctx, o.Stall, out, "hashing in "+ref.analysis.String())
	err = o.exec.Exec(wctx, exec.Request{Target: ref.analysis, Command: []string{"sha256sum", "-c", "-"}, Stdin: &list, Stdout: w, Stderr: io.Discard})
	if cause := context.Cause(wctx); err != nil && cause != nil && ctx.Err() == nil {
		err = cause
	}
	stop()
	if exit := (*exec.ExitError)(nil); err != nil && !errors.As(err, &exit) {
		return res, fmt.Errorf("hashing in %s: %w", ref.analysis, err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		local, verdict, ok := strings.Cut(line, ": ")
		src, known := byLocal[local]
		if !ok || !known {
			continue
		}
		delete(byLocal, local)
		switch {
		case verdict == "OK":
			res.Files++
		case strings.Contains(verdict, "open or read"):
			res.Missing = append(res.Missing, src)
		default:
			res.Mismatched = append(res.Mismatched, src+": content differs from the "+digestSource(sig))
		}
	}
	for _, src := range byLocal { // no verdict at all: not hashed (unreadable or missing)
		res.Missing = append(res.Missing, src)
	}
	for _, f := range special {
		switch got, err := o.hashOne(ctx, ref, ref.dir+"/"+f.rel); {
		case err != nil:
			res.Missing = append(res.Missing, f.src)
		case got == f.sha256:
			res.Files++
		default:
			res.Mismatched = append(res.Mismatched, f.src+": content differs from the "+digestSource(sig))
		}
	}
	sort.Strings(res.Missing)
	for _, f := range files {
		res.Bytes += f.size
	}
	return res, nil
}
