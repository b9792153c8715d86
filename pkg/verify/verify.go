// Package verify is podcopy's one verifier of collected evidence. Every reader calls it: the
// plugin's fetch and verify (an analysis pod, a bucket, a fetched directory) and the
// evidence console. No reader keeps a check of its own.
//
// A check starts from the identity the caller expects (namespace, pod, collection id; the
// pod's UID and the status's manifest pin when known) and the custody record read from
// where the collection is. Open verifies the record's signature and binds it: a genuine
// record of another collection or pod is a failure that names what it is of. Manifest
// checks the manifest's bytes against the signed digest and the status's pin (both, not
// either). Then the caller feeds the collection's entries from its source (a tar stream,
// a directory, a bucket's version listing); each is hashed where the user is and compared
// with the signed digest; names nothing signed are reported as extra, signed names never
// seen as missing. Finish returns the typed Verdict.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/status"
)

// Signature states of a verdict.
const (
	// Verified: the record's signature verified with a known key and binds it to the
	// collection asked for.
	Verified = "verified"
	// Unsigned: no key is published or given, and the collection has no record (the
	// manifest and the status's pin are all there is to check against).
	Unsigned = "not signed"
	// Failed: the record is missing where keys are published, does not verify, or is of
	// another collection or pod; or the manifest is not the signed (or pinned) one.
	Failed = "FAILED"
)

// Identity is what the caller expects a collection to be.
type Identity struct {
	Namespace  string `json:"namespace"`
	Pod        string `json:"pod"`
	Collection string `json:"collection"`
	// UID is the source pod's UID when the caller knows it ("": not checked).
	UID string `json:"uid,omitempty"`
	// ManifestSHA256 is the manifest's SHA-256 the agent wrote in the pod's status, when the
	// status names this collection ("": not known).
	ManifestSHA256 string `json:"manifestSHA256,omitempty"`
}

// Keys are what records verify with: the published keys, the signer's and the timestamp
// authority's roots, the revocations.
type Keys struct {
	Trust custody.Trust
	// Required is true when keys are published (or given): every collection must then have
	// a record. False only where the cluster does not sign.
	Required bool
}

// Bound is what a verified record says its collection is, printed before anything else so
// a person sees what was verified.
type Bound struct {
	Namespace  string `json:"namespace"`
	Pod        string `json:"pod"`
	UID        string `json:"uid"`
	Collection string `json:"collection"`
	Node       string `json:"node,omitempty"`
	Container  string `json:"container,omitempty"`
	EndTime    string `json:"endTime,omitempty"`
}

// Verdict is what a verification found. It is also the JSON of verify --json and of the
// console's verify route.
type Verdict struct {
	Collection string `json:"collection"`
	Dir        string `json:"dir"`
	// Signature is Verified, Unsigned or Failed.
	Signature string `json:"signature"`
	// SignedBy is the id of the key whose signature verified.
	SignedBy string `json:"signedBy,omitempty"`
	// Signer is who signed: a published key, or a node's certificate and the trusted time
	// of the signature.
	Signer *custody.Signer `json:"signer,omitempty"`
	// Record is what the verified record binds (nil when there is none or it did not verify).
	Record *Bound `json:"record,omitempty"`
	// Problems are the record's failures: missing, signature, each binding that does not
	// hold, the manifest against the signed digest or the status's pin.
	Problems []string `json:"problems,omitempty"`
	Files    int      `json:"files"`
	Bytes    int64    `json:"bytes"`
	// Mismatched, Missing and Unexpected name each file whose bytes differ, each signed
	// file not found, and each name found that nothing signed.
	Mismatched []string `json:"mismatched,omitempty"`
	Missing    []string `json:"missing,omitempty"`
	Unexpected []string `json:"unexpected,omitempty"`
	// Tampered names bucket objects with a newer version or a delete marker over the
	// version the record names (Object Lock keeps the original; readers of the latest
	// version would be misled).
	Tampered []string `json:"tampered,omitempty"`
}

// OK is true when nothing failed.
func (v Verdict) OK() bool {
	return v.Signature != Failed && len(v.Problems)+len(v.Mismatched)+len(v.Missing)+len(v.Unexpected)+len(v.Tampered) == 0
}

// Against says what the digests were checked against.
func (v Verdict) Against() string {
	if v.Signature != Verified {
		return "manifest.json (the collection is unsigned: no custody key is published)"
	}
	s := "the custody record signed by key " + v.SignedBy
	if v.Signer != nil {
		s = "the custody record signed by " + v.Signer.String()
	}
	if r := v.Record; r != nil {
		s += fmt.Sprintf(" for collection %s of pod %s/%s (uid %s)", r.Collection, r.Namespace, r.Pod, r.UID)
	}
	return s
}

