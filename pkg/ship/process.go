package ship

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// process reads the source tar from src and writes each entry to dst (names relative to
// the staging root), the manifest and the custody record last.
func (s *Shipper) process(ctx context.Context, job Job, p plan, src io.Reader, dst Sink) (Result, error) {
	res := Result{SkippedByType: map[string]int{}}
	mb, err := manifest.NewBuilder(s.SpoolDir)
	if err != nil {
		return res, err
	}
	defer mb.Close()
	mb.Max, mb.Spool = job.Limits.MaxManifestBytes, s.Spool
	// Every byte read from the source counts against its budget, as received and as a tar
	// stream (a gzip bomb counts by what it expands to), entries not written included.
	budget := job.Limits.SourceBudget()
	// The tar reader asks for 512-byte blocks; each ask of the spool is a read of its file
	// once the source is ahead (three per small file): read it in large pieces.
	wire := &countingReader{r: bufio.NewReaderSize(src, 128<<10), limit: budget, what: "received"} // compressed when job.Gzip
	archive := wire                                                                                // the tar stream
	var gz *gzip.Reader
	if job.Gzip {
		if gz, err = gzip.NewReader(wire); err != nil {
			return res, readError(err)
		}
		archive = &countingReader{r: gz, limit: budget, what: "decompressed"}
	}
	// A compressed source leg compresses the analysis pod's leg too when the archive does.
	decide := func() error { return dst.Encode(job.Gzip && archive.n >= minRatio*wire.n) }
	if !job.Gzip {
		if err := decide(); err != nil {
			return res, err
		}
	}
	w := &writer{ctx: ctx, dst: dst, job: job, mb: mb, res: &res, buf: bufPool.Get().(*[]byte), written: newWrittenFiles(s.SpoolDir), spoolDir: s.SpoolDir}
	defer bufPool.Put(w.buf)
	defer func() { _ = w.written.Close() }()
	if err := w.prefixDirs(); err != nil {
		return res, err
	}
	for _, sk := range p.skipped {
		if err := w.skip(sk.Path, sk.Type, sk.Reason); err != nil {
			return res, err
		}
	}
	for lit := range p.linked {
		w.seen[lit] = true
	}
	ender := &endTracker{r: &probe{r: archive, decide: decide}}
	if err := w.copyEntries(ctx, tar.NewReader(ender), ender); err != nil {
		return res, err
	}
	if err := w.written.Close(); err != nil { // every entry is in: its index goes before the record is made
		return res, err
	}
	// The archive has ended; what follows (padding, gzip trailer) is drained so the source
	// can exit, and its exit status arrives through the pipe.
	if gz != nil {
		if _, err := io.Copy(io.Discard, archive); err != nil {
			return res, readError(err)
		}
	}
	if _, err := io.Copy(io.Discard, wire); err != nil {
		var se *sourceExit
		if !errors.As(err, &se) || se.Code != 1 {
			return res, readError(err)
		}
		res.Warning = fmt.Sprintf("tar in the source exited 1 after a complete archive: %s", se.Stderr)
	}
	for _, lit := range Prune(job.Paths) {
		if !w.seen[lit] && !pathname.IsGlob(lit) {
			return res, notFound("%s: no such file or directory in container %s", lit, job.Header.Source.Container)
		}
	}
	if err := decide(); err != nil { // an archive shorter than the probe
		return res, err
	}
	codecName := "none"
	if job.Gzip {
		codecName = "gzip"
	}
	mb.SetTransfer(codecName, archive.n, wire.n)
	if job.Header.Records, err = w.records(); err != nil {
		return res, err
	}
	if err := dst.Flush(ctx); err != nil { // every file is stored before its manifest is written
		return res, err
	}
	job.Header.Bundles = dst.Packed()
	res.Completion = s.now()
	job.Header.CompletionTime = res.Completion.UTC().Format(time.RFC3339)
	size, body, err := mb.Finish(job.Header)
	if err != nil {
		return res, err
	}
	name, err := job.Layout.ManifestEntry(job.Header.Collection)
	if err != nil {
		return res, err
	}
	mh := sha256.New() // recorded in the status: readers compare the manifest they read
	ow, err := dst.File(name, size, 0o644, res.Completion)
	if err != nil {
		return res, err
	}
	if _, err := io.CopyBuffer(ow, io.TeeReader(body, mh), *w.buf); err != nil {
		return res, err
	}
	if err := ow.Close(); err != nil {
		return res, err
	}
	res.ManifestSHA256 = hex.EncodeToString(mh.Sum(nil))
	if err := w.seal(ctx, res.Completion); err != nil {
		return res, err
	}
	if err := dst.Close(); err != nil {
		return res, err
	}
	res.Totals = mb.Totals()
	return res, nil
}

