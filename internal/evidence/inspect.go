package evidence

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

// Row is one collection in ls (and in the web console).
type Row struct {
	Namespace   string `json:"namespace"`
	Pod         string `json:"pod"`
	Collection  string `json:"collection"`
	Phase       string `json:"phase"`
	Files       int    `json:"files"`
	Bytes       int64  `json:"bytes"`
	Started     string `json:"startTime"`
	RequestedBy string `json:"requestedBy,omitempty"`
	Where       string `json:"destination"`
}

// Result is what a fetch, a download or a verification found: the verifier's verdict.
type Result = verify.Verdict

// Signature states of a collection, as the console shows them.
const (
	SignatureVerified = verify.Verified
	SignatureUnsigned = verify.Unsigned
	SignatureFailed   = verify.Failed
)

// Inspection is one collection as read and checked without hashing its files: the custody
// record's signature against the known keys, and the manifest's SHA-256 against the signed
// one (or the pod's status).
type Inspection struct {
	Namespace  string      `json:"namespace"`
	Pod        string      `json:"pod"`
	Collection string      `json:"collection"`
	Analysis   exec.Target `json:"analysis"`
	Dir        string      `json:"dir"`
	// Signature is SignatureVerified, SignatureUnsigned or SignatureFailed; Problem says
	// what failed.
	Signature string `json:"signature"`
	SignedBy  string `json:"signedBy,omitempty"`
	Problem   string `json:"problem,omitempty"`
	// Manifest is nil when it could not be believed (Signature FAILED before it was read).
	Manifest *manifest.Manifest `json:"manifest,omitempty"`
	// Custody is the verified record's predicate (nil when unsigned or FAILED).
	Custody *custody.Predicate `json:"custody,omitempty"`
	// Files are the names (relative to Dir) Preview accepts: the signed or manifest files.
	Files []string `json:"files"`
}

// Listed is one collection in a pod's list, inspected: its row (from the manifest, when it
// could be believed) and its inspection.
type Listed struct {
	Row        Row
	Inspection Inspection
}

// InspectAll lists pod's complete collections in the analysis pod, newest first and at
// most max, each inspected as Inspect does: one read of its record and one of its manifest.
// A collection whose evidence fails verification is listed with that state (and a row
// that says only its id); one with no manifest yet is not complete and not listed.
func (r *Reader) InspectAll(ctx context.Context, pod string, max int) ([]Listed, error) {
	refs, err := r.Refs(ctx, pod)
	if err != nil {
		return nil, err
	}
	r.pinLatest(ctx, pod, refs)
	var out []Listed
	for _, ref := range refs {
		if len(out) >= max {
			break
		}
		in, err := r.inspect(ctx, ref)
		row := Row{Namespace: ref.Namespace, Pod: ref.Pod, Collection: ref.ID, Where: fmt.Sprintf("%s:%s", ref.Analysis, ref.Dir)}
		if errors.Is(err, exec.ErrOutputTooLong) { // listed, with why it is refused
			in = Inspection{Namespace: ref.Namespace, Pod: ref.Pod, Collection: ref.ID, Analysis: ref.Analysis, Dir: ref.Dir,
				Signature: SignatureFailed, Problem: "refused: " + err.Error() + fmt.Sprintf(" (this reader reads at most %d bytes of a record and %d of a manifest)", r.maxRecord(), r.maxManifest())}
		} else if err != nil {
			continue // not complete, or not readable now: not listed (as ls does)
		}
		if in.Manifest != nil && in.Signature != SignatureFailed { // a failed one's counts are not believed
			row = RowOf(ref, *in.Manifest)
		}
		out = append(out, Listed{Row: row, Inspection: in})
	}
	return out, nil
}

