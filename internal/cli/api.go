package cli

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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

// The evidence API: what a server (the web console) calls with a user's own clients (set
// with With), so that it reads nothing the user could not read with the plugin.

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
func (o *Options) InspectAll(ctx context.Context, pod string, max int) ([]Listed, error) {
	refs, err := o.collectionRefs(ctx, pod)
	if err != nil {
		return nil, err
	}
	o.pinLatest(ctx, pod, refs)
	var out []Listed
	for _, ref := range refs {
		if len(out) >= max {
			break
		}
		in, err := o.inspect(ctx, ref)
		row := Row{Namespace: ref.namespace, Pod: ref.pod, Collection: ref.id, Where: fmt.Sprintf("%s:%s", ref.analysis, ref.dir)}
		if errors.Is(err, exec.ErrOutputTooLong) { // listed, with why it is refused
			in = Inspection{Namespace: ref.namespace, Pod: ref.pod, Collection: ref.id, Analysis: ref.analysis, Dir: ref.dir,
				Signature: SignatureFailed, Problem: "refused: " + err.Error() + fmt.Sprintf(" (this reader reads at most %d bytes of a record and %d of a manifest)", o.maxRecord(), o.maxManifest())}
		} else if err != nil {
			continue // not complete, or not readable now: not listed (as ls does)
		}
		if in.Manifest != nil && in.Signature != SignatureFailed { // a failed one's counts are not believed
			row = rowOf(ref, *in.Manifest)
		}
		out = append(out, Listed{Row: row, Inspection: in})
	}
	return out, nil
}

// pinLatest gives the collection the pod's status names the manifest hash the agent
// recorded there, as resolve does, when the status is believed (trustedDestination) and
// names the directory listed. A status that is refused pins nothing: the record's signature
// still decides.
func (o *Options) pinLatest(ctx context.Context, pod string, refs []collectionRef) {
	p, err := o.client.CoreV1().Pods(o.namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return
	}
	st, ok := status.Get(p)
	if !ok || st.Phase != status.Succeeded || st.ManifestSHA256 == "" {
		return
	}
	l, err := layout.New(o.Dir, o.namespace, pod)
	if err != nil {
		return
	}
	a, dir, err := o.trustedDestination(ctx, l, st)
	if err != nil {
		return
	}
	for i := range refs {
		if refs[i].id == st.Collection && refs[i].analysis == a && refs[i].dir == dir {
			refs[i].manifestSHA256, refs[i].uid = st.ManifestSHA256, string(p.UID)
		}
	}
}

// Inspect reads collection id of pod and checks its signature and manifest.
func (o *Options) Inspect(ctx context.Context, pod, id string) (Inspection, error) {
	ref, err := o.resolveCollection(ctx, pod, id)
	if err != nil {
		return Inspection{}, err
	}
	return o.inspect(ctx, ref)
}

// resolveCollection is collection id (required, one id) of pod in the options' namespace.
func (o *Options) resolveCollection(ctx context.Context, pod, id string) (collectionRef, error) {
	if id == "" {
		return collectionRef{}, errors.New("a collection id is required")
	}
	return o.resolveIn(ctx, o.namespace, pod, id)
}

// inspect reads ref's record and manifest and has the verifier check them (Inspect).
func (o *Options) inspect(ctx context.Context, ref collectionRef) (Inspection, error) {
	in := Inspection{Namespace: ref.namespace, Pod: ref.pod, Collection: ref.id, Analysis: ref.analysis, Dir: ref.dir}
	c, err := o.open(ctx, ref)
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
func (o *Options) Verify(ctx context.Context, pod, id string) (Result, error) {
	ref, err := o.resolveCollection(ctx, pod, id)
	if err != nil {
		return Result{}, err
	}
	res, err := o.verifyInPlace(ctx, ref)
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
func (o *Options) Download(ctx context.Context, pod, id string, w io.Writer, started func()) (Result, error) {
	ref, err := o.resolveCollection(ctx, pod, id)
	if err != nil {
		return Result{}, err
	}
	tw := tar.NewWriter(w)
	res, err := o.stream(ctx, ref, &tarSink{tw: tw, prefix: ref.id + "/", buf: make([]byte, 256<<10), started: started, sums: map[string]linked{}})
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
func (o *Options) Preview(ctx context.Context, pod, id, file string) (Preview, error) {
	in, err := o.Inspect(ctx, pod, id)
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
	if err := o.exec.Exec(ctx, exec.Request{Target: in.Analysis, Command: []string{"head", "-c", strconv.Itoa(PreviewMax + 1), "--", in.Dir + "/" + file}, Stdout: out, Stderr: io.Discard}); err != nil {
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

// Ask sets a collection request on pod with the user's own identity (admission checks it
// and records who asked) and returns the request's id. follow harvests every interval.
func (o *Options) Ask(ctx context.Context, pod string, paths []string, container string, follow bool, interval string) (string, error) {
	_, req, err := o.ask(ctx, pod, paths, collectFlags{container: container, follow: follow, interval: interval})
	if err != nil {
		return "", err
	}
	return req.ID(), nil
}

// Stop removes pod's request (a follow ships what is left and ends).
func (o *Options) Stop(ctx context.Context, pod string) error {
	_, err := o.patchAnnotations(ctx, pod, stopAnnotations())
	return err
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