func readError(err error) error {
	var se *sourceExit
	if errors.As(err, &se) {
		return se
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("source tar stream ended early (truncated archive): %w", err)
	}
	return fmt.Errorf("reading source tar stream: %w", err)
}

// destinationBuffer is the size of the writes to the destination's exec stream.
const destinationBuffer = 256 << 10

// errTruncated is a source stream that stopped at an entry boundary without tar's
// end-of-archive marker: Go's tar reader reports that as a clean EOF.
var errTruncated = failure.New(failure.StreamCut, errors.New("source tar stream ended without the end-of-archive marker (the stream was cut); nothing was published"))

// endTracker counts the zero bytes read since mark. Before each header the previous entry's
// data has been read to its end, so what the tar reader consumes next is that entry's
// padding (under 512 zero bytes) and then a header or the end-of-archive marker: at least
// 1024 zero bytes since mark means the two zero blocks of a real end were read.
type endTracker struct {
	r        io.Reader
	zeros    int64
	watching bool // between mark and the next header: file data is not scanned
}

func (e *endTracker) mark() { e.zeros, e.watching = 0, true }

func (e *endTracker) header() { e.watching = false }

func (e *endTracker) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if e.watching {
		for _, b := range p[:n] {
			if b != 0 {
				e.zeros = 0
			} else {
				e.zeros++
			}
		}
	}
	return n, err
}

func (e *endTracker) complete() bool { return e.zeros >= 1024 }

// entriesPerFile bounds the source archive's entries of any kind: this many per maxFiles.
const entriesPerFile = 4

// writer holds the state of one destination stream.
type writer struct {
	ctx  context.Context
	dst  Sink
	job  Job
	mb   *manifest.Builder
	res  *Result
	buf  *[]byte
	san  *Sanitizer
	seen map[string]bool
	// entries counts every entry of the source archive (files, directories, skipped), so
	// the manifest and the destination tree stay bounded even when few are files.
	entries int
	// written holds each file written (see writtenFiles). It is bounded by policy.maxFiles.
	written *writtenFiles
	// subjects are the pod's records written, for the custody record (only when it is
	// signed); the files' subjects are read back from the manifest's spool when it is sealed.
	subjects []custody.Subject
	// spoolDir holds the custody record's statement while it is written (SpoolDir).
	spoolDir string
}

// objectWriter marks its write errors as the bucket's (a copy loop reports them as such).
type objectWriter struct{ io.WriteCloser }

func (o objectWriter) Write(p []byte) (int, error) {
	n, err := o.WriteCloser.Write(p)
	if err != nil {
		err = &objectWriteError{err}
	}
	return n, err
}

type objectWriteError struct{ err error }

func (e *objectWriteError) Error() string { return e.err.Error() }
func (e *objectWriteError) Unwrap() error { return e.err }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// records writes the pod's own records (job.Records) and returns their manifest entries.
func (w *writer) records() ([]manifest.Record, error) {
	var out []manifest.Record
	if len(w.job.Records) > 0 {
		d, err := w.job.Layout.RecordEntry(w.job.Header.Collection, layout.RecordsName+"/logs")
		if err != nil {
			return nil, err
		}
		for _, dir := range []string{path.Dir(d), d} {
			if err := w.dst.Dir(dir, 0o755, time.Now()); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range w.job.Records {
		rec := r.Record
		if r.Open != nil {
			if err := w.record(r, &rec); err != nil {
				return nil, err
			}
		}
		out = append(out, rec)
	}
	return out, nil
}

// record writes one pod record and fills in its size and SHA-256.
func (w *writer) record(r RecordFile, rec *manifest.Record) error {
	name, err := w.job.Layout.RecordEntry(w.job.Header.Collection, rec.Name)
	if err != nil {
		return err
	}
	body, size, err := r.Open()
	if err != nil {
		return err
	}
	defer body.Close()
	ow, err := w.dst.File(name, size, 0o644, time.Now())
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(ow, h), io.LimitReader(body, size), *w.buf)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("pod record %s: read %d of %d bytes", rec.Name, n, size)
	}
	if err := ow.Close(); err != nil {
		return err
	}
	rec.Size, rec.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	if w.job.Custody != nil {
		w.subjects = append(w.subjects, custody.Subject{Name: rec.Name, SHA256: rec.SHA256})
	}
	return nil
}