// pinLatest gives the collection the pod's status names the manifest hash the agent
// recorded there, as resolve does, when the status is believed (trustedDestination) and
// names the directory listed. A status that is refused pins nothing: the record's signature
// still decides.
func (r *Reader) pinLatest(ctx context.Context, pod string, refs []Ref) {
	p, err := r.Client.CoreV1().Pods(r.Namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return
	}
	st, ok := status.Get(p)
	if !ok || st.Phase != status.Succeeded || st.ManifestSHA256 == "" {
		return
	}
	l, err := layout.New(r.Dir, r.Namespace, pod)
	if err != nil {
		return
	}
	a, dir, err := r.trustedDestination(ctx, l, st)
	if err != nil {
		return
	}
	for i := range refs {
		if refs[i].ID == st.Collection && refs[i].Analysis == a && refs[i].Dir == dir {
			refs[i].ManifestSHA256, refs[i].UID = st.ManifestSHA256, string(p.UID)
		}
	}
}

// Inspect reads collection id of pod and checks its signature and manifest.
func (r *Reader) Inspect(ctx context.Context, pod, id string) (Inspection, error) {
	ref, err := r.resolveCollection(ctx, pod, id)
	if err != nil {
		return Inspection{}, err
	}
	return r.inspect(ctx, ref)
}

// resolveCollection is collection id (required, one id) of pod in the options' namespace.
func (r *Reader) resolveCollection(ctx context.Context, pod, id string) (Ref, error) {
	if id == "" {
		return Ref{}, errors.New("a collection id is required")
	}
	return r.Resolve(ctx, r.Namespace, pod, id)
}

// inspect reads ref's record and manifest and has the verifier check them (Inspect).
func (r *Reader) inspect(ctx context.Context, ref Ref) (Inspection, error) {
	in := Inspection{Namespace: ref.Namespace, Pod: ref.Pod, Collection: ref.ID, Analysis: ref.Analysis, Dir: ref.Dir}
	c, err := r.open(ctx, ref)
	if err != nil {
		return in, err
	}
	v := c.Opened()
	in.Signature, in.SignedBy = v.Signature, v.SignedBy
	if problems := append(v.Problems, v.Mismatched...); len(problems) > 0 {
		in.Signature, in.Problem = SignatureFailed, "verification FAILED: "+strings.Join(problems, "; ")
		return in, nil
	}
	in.Manifest = c.Believed()
	for _, f := range c.Files() {
		in.Files = append(in.Files, f.Name)
	}
	if rec := c.Record(); rec != nil {
		in.Custody = &rec.Predicate
	}
	return in, nil
}

// Verify streams every file of the collection from the analysis pod and hashes it here (the
// plugin's verify). A verification that fails is a Result, not an error.
func (r *Reader) Verify(ctx context.Context, pod, id string) (Result, error) {
	ref, err := r.resolveCollection(ctx, pod, id)
	if err != nil {
		return Result{}, err
	}
	res, err := r.VerifyInPlace(ctx, ref)
	if failed := (*verify.Error)(nil); errors.As(err, &failed) {
		return res, nil
	}
	return res, err
}

// Download writes the collection to w as one tar stream (entries under "<id>/"), checking
// every file against the signed (or recorded) digests as it passes. The Result says what
// differed; an error is a stream that could not be read or written. started is called
// once the collection has been checked and just before the first byte is written (a server
// sends its headers then).
func (r *Reader) Download(ctx context.Context, pod, id string, w io.Writer, started func()) (Result, error) {
	ref, err := r.resolveCollection(ctx, pod, id)
	if err != nil {
		return Result{}, err
	}
	tw := tar.NewWriter(w)
	res, err := r.Stream(ctx, ref, &tarSink{tw: tw, prefix: ref.ID + "/", buf: make([]byte, 256<<10), started: started, sums: map[string]linked{}})
	if failed := (*verify.Error)(nil); errors.As(err, &failed) {
		if res.Signature == verify.Failed { // nothing was streamed: the record did not hold
			return res, nil
		}
		return res, tw.Close()
	}
	if err != nil {
		return res, err
	}
	return res, tw.Close()
}

// PreviewMax is the most Preview reads of a file.
const PreviewMax = 64 << 10