// Err is nil when the verdict is OK, else an error that names every problem, each on a line.
func (v Verdict) Err() error {
	if v.OK() {
		return nil
	}
	var lines []string
	if r := v.Record; r != nil {
		lines = append(lines, fmt.Sprintf("  RECORD   of collection %s, pod %s/%s (uid %s), node %s", status.Printable(r.Collection), status.Printable(r.Namespace), status.Printable(r.Pod), status.Printable(r.UID), status.Printable(r.Node)))
	}
	for _, group := range []struct {
		tag   string
		items []string
	}{{"BINDING ", v.Problems}, {"MISMATCH", v.Mismatched}, {"MISSING ", v.Missing}, {"EXTRA   ", v.Unexpected}, {"TAMPERED", v.Tampered}} {
		for _, l := range group.items {
			lines = append(lines, "  "+group.tag+" "+status.Printable(l))
		}
	}
	return &Error{Verdict: v, msg: fmt.Sprintf("verification FAILED for collection %s (%d record problems, %d mismatched, %d missing, %d unexpected, %d tampered):\n%s",
		status.Printable(v.Collection), len(v.Problems), len(v.Mismatched), len(v.Missing), len(v.Unexpected), len(v.Tampered), strings.Join(lines, "\n"))}
}

// Error is a verification that failed: the evidence was read and does not hold (as
// opposed to a read that failed).
type Error struct {
	Verdict Verdict
	msg     string
}

func (e *Error) Error() string { return e.msg }

// File is one file a check expects.
type File struct {
	// Name is relative to the collection ("<container>/<path>", "_pod/...").
	Name string
	// Source is how it is reported: its source path for a collected file, else Name.
	Source string
	SHA256 string
	Size   int64
	// VersionID is the bucket object's version the record names ("": none recorded).
	VersionID string
	// Bundle is the bundle object that holds the file in a bucket, Offset where its bytes
	// start there ("": an object of its own).
	Bundle string
	Offset int64
}

// Check is one verification in progress. It is not safe for concurrent use.
type Check struct {
	want     Identity
	v        Verdict
	rec      *custody.Record
	recSum   string
	manSum   string
	manifest *manifest.Manifest
	expect   map[string]File
	seen     map[string]bool
	// bundles are the bucket's bundle objects the record (or an unsigned manifest) lists;
	// members, each bundle's files in the order of their bytes (made when first needed).
	bundles map[string]File
	members map[string][]File
}

// Open verifies record (nil: none was found) with keys and binds it to want. where names
// the collection's place for messages. A failure is in the verdict (Failed), never an
// error: a caller that stops at Failed() reports Finish().
func Open(ctx context.Context, keys Keys, want Identity, where string, record []byte) *Check {
	c := &Check{want: want, v: Verdict{Collection: want.Collection, Dir: where, Signature: Unsigned}, expect: map[string]File{}, seen: map[string]bool{}, bundles: map[string]File{}}
	if record == nil {
		if keys.Required {
			c.fail(fmt.Sprintf("%s has no %s, but custody keys are published (or given with --key): its record was removed, or it was not written by a signing agent", where, custody.FileName))
		}
		return c
	}
	rec, err := custody.Verify(ctx, record, keys.Trust)
	if err != nil {
		c.fail(err.Error())
		return c
	}
	if rec.PredicateType != custody.PredicateType {
		c.fail(fmt.Sprintf("its record is a %s, not a collection's", rec.PredicateType))
		return c
	}
	c.rec = &rec
	sum := sha256.Sum256(record)
	c.recSum = hex.EncodeToString(sum[:])
	p := rec.Predicate
	c.v.Signature, c.v.SignedBy, c.v.Signer = Verified, rec.KeyID, &rec.Signer
	c.v.Record = &Bound{Namespace: p.Pod.Namespace, Pod: p.Pod.Name, UID: p.Pod.UID, Collection: p.Collection, Node: p.Node, Container: p.Container.Name, EndTime: p.EndTime}
	c.bind("the record", p.Collection, p.Pod.Namespace, p.Pod.Name, p.Pod.UID)
	for _, name := range rec.Names() {
		if name == custody.ManifestSubject {
			continue
		}
		if layout.IsBundle(name) {
			c.bundles[name] = File{Name: name, Source: name, SHA256: rec.Subjects[name], VersionID: rec.Versions[name]}
			continue
		}
		src := name
		if ctr, rest, ok := strings.Cut(name, "/"); ok && ctr == p.Container.Name {
			src = "/" + rest
		}
		f := File{Name: name, Source: src, SHA256: rec.Subjects[name], VersionID: rec.Versions[name]}
		if m, ok := rec.Members[name]; ok {
			f.Bundle, f.Offset, f.Size = m.Bundle, m.Offset, m.Size
		}
		c.expect[name] = f
	}
	return c
}