// seal writes the custody record, signed, after the manifest: its subjects are every file
// (read back from the manifest's spool, not held in memory), the pod's records, the
// manifest itself and the bucket's bundles.
func (w *writer) seal(ctx context.Context, at time.Time) error {
	if w.job.Custody == nil {
		return nil
	}
	h := w.job.Header
	h.CompletionTime = at.UTC().Format(time.RFC3339)
	// Every entry is stored: the record names the versions written (where they are kept).
	if err := w.dst.Flush(ctx); err != nil {
		return err
	}
	var readErr error
	version := func(s custody.Subject) custody.Subject {
		name, err := w.job.Layout.SubjectEntry(h.Collection, s.Name)
		if err != nil {
			readErr = errors.Join(readErr, err)
			return s
		}
		s.VersionID = w.dst.Version(name)
		return s
	}
	subjects := func(yield func(custody.Subject) bool) {
		for f, err := range w.mb.Files() {
			if err != nil {
				readErr = errors.Join(readErr, err)
				return
			}
			s := custody.Subject{Name: custody.FileSubject(h.Source.Container, f.Path), SHA256: f.SHA256}
			if f.Bundle != "" {
				s.Bundle, s.Offset, s.Size = f.Bundle, f.Offset, f.Size
			} else {
				s = version(s)
			}
			if !yield(s) {
				return
			}
		}
		rest := append(slices.Clone(w.subjects), custody.Subject{Name: custody.ManifestSubject, SHA256: w.res.ManifestSHA256})
		for _, b := range w.dst.Packed() {
			rest = append(rest, custody.Subject{Name: b.Name, SHA256: b.SHA256})
		}
		for _, s := range rest {
			if !yield(version(s)) {
				return
			}
		}
	}
	rec, err := custody.SealSpooled(ctx, w.job.Custody, w.spoolDir, subjects, custody.PredicateType, custody.PredicateFor(h, w.mb.Totals(), w.job.Reader.Kind()))
	if err != nil || readErr != nil {
		return errors.Join(err, readErr)
	}
	defer rec.Close()
	name, err := w.job.Layout.CustodyEntry(h.Collection)
	if err != nil {
		return err
	}
	ow, err := w.dst.File(name, rec.Size(), 0o644, at)
	if err != nil {
		return err
	}
	if _, err := rec.WriteTo(ow); err != nil {
		return err
	}
	if err := ow.Close(); err != nil {
		return err
	}
	w.res.CustodyKeyID = w.job.Custody.Public().ID()
	return nil
}

