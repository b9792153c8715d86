package ship

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
)

// RecordSize is tar's record size; the destination stream is padded to a whole record so
// GNU tar finishes without waiting for stdin EOF (and stdin is closed as well).
const RecordSize = 10240

// Limits bound one collection.
type Limits struct {
	MaxBytes int64
	MaxFiles int
}

// Job is one collection to run.
type Job struct {
	// Header is the manifest header; CompletionTime is filled in by Run.
	Header      manifest.Header
	Paths       []string
	Source      exec.Target
	Destination exec.Target
	// Dir is the destination base directory (SPEC §3 <dir>).
	Dir    string
	Policy policy.Policy
	Limits Limits
	Gzip   bool
}

// CollectionDir is <dir>/<namespace>/<pod>/<collection id>.
func (j Job) CollectionDir() string {
	return path.Join(j.Dir, j.relDir())
}

func (j Job) relDir() string {
	return path.Join(j.Source.Namespace, j.Source.Pod, j.Header.Collection)
}

// Result is what a finished collection shipped.
type Result struct {
	Totals manifest.Totals
	// SkippedByType counts skipped entries per SPEC skip type.
	SkippedByType map[string]int
	// Warning is set when tar reported a warning (GNU tar exit 1) on a complete stream.
	Warning string
	// Completion is when the manifest was written.
	Completion time.Time
}

// Shipper runs collections through an Executor.
type Shipper struct {
	Exec exec.Executor
	// SourceRoot is "/" in production; tests point it at a directory.
	SourceRoot string
	// SpoolDir holds manifest spool files ("" for os.TempDir()).
	SpoolDir string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// LimitError is a collection that exceeded policy limits.
type LimitError struct{ Reason string }

func (e *LimitError) Error() string { return e.Reason }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Run streams one collection. On failure nothing is left at the destination: the partial
// collection directory is removed (best effort) and the error says what went wrong.
func (s *Shipper) Run(ctx context.Context, job Job) (Result, error) {
	res, err := s.run(ctx, job)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if cerr := s.Exec.Exec(cctx, exec.Request{Target: job.Destination, Command: CleanupCommand(job.CollectionDir())}); cerr != nil {
			err = fmt.Errorf("%w (and removing the partial %s failed: %v)", err, job.CollectionDir(), cerr)
		}
	}
	return res, err
}

func (s *Shipper) run(ctx context.Context, job Job) (Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	srcR, srcW := io.Pipe()
	dstR, dstW := io.Pipe()
	var wg sync.WaitGroup
	var dstErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := s.Exec.Exec(ctx, exec.Request{Target: job.Source, Command: SourceCommand(s.root(), job.Paths, job.Gzip), Stdout: srcW})
		if ctx.Err() != nil {
			// Stopped by the other side or the caller: that cause is the error, not this exit.
			srcW.CloseWithError(context.Cause(ctx))
			return
		}
		srcW.CloseWithError(sourceError(err))
	}()
	go func() {
		defer wg.Done()
		dstErr = s.Exec.Exec(ctx, exec.Request{Target: job.Destination, Command: DestinationCommand(job.Dir), Stdin: dstR})
		if dstErr != nil {
			dstErr = fmt.Errorf("writing to analysis pod %s: %w", job.Destination, dstErr)
			cancel(dstErr)
		}
		dstR.CloseWithError(errOr(dstErr, errors.New("analysis pod stopped reading")))
	}()
	res, procErr := s.process(ctx, job, srcR, dstW)
	if procErr != nil {
		cancel(procErr)
		srcR.CloseWithError(procErr)
		dstW.CloseWithError(procErr)
	} else {
		dstW.Close()
	}
	wg.Wait()
	switch {
	case dstErr != nil && (procErr == nil || errors.Is(procErr, dstErr) || errors.Is(procErr, io.ErrClosedPipe)):
		return res, dstErr
	case procErr != nil:
		return res, procErr
	}
	return res, nil
}

func (s *Shipper) root() string {
	if s.SourceRoot == "" {
		return "/"
	}
	return s.SourceRoot
}

func (s *Shipper) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// sourceError carries the source's exit into the pipe: nil means a clean EOF.
func sourceError(err error) error {
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &sourceExit{exit}
	}
	return fmt.Errorf("reading from source container: %w", err)
}

// sourceExit is a non-zero exit of the source tar, delivered after all its output.
type sourceExit struct{ *exec.ExitError }

func (e *sourceExit) Error() string { return "source tar: " + e.ExitError.Error() }