// Preview is the start of one file of a collection: at most PreviewMax bytes, and whether
// there was more. Only a file the manifest (or the custody record) names can be read.
type Preview struct {
	File      string `json:"file"`
	Text      string `json:"text,omitempty"`
	Binary    bool   `json:"binary,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	Bytes     int    `json:"bytes"`
	// SHA256 of what was read (of the whole file when not Truncated).
	SHA256 string `json:"sha256"`
}

// Preview reads the start of file (a name relative to the collection, as Inspection.Files
// lists them) in the analysis pod.
func (r *Reader) Preview(ctx context.Context, pod, id, file string) (Preview, error) {
	in, err := r.Inspect(ctx, pod, id)
	if err != nil {
		return Preview{}, err
	}
	if in.Signature == SignatureFailed {
		return Preview{}, errors.New(in.Problem)
	}
	known := false
	for _, f := range in.Files {
		known = known || f == file
	}
	if !known {
		return Preview{}, fmt.Errorf("collection %s has no file %s", id, strconv.Quote(file))
	}
	out := &exec.Output{Max: PreviewMax + 1}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	// head stops reading at the bound; the name is an argument, never shell code.
	if err := r.pod(in.Analysis).Head(ctx, in.Dir+"/"+file, PreviewMax+1, out); err != nil {
		return Preview{}, fmt.Errorf("reading %s in %s: %w", file, in.Analysis, err)
	}
	b := out.Bytes()
	p := Preview{File: file, Truncated: len(b) > PreviewMax}
	if p.Truncated {
		b = b[:PreviewMax]
	}
	sum := sha256.Sum256(b)
	p.Bytes, p.SHA256 = len(b), hex.EncodeToString(sum[:])
	text := b
	if p.Truncated { // a rune cut at the bound is not binary
		for i := 0; i < utf8.UTFMax && len(text) > 0 && !utf8.Valid(text); i++ {
			text = text[:len(text)-1]
		}
	}
	if !utf8.Valid(text) || strings.ContainsRune(string(text), 0) {
		p.Binary = true
		return p, nil
	}
	p.Text = string(text)
	return p, nil
}

// linked is a file a tarSink wrote, for a hard link to it later.
type linked struct {
	size   int64
	sha256 string
}

// tarSink writes a new tar stream: regular files and directories only, each name below
// prefix, hard links as links to a file it wrote before.
type tarSink struct {
	tw      *tar.Writer
	prefix  string
	buf     []byte
	started func()
	sums    map[string]linked
}

func (t *tarSink) begin() {
	if t.started != nil {
		t.started()
		t.started = nil
	}
}

func (t *tarSink) Mkdir(name string) error {
	t.begin()
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: t.prefix + name + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
}

func (t *tarSink) Create(e verify.Entry, r io.Reader) (int64, string, error) {
	t.begin()
	name := e.Name
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: t.prefix + name, Size: e.Size, Mode: 0o644, ModTime: e.ModTime}); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(t.tw, h), io.LimitReader(r, e.Size), t.buf)
	if err == nil && n != e.Size {
		err = fmt.Errorf("%s: the stream ended after %d of %d bytes", name, n, e.Size)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	t.sums[name] = linked{size: n, sha256: sum}
	return n, sum, err
}

func (t *tarSink) Link(name, target string) (int64, string, error) {
	l, ok := t.sums[target]
	if !ok {
		return 0, "", verify.ErrNoLinkTarget
	}
	t.begin()
	err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: t.prefix + name, Linkname: t.prefix + target, Mode: 0o644, ModTime: time.Unix(0, 0)})
	t.sums[name] = l
	return l.size, l.sha256, err
}

// RowOf is collection ref's line in a list, from its manifest.
func RowOf(ref Ref, m manifest.Manifest) Row {
	return Row{Namespace: ref.Namespace, Pod: ref.Pod, Collection: ref.ID, Phase: string(status.Succeeded),
		Files: m.Totals.Files, Bytes: m.Totals.Bytes, Started: m.StartTime, RequestedBy: m.RequestedBy,
		Where: fmt.Sprintf("%s:%s", ref.Analysis, ref.Dir)}
}

// readLocal reads name below root, at most max bytes.
func readLocal(root *os.Root, name string, max int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s is larger than %d bytes", filepath.Join(root.Name(), name), max)
	}
	return b, err
}