func (w *writer) prefixDirs() error {
	w.seen = map[string]bool{}
	id := w.job.Header.Collection
	for _, c := range []string{"", w.job.Header.Source.Container} {
		d, err := w.job.Layout.EntryDir(id, c)
		if err != nil {
			return err
		}
		if err := w.dst.Dir(d, 0o755, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) skip(path, typ, reason string) error {
	w.res.SkippedByType[typ]++
	return w.mb.AddSkipped(manifest.Skipped{Path: path, Type: typ, Reason: reason})
}

func (w *writer) copyEntries(ctx context.Context, tr *tar.Reader, ender *endTracker) error {
	w.san = NewSanitizer(w.job.Paths, w.job.Policy)
	pruned := Prune(w.job.Paths)
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		ender.mark()
		hdr, err := tr.Next()
		if err == io.EOF {
			if !ender.complete() {
				return errTruncated
			}
			return nil
		}
		if err != nil {
			return readError(err)
		}
		ender.header()
		w.entries++
		if lim := w.job.Limits.MaxFiles; lim > 0 && w.entries > entriesPerFile*lim {
			return &LimitError{Reason: fmt.Sprintf("the source archive holds more than %d entries (%d × policy.maxFiles=%d: directories, links and other skipped entries count too) at %s; narrow the paths or raise the limit",
				entriesPerFile*lim, entriesPerFile, lim, hdr.Name)}
		}
		v := w.san.Check(hdr)
		if v.Rel != "" {
			if p := Covers(pruned, v.Rel); p != "" {
				w.seen[p] = true
			}
		}
		switch v.Kind {
		case KindSkip:
			if v.SkipType == SkipHardlink {
				if ok, err := w.link(hdr, v); ok || err != nil {
					if err != nil {
						return err
					}
					break
				}
			}
			if err := w.skip(v.Path, v.SkipType, v.Reason); err != nil {
				return err
			}
		case KindDir:
			if why := w.written.conflict(v.Rel, true); why != "" {
				if err := w.skip(v.Path, SkipOther, why); err != nil {
					return err
				}
				break
			}
			name, err := w.target(v)
			if err != nil {
				if err := w.skip(v.Path, SkipOther, err.Error()); err != nil {
					return err
				}
				break
			}
			mode := (hdr.Mode & 0o777) | 0o700
			if err := w.dst.Dir(name, mode, hdr.ModTime); err != nil {
				return err
			}
			w.written.addDirs(v.Rel)
		case KindFile:
			k := keyOf(v.Rel)
			if f, dup := w.written.get(k); dup && !f.dir {
				// Named twice (overlapping requested paths, or a hostile tar repeating a name
				// to overwrite what was hashed): the first copy is in the archive.
				break
			}
			if why := w.written.conflict(v.Rel, false); why != "" {
				if err := w.skip(v.Path, SkipOther, why); err != nil {
					return err
				}
				break
			}
			if err := w.copyFile(hdr, v, tr, k); err != nil {
				return err
			}
		}
		if err := w.written.err; err != nil {
			return err
		}
		// Whatever the entry was, its data is read to the end before the next header, so the
		// end-of-archive check sees only what follows it. A sparse entry is never read as
		// file data: Go's reader would serve its holes as zeros without reading input (an
		// endless loop for a 2^62-byte entry); Next skips its stored bytes by header
		// arithmetic. Every other entry's data is its stored bytes, counted by the budget.
		if !isSparse(hdr) {
			if _, err := io.CopyBuffer(io.Discard, tr, *w.buf); err != nil {
				return readError(err)
			}
		}
	}
}

func (w *writer) target(v Verdict) (string, error) {
	return w.job.Layout.Entry(w.job.Header.Collection, w.job.Header.Source.Container, v.Path)
}

// link writes a hard link whose target is a file already written in this collection, as a
// hard link inside the collection, with the target's hash in the manifest. ok is false when
// the target is not in the collection (the entry is then skipped).
func (w *writer) link(hdr *tar.Header, v Verdict) (bool, error) {
	targetRel, ok := cleanName(hdr.Linkname)
	if !ok {
		return false, nil
	}
	target := keyOf(targetRel)
	f, at, ok := w.written.entry(target, v.Path)
	if !ok || v.Rel == targetRel || w.written.conflict(v.Rel, false) != "" {
		// Not a file of this collection, or a name already taken (a file then a link of the
		// same name would store the link's bytes under the file's hash).
		return false, nil
	}
	if err := w.san.Allowed(v); err != nil {
		return false, nil
	}
	name, err := w.target(v)
	if err != nil {
		return false, nil
	}
	linkname, err := w.target(Verdict{Path: "/" + targetRel})
	if err != nil {
		return false, nil
	}
	if err := w.countFile(v, f.Size); err != nil {
		return true, err
	}
	if err := w.dst.Link(name, linkname, at, hdr.ModTime); err != nil {
		return true, err
	}
	w.written.addDirs(path.Dir(v.Rel))
	wf, _ := w.written.get(target)
	w.written.put(keyOf(v.Rel), wf)
	if p := w.job.Progress; p != nil {
		p.Files.Add(1)
		p.Bytes.Add(f.Size)
	}
	return true, w.mb.AddFile(f)
}

func (w *writer) countFile(v Verdict, size int64) error {
	t := w.mb.Totals()
	if lim := w.job.Limits.MaxFiles; lim > 0 && t.Files+1 > lim {
		return &LimitError{Reason: fmt.Sprintf("collection exceeds policy.maxFiles=%d at %s; narrow the paths or raise the limit", lim, v.Path)}
	}
	if q := w.job.Quota; q != nil {
		ok, reason, err := q.Reserve(w.ctx, t.Bytes+size)
		if err != nil {
			return fmt.Errorf("reserving namespace %s's quota in the analysis pod: %w", w.job.Header.Source.Namespace, err)
		}
		if !ok {
			return &LimitError{Token: failure.QuotaExceeded, Reason: fmt.Sprintf("collection would pass namespace %s's destination.quota.bytes at %s (%s); remove some collections or raise the quota",
				w.job.Header.Source.Namespace, v.Path, reason)}
		}
	}
	if lim := w.job.Limits.MaxBytes; lim > 0 && t.Bytes+size > lim {
		return &LimitError{Reason: fmt.Sprintf("collection exceeds policy.maxBytes=%d bytes at %s (%d bytes so far, this file %d); narrow the paths or raise the limit", lim, v.Path, t.Bytes, size)}
	}
	return nil
}

// copyFile writes a regular file; k is the key of its name in w.written.
func (w *writer) copyFile(hdr *tar.Header, v Verdict, tr *tar.Reader, k nameKey) error {
	if err := w.countFile(v, hdr.Size); err != nil {
		return err
	}
	name, err := w.target(v)
	if err != nil {
		return w.skip(v.Path, SkipOther, err.Error())
	}
	h := sha256.New()
	ow, err := w.dst.Member(name, hdr.Size, hdr.Mode&0o777, hdr.ModTime)
	if err != nil {
		return err
	}
	dst := io.MultiWriter(ow, h)
	if p := w.job.Progress; p != nil {
		if len(w.job.Paths) == 1 && w.job.Paths[0] == v.Path {
			p.Expected.Store(hdr.Size) // the one requested file: its size is the collection's
		}
		dst = io.MultiWriter(ow, h, progressCounter{p})
		defer p.Files.Add(1)
	}
	n, err := io.CopyBuffer(dst, tr, *w.buf)
	if we := (*objectWriteError)(nil); errors.As(err, &we) {
		return we.err // the bucket failed, not the source
	}
	if err != nil {
		return readError(err)
	}
	if n != hdr.Size {
		return fmt.Errorf("source tar stream: %s: read %d of %d bytes", v.Path, n, hdr.Size)
	}
	if err := ow.Close(); err != nil {
		return err
	}
	sum, at := h.Sum(nil), ow.Placement()
	w.written.addFile(v.Rel, k, n, hdr.Mode, hdr.ModTime, sum, at)
	return w.mb.AddFile(placed(manifest.File{
		Path:    v.Path,
		Size:    n,
		Mode:    fmt.Sprintf("%04o", hdr.Mode&0o7777),
		ModTime: hdr.ModTime.UTC().Format(time.RFC3339),
		SHA256:  hex.EncodeToString(sum),
	}, at))
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// countingReader counts what is read through it and, when limit > 0, fails with a
// LimitError once more than limit bytes have arrived (the source-bytes budget).
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
	what  string // "received" or "decompressed", for the error
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.limit > 0 && int64(len(p)) > c.limit-c.n+1 {
		p = p[:max(c.limit-c.n+1, 1)]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.limit > 0 && c.n > c.limit {
		return n, &LimitError{Token: ReasonSourceBudget, Reason: fmt.Sprintf(
			"the source sent more than %d bytes (%s): policy.maxBytes plus %s of headers; entries that are not collected count too. Narrow the paths or raise policy.maxBytes", c.limit, c.what, overheadText)}
	}
	return n, err
}

// isSparse reports a sparse entry of any flavour: old GNU (typeflag S) or GNU's PAX
// formats 0.0, 0.1 and 1.0 (GNU.sparse.* records).
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