// process reads the source tar from src and writes the destination tar to dst.
func (s *Shipper) process(ctx context.Context, job Job, src io.Reader, dst io.Writer) (Result, error) {
	res := Result{SkippedByType: map[string]int{}}
	mb, err := manifest.NewBuilder(s.SpoolDir)
	if err != nil {
		return res, err
	}
	defer mb.Close()
	in := src
	var gz *gzip.Reader
	if job.Gzip {
		if gz, err = gzip.NewReader(src); err != nil {
			return res, readError(err)
		}
		in = gz
	}
	out := &countingWriter{w: dst}
	tw := tar.NewWriter(out)
	w := &writer{tw: tw, job: job, mb: mb, res: &res, buf: bufPool.Get().(*[]byte)}
	defer bufPool.Put(w.buf)
	if err := w.prefixDirs(); err != nil {
		return res, err
	}
	if err := w.copyEntries(ctx, tar.NewReader(in)); err != nil {
		return res, err
	}
	// The archive has ended; what follows (padding, gzip trailer) is drained so the source
	// can exit, and its exit status arrives through the pipe.
	if gz != nil {
		if _, err := io.Copy(io.Discard, gz); err != nil {
			return res, readError(err)
		}
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		var se *sourceExit
		if !errors.As(err, &se) || se.Code != 1 {
			return res, readError(err)
		}
		res.Warning = fmt.Sprintf("tar in the source exited 1 after a complete archive: %s", se.Stderr)
	}
	for _, p := range Prune(job.Paths) {
		if !w.seen[p] && !request.IsGlob(p) {
			return res, fmt.Errorf("%s: no such file or directory in container %s", p, job.Source.Container)
		}
	}
	res.Completion = s.now()
	job.Header.CompletionTime = res.Completion.UTC().Format(time.RFC3339)
	size, body, err := mb.Finish(job.Header)
	if err != nil {
		return res, err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(job.relDir(), "manifest.json"), Size: size, Mode: 0o644, ModTime: res.Completion}
	if err := tw.WriteHeader(hdr); err != nil {
		return res, err
	}
	if _, err := io.CopyBuffer(tw, body, *w.buf); err != nil {
		return res, err
	}
	if err := tw.Close(); err != nil {
		return res, err
	}
	if pad := (RecordSize - out.n%RecordSize) % RecordSize; pad > 0 {
		if _, err := out.Write(make([]byte, pad)); err != nil {
			return res, err
		}
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

// writer holds the state of one destination stream.
type writer struct {
	tw   *tar.Writer
	job  Job
	mb   *manifest.Builder
	res  *Result
	buf  *[]byte
	seen map[string]bool
	// written holds the files already written, only when the request can name one file twice
	// (several paths, one a glob); it is bounded by policy.maxFiles.
	written map[string]struct{}
}

func (w *writer) prefixDirs() error {
	w.seen = map[string]bool{}
	if pruned := Prune(w.job.Paths); len(pruned) > 1 && slices.ContainsFunc(pruned, request.IsGlob) {
		w.written = map[string]struct{}{}
	}
	rel := w.job.relDir()
	dirs := []string{w.job.Source.Namespace, path.Join(w.job.Source.Namespace, w.job.Source.Pod), rel, path.Join(rel, w.job.Source.Container)}
	for _, d := range dirs {
		if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Now()}); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) copyEntries(ctx context.Context, tr *tar.Reader) error {
	san := NewSanitizer(w.job.Paths, w.job.Policy)
	pruned := Prune(w.job.Paths)
	for {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readError(err)
		}
		v := san.Check(hdr)
		if v.Rel != "" {
			if p := Covers(pruned, v.Rel); p != "" {
				w.seen[p] = true
			}
		}
		switch v.Kind {
		case KindSkip:
			w.res.SkippedByType[v.SkipType]++
			if err := w.mb.AddSkipped(manifest.Skipped{Path: v.Path, Type: v.SkipType, Reason: v.Reason}); err != nil {
				return err
			}
		case KindDir:
			mode := (hdr.Mode & 0o777) | 0o700
			if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: w.target(v.Rel) + "/", Mode: mode, ModTime: hdr.ModTime}); err != nil {
				return err
			}
		case KindFile:
			if w.written != nil {
				if _, dup := w.written[v.Rel]; dup {
					continue // named twice by overlapping paths: the first copy is in the archive
				}
				w.written[v.Rel] = struct{}{}
			}
			if err := w.copyFile(hdr, v, tr); err != nil {
				return err
			}
		}
	}
}

func (w *writer) target(rel string) string {
	return path.Join(w.job.relDir(), w.job.Source.Container, rel)
}

func (w *writer) copyFile(hdr *tar.Header, v Verdict, tr *tar.Reader) error {
	t := w.mb.Totals()
	if lim := w.job.Limits.MaxFiles; lim > 0 && t.Files+1 > lim {
		return &LimitError{Reason: fmt.Sprintf("collection exceeds policy.maxFiles=%d at %s; narrow the paths or raise the limit", lim, v.Path)}
	}
	if lim := w.job.Limits.MaxBytes; lim > 0 && t.Bytes+hdr.Size > lim {
		return &LimitError{Reason: fmt.Sprintf("collection exceeds policy.maxBytes=%d bytes at %s (%d bytes so far, this file %d); narrow the paths or raise the limit", lim, v.Path, t.Bytes, hdr.Size)}
	}
	out := &tar.Header{Typeflag: tar.TypeReg, Name: w.target(v.Rel), Size: hdr.Size, Mode: hdr.Mode & 0o777, ModTime: hdr.ModTime}
	if err := w.tw.WriteHeader(out); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w.tw, h), tr, *w.buf)
	if err != nil {
		return readError(err)
	}
	if n != hdr.Size {
		return fmt.Errorf("source tar stream: %s: read %d of %d bytes", v.Path, n, hdr.Size)
	}
	return w.mb.AddFile(manifest.File{
		Path:    v.Path,
		Size:    n,
		Mode:    fmt.Sprintf("%04o", hdr.Mode&0o7777),
		ModTime: hdr.ModTime.UTC().Format(time.RFC3339),
		SHA256:  hex.EncodeToString(h.Sum(nil)),
	})
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