// bind compares what a record or manifest says it is with what was asked for.
func (c *Check) bind(what, collection, namespace, pod, uid string) {
	w := c.want
	if collection != w.Collection {
		c.fail(fmt.Sprintf("%s is of collection %q, not %q: a genuine record of another collection, copied over this one", what, collection, w.Collection))
	}
	if (w.Namespace != "" || w.Pod != "") && (namespace != w.Namespace || pod != w.Pod) { // offline, unnamed: printed, not checked
		c.fail(fmt.Sprintf("%s is of pod %s/%s, not %s/%s", what, namespace, pod, w.Namespace, w.Pod))
	}
	if w.UID != "" && uid != w.UID {
		c.fail(fmt.Sprintf("%s is of pod uid %s, not %s (another pod of the same name)", what, uid, w.UID))
	}
}

func (c *Check) fail(problem string) {
	c.v.Signature = Failed
	c.v.Problems = append(c.v.Problems, problem)
}

// Failed is true when the record or the manifest did not hold: the files cannot be
// believed against it, and a reader stops.
func (c *Check) Failed() bool { return c.v.Signature == Failed }

// Signed is true when a record verified.
func (c *Check) Signed() bool { return c.rec != nil }

// Record is the verified record (nil when unsigned or failed).
func (c *Check) Record() *custody.Record {
	if c.Failed() {
		return nil
	}
	return c.rec
}

// RecordSHA256 is the hex SHA-256 of the record's bytes ("" when there is none).
func (c *Check) RecordSHA256() string { return c.recSum }

// Version is the bucket version the record names for name ("" when none).
func (c *Check) Version(name string) string {
	if c.rec == nil {
		return ""
	}
	return c.rec.Versions[name]
}

// Manifest checks the manifest's bytes (nil: not found) against the signed digest and the
// status's pin, binds what it says, and (for an unsigned collection) takes its files as
// the expected ones. The manifest is returned when it is believed.
func (c *Check) Manifest(raw []byte) *manifest.Manifest {
	if raw == nil {
		if c.rec != nil {
			c.v.Missing = append(c.v.Missing, custody.ManifestSubject)
		} else if !c.Failed() {
			c.fail("the collection has no manifest.json: it is not complete")
		}
		return nil
	}
	sum := sha256.Sum256(raw)
	c.manSum = hex.EncodeToString(sum[:])
	// Both pins hold, not either. With a record, its digests still stand for the files, so
	// a changed manifest is a mismatch and the files are checked on; without one, a manifest
	// that is not the pinned one cannot be believed at all.
	if pin := c.want.ManifestSHA256; pin != "" && pin != c.manSum {
		msg := fmt.Sprintf("manifest.json: sha256 %s, but the agent recorded %s in the pod's status when it wrote it", c.manSum, pin)
		if c.rec == nil {
			c.fail(msg)
		} else {
			c.v.Mismatched = append(c.v.Mismatched, msg)
		}
	}
	if c.rec != nil {
		if signed := c.rec.Subjects[custody.ManifestSubject]; signed != c.manSum {
			c.v.Mismatched = append(c.v.Mismatched, fmt.Sprintf("manifest.json: sha256 %s, but the custody record signed %s", c.manSum, signed))
		}
	}
	var m manifest.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		c.fail(fmt.Sprintf("manifest.json is not a manifest: %v", err))
		return nil
	}
	if c.rec == nil { // a signed manifest is bound by the record's digest of it
		c.bind("manifest.json", m.Collection, m.Source.Namespace, m.Source.Pod, m.Source.UID)
	}
	c.manifest = &m
	sizes := map[string]int64{}
	for _, f := range m.Files {
		name := custody.FileSubject(m.Source.Container, f.Path)
		sizes[name] = f.Size
		if c.rec == nil {
			c.expect[name] = File{Name: name, Source: f.Path, SHA256: f.SHA256, Size: f.Size, Bundle: f.Bundle, Offset: f.Offset}
		}
	}
	for _, b := range m.Bundles {
		if _, signed := c.bundles[b.Name]; c.rec == nil && !signed && layout.IsBundle(b.Name) {
			c.bundles[b.Name] = File{Name: b.Name, Source: b.Name, SHA256: b.SHA256, Size: b.Size}
		}
	}
	for _, r := range m.Records {
		sizes[r.Name] = r.Size
		if c.rec == nil && r.SHA256 != "" {
			c.expect[r.Name] = File{Name: r.Name, Source: r.Name, SHA256: r.SHA256, Size: r.Size}
		}
	}
	for name, f := range c.expect {
		f.Size = sizes[name]
		c.expect[name] = f
	}
	if c.Failed() {
		return nil
	}
	return &m
}

