package evidence

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

	"github.com/podcopy/podcopy/pkg/spool"
	"github.com/podcopy/podcopy/pkg/verify"
)

// spoolMax is Reader.SpoolMaxBytes or spool.DefaultMax.
func (r *Reader) spoolMax() int64 {
	if r.SpoolMaxBytes > 0 {
		return r.SpoolMaxBytes
	}
	return spool.DefaultMax
}

// Stream reads the collection as tar from the analysis pod into s, hashing each file as it
// passes here, and has the verifier compare every hash with the signed digests (checked
// first, with the manifest). Nothing is held whole: each file goes from the exec's stream
// to s. A verdict that fails is returned with its *verify.Error.
func (r *Reader) Stream(ctx context.Context, ref Ref, s verify.Sink) (Result, error) {
	c, err := r.open(ctx, ref)
	if err != nil {
		return Result{}, err
	}
	if c.Failed() {
		v := c.Finish()
		return v, v.Err()
	}
	// The analysis pod's stream goes through a spool, read at its own pace whatever the
	// sink's: an exec stream read more slowly than it is written loses its tail on the way
	// (issue 35: hack/cutprobe), and a sink that takes nothing for spool.DefaultFullWait ends it
	// with that reason instead.
	sctx, full := context.WithCancelCause(ctx)
	defer full(nil)
	sr, sw := spool.New(r.SpoolDir, r.spoolMax(), spool.Meter{}, spool.DefaultFullWait, nil, full)
	defer sr.CloseWithError(nil) // its file goes with it
	done := make(chan error, 1)
	wctx, stdout, stop := watched(sctx, r.Stall, sw, "reading from "+ref.Analysis.String())
	defer stop()
	go func() {
		err := r.pod(ref.Analysis).Archive(wctx, ref.Dir, stdout)
		if cause := context.Cause(wctx); err != nil && cause != nil && ctx.Err() == nil {
			err = cause // the stall or the full spool, not the cancelled stream
		}
		sw.CloseWithError(err) // nil: the reader sees io.EOF
		done <- err
	}()
	werr := c.Tar(tar.NewReader(bufio.NewReaderSize(sr, 256<<10)), s)
	if werr != nil {
		sr.CloseWithError(werr)
		full(werr) // and the exec ends now, not at its next write
	} else {
		_, _ = io.Copy(io.Discard, sr)
	}
	if err := <-done; err != nil && werr == nil {
		werr = fmt.Errorf("reading the collection from %s: %w", ref.Analysis, err)
	}
	v := c.Finish()
	v.Dir = fmt.Sprintf("%s:%s", ref.Analysis, ref.Dir)
	if werr != nil {
		return v, werr
	}
	return v, v.Err()
}

// DirSink writes below a directory; every name stays inside it (os.Root).
type DirSink struct {
	root *os.Root
	buf  []byte
}

// NewDirSink writes below root.
func NewDirSink(root *os.Root) *DirSink { return &DirSink{root: root, buf: make([]byte, 256<<10)} }

// Mkdir implements verify.Sink.
func (r *DirSink) Mkdir(name string) error { return r.root.MkdirAll(name, 0o755) }

// Create implements verify.Sink.
func (r *DirSink) Create(e verify.Entry, src io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := writeFileN(r.root, e.Name, src, r.buf, h)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// Link implements verify.Sink.
func (r *DirSink) Link(name, target string) (int64, string, error) {
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

// VerifyInPlace streams the collection's bytes from the analysis pod to this process, as
// fetch does but without writing, and has the verifier hash and check them: names the
// directory holds that nothing signed are reported too.
func (r *Reader) VerifyInPlace(ctx context.Context, ref Ref) (Result, error) {
	return r.Stream(ctx, ref, verify.NewDiscard())
}