// Believed is the manifest, when it was read and nothing of the record or the manifest
// failed (nil otherwise).
func (c *Check) Believed() *manifest.Manifest {
	if c.Failed() || len(c.v.Mismatched) > 0 {
		return nil
	}
	return c.manifest
}

// Opened is the verdict on the record and the manifest alone, before any file is read
// (nothing is missing yet).
func (c *Check) Opened() Verdict {
	v := c.v
	v.Mismatched = slices.Clone(v.Mismatched)
	v.Problems = slices.Clone(v.Problems)
	return v
}

// Files are the files the check expects, by name.
func (c *Check) Files() []File {
	out := make([]File, 0, len(c.expect))
	for _, name := range slices.Sorted(maps.Keys(c.expect)) {
		out = append(out, c.expect[name])
	}
	return out
}

// Expected is the file name must be, and whether it is one.
func (c *Check) Expected(name string) (File, bool) {
	f, ok := c.expect[name]
	return f, ok && !c.seen[name]
}

// meta is the SHA-256 the copy of manifest.json or of the record met in a source must have
// (the bytes checked by Open and Manifest); ok false for any other name.
func (c *Check) meta(name string) (sum string, ok bool) {
	switch name {
	case custody.ManifestSubject:
		return c.manSum, true
	case custody.FileName:
		return c.recSum, true
	}
	return "", false
}

// Got records that name was read whole from the source, size bytes with hex SHA-256 sum.
func (c *Check) Got(name string, size int64, sum string) {
	if want, ok := c.meta(name); ok {
		switch {
		case want == "":
			c.Extra(name, "appeared after the collection was checked")
		case sum != want:
			c.v.Mismatched = append(c.v.Mismatched, fmt.Sprintf("%s: sha256 %s, but %s was read and checked", name, sum, want))
		}
		return
	}
	f, ok := c.Expected(name)
	if !ok {
		c.Extra(name, "not in the "+c.origin())
		return
	}
	c.seen[name] = true
	if sum != f.SHA256 {
		c.v.Mismatched = append(c.v.Mismatched, fmt.Sprintf("%s: sha256 %s, %s %s", f.Source, sum, c.origin(), f.SHA256))
		return
	}
	c.v.Files++
	c.v.Bytes += size
}

// Lost records that name was expected and could not be read (its link target is gone).
func (c *Check) Lost(name, why string) {
	f, ok := c.Expected(name)
	if !ok {
		c.Extra(name, why)
		return
	}
	c.seen[name] = true
	c.v.Mismatched = append(c.v.Mismatched, f.Source+" ("+why+")")
}

// Extra records a name the source holds that nothing signed (or that is not a file).
func (c *Check) Extra(name, why string) {
	c.v.Unexpected = append(c.v.Unexpected, name+" ("+why+")")
}

// Tampered records an object whose recorded version was overwritten or hidden.
func (c *Check) Tampered(what string) { c.v.Tampered = append(c.v.Tampered, what) }

// origin names where the expected digests came from.
func (c *Check) origin() string {
	if c.rec != nil {
		return "signed record"
	}
	return "manifest"
}

// Finish is the verdict: every expected file not seen is missing.
func (c *Check) Finish() Verdict {
	v := c.v
	if !c.Failed() {
		for name, f := range c.expect {
			if !c.seen[name] {
				v.Missing = append(v.Missing, f.Source)
			}
		}
	}
	for _, l := range [][]string{v.Problems, v.Mismatched, v.Missing, v.Unexpected, v.Tampered} {
		sort.Strings(l)
	}
	return v
}

// hashCopy copies r to w (nil: nowhere), hashing it: its size and hex SHA-256.
func hashCopy(w io.Writer, r io.Reader, buf []byte) (int64, string, error) {
	h := sha256.New()
	dst := io.Writer(h)
	if w != nil {
		dst = io.MultiWriter(w, h)
	}
	n, err := io.CopyBuffer(dst, r, buf)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// ErrNoLinkTarget is a hard link whose target was not written before it.
var ErrNoLinkTarget = errors.New("hard link target missing")
