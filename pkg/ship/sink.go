package ship

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// Sink receives one collection's entries, one after another: directories, files and links
// as the source archive gives them, then the pod's records, the manifest and the custody
// record. Names are entries of the collection's layout (layout.Layout), already canonical.
// The analysis pod (a tar stream that its extraction publishes) and the bucket (an object
// per file) are sinks; a collection to both writes to a teeSink of the two. process writes
// to a Sink and never asks which it is.
type Sink interface {
	// Dir makes directory name.
	Dir(name string, mode int64, mtime time.Time) error
	// File starts file name of size bytes; its writer's Close completes it.
	File(name string, size, mode int64, mtime time.Time) (io.WriteCloser, error)
	// Member starts a collected file like File; a sink that packs small files (the bucket)
	// may put it in a bundle, which its writer's Placement says once it is closed.
	Member(name string, size, mode int64, mtime time.Time) (MemberWriter, error)
	// Link makes name another name of target, a file of this collection (a hard link)
	// stored at at (the target's Placement).
	Link(name, target string, at Placement, mtime time.Time) error
	// Encode fixes how the stream is encoded (gzip or not) once the source's first bytes
	// showed what compression buys; a sink that is not one stream ignores it.
	Encode(gzip bool) error
	// Flush returns once everything written so far is stored (the bucket's objects in
	// flight): the manifest and the custody record come only after the files they list.
	Flush(ctx context.Context) error
	// Version is the version id entry name was stored as ("" when the sink keeps none).
	Version(name string) string
	// Packed are the bundles written (after Flush): none for a sink that packs nothing.
	Packed() []manifest.Bundle
	// Close ends the collection's entries.
	Close() error
}

// Placement is where a collected file is stored: alone (Bundle 0), or in the collection's
// bundle number Bundle (layout.BundleName), its bytes from Offset.
type Placement struct {
	Bundle int
	Offset int64
}

// MemberWriter writes a collected file (Sink.Member).
type MemberWriter interface {
	io.WriteCloser
	// Placement is where the file went; valid once Close returned nil.
	Placement() Placement
}

// alone is a MemberWriter of a file stored on its own.
type alone struct{ io.WriteCloser }

func (alone) Placement() Placement { return Placement{} }

// Destination is one place a collection goes: a Sink, and the leg that carries it there.
type Destination interface {
	Sink
	// Finish ends the leg once process returned err: with nil, it returns once the
	// destination confirmed the collection (the analysis pod published it); with an error,
	// what was written is abandoned. It returns the destination's own failure, if any.
	Finish(err error) error
	// Discard removes what a failed collection left (its staging directory, its open
	// uploads).
	Discard(ctx context.Context) error
}

// destinationFor is the one place that knows where a collection goes: the analysis pod,
// the bucket, or both (a composition of the two; SPEC §5 destination.mode).
func (s *Shipper) destinationFor(ctx context.Context, job Job, final string, cancel context.CancelCauseFunc, wd *watchdog) Destination {
	var ds []Destination
	if !job.NoPod {
		ds = append(ds, s.podDestination(ctx, job, final, cancel, wd))
	}
	if job.Bucket != nil {
		ds = append(ds, newBucketSink(ctx, job.Bucket, job.Layout, job.Header.Collection, s.bundles()))
	}
	if len(ds) == 1 {
		return ds[0]
	}
	return teeSink(ds)
}

// tarStream writes entries as one tar stream, padded to a whole record, in the codec
// Encode chose (what comes before the choice is held: see destinationCodec).
type tarStream struct {
	tw    *tar.Writer
	out   *countingWriter
	bw    *bufio.Writer
	codec *destinationCodec
}

func newTarStream(dst io.Writer, chosen func(gzip bool)) *tarStream {
	// Headers and small files are coalesced into large writes: each write to the exec stream
	// is a frame through the API server, kubelet and runtime (issue 16: 10,000 small files).
	bw := bufio.NewWriterSize(dst, destinationBuffer)
	codec := &destinationCodec{dst: bw, chosen: chosen}
	out := &countingWriter{w: codec}
	return &tarStream{tw: tar.NewWriter(out), out: out, bw: bw, codec: codec}
}

func (t *tarStream) Dir(name string, mode int64, mtime time.Time) error {
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
}

func (t *tarStream) File(name string, size, mode int64, mtime time.Time) (io.WriteCloser, error) {
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: mode, ModTime: mtime}); err != nil {
		return nil, err
	}
	return nopCloser{t.tw}, nil // the next header checks that size bytes were written
}

func (t *tarStream) Member(name string, size, mode int64, mtime time.Time) (MemberWriter, error) {
	w, err := t.File(name, size, mode, mtime)
	return alone{w}, err
}

func (t *tarStream) Link(name, target string, _ Placement, mtime time.Time) error {
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: mtime})
}

func (t *tarStream) Encode(gzip bool) error { return t.codec.choose(gzip) }

func (t *tarStream) Flush(context.Context) error { return nil }

func (t *tarStream) Version(string) string { return "" }

func (t *tarStream) Packed() []manifest.Bundle { return nil }

func (t *tarStream) Close() error {
	if err := t.tw.Close(); err != nil {
		return err
	}
	if pad := (RecordSize - t.out.n%RecordSize) % RecordSize; pad > 0 {
		if _, err := t.out.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	if err := t.codec.close(); err != nil {
		return err
	}
	return t.bw.Flush()
}

// podDestination is the analysis pod's leg: the tar stream goes to analysis.Publish, which
// extracts it into the staging directory and publishes it under its final name; a
// heartbeat keeps the staging directory fresh meanwhile (the stale sweep spares it).
type podDestination struct {
	*tarStream
	pipe      *io.PipeWriter
	stopClose func() bool
	done      chan struct{} // closed when the exec has ended; err is then set
	err       error
	stopBeats context.CancelFunc
	beats     sync.WaitGroup
	s         *Shipper
	job       Job
}

func (s *Shipper) podDestination(ctx context.Context, job Job, final string, cancel context.CancelCauseFunc, wd *watchdog) *podDestination {
	r, w := io.Pipe()
	codec := make(chan bool, 1)
	d := &podDestination{tarStream: newTarStream(wd.writer(w), func(gz bool) { codec <- gz }), pipe: w, done: make(chan struct{}), s: s, job: job}
	// Cancelled (the deadline, the watchdog, the caller): every write to the analysis pod
	// fails at once with the cause, whether or not its exec honours its context.
	d.stopClose = context.AfterFunc(ctx, func() { w.CloseWithError(context.Cause(ctx)) })
	go func() {
		defer close(d.done)
		var gz bool
		select {
		case gz = <-codec:
		case <-ctx.Done(): // process failed before choosing
			r.CloseWithError(context.Cause(ctx))
			return
		}
		// A failure in the analysis pod is reported on stdout the moment it happens (see
		// analysis.Publish): its exit status arrives only once stdin is closed.
		failedIn := func(reason string) error {
			return &DestinationError{Err: &PermanentError{Err: fmt.Errorf("writing to analysis pod %s: %s", job.Destination, reason)}}
		}
		out := &lineWatcher{max: 4096, onLine: func(line string) {
			if reason, ok := strings.CutPrefix(line, analysis.FailedPrefix); ok {
				cancel(failedIn(reason))
			}
		}}
		pub := analysis.Publish{StagingRoot: job.Layout.StagingRoot(), ID: job.Header.Collection, Final: final, Gzip: gz, Signed: job.Custody != nil}
		err := analysis.Pod{Exec: s.Exec, Target: job.Destination}.Publish(ctx, pub, r, out)
		if err == nil && !strings.HasSuffix(out.String(), analysis.CompleteMarker(job.Header.Collection)) {
			err = fmt.Errorf("the analysis pod's extraction ended without confirming the collection (output %q)", out.String())
		}
		switch reason, said := failedLine(out.String()); {
		case err != nil && said:
			// The pod said why it failed (a full disk, a refused name): that reason, which no
			// retry changes, whichever of the line and the exec's exit was seen first.
			err = failedIn(reason)
			cancel(err)
		case err != nil:
			err = &DestinationError{Err: fmt.Errorf("writing to analysis pod %s: %w", job.Destination, err)}
			cancel(err)
		}
		d.err = err
		r.CloseWithError(errOr(err, errDestinationStopped))
	}()
	beatCtx, stop := context.WithCancel(ctx)
	d.stopBeats = stop
	if s.Heartbeat > 0 {
		if staging, err := job.Layout.Staging(job.Header.Collection); err == nil {
			d.beats.Go(func() { s.heartbeat(beatCtx, job.Destination, staging) })
		}
	}
	return d
}

func (d *podDestination) Finish(err error) error {
	defer func() { d.stopBeats(); d.beats.Wait() }()
	if err != nil {
		d.pipe.CloseWithError(err)
	} else {
		d.pipe.Close()
	}
	<-d.done
	d.stopClose()
	return d.err
}

func (d *podDestination) Discard(ctx context.Context) error {
	staging, err := d.job.Layout.Staging(d.job.Header.Collection)
	if err != nil {
		return err
	}
	if err := d.s.cleanup(ctx, d.job.Destination, staging); err != nil {
		return fmt.Errorf("removing the staging directory %s failed: %w; the agent removes it after destination.staleAfter", staging, err)
	}
	return nil
}

// failedLine finds the analysis pod's own failure line (analysis.FailedPrefix) in out.
func failedLine(out string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		if reason, ok := strings.CutPrefix(line, analysis.FailedPrefix); ok {
			return reason, true
		}
	}
	return "", false
}

// bucketSink writes each file as an object of the collection's prefix (objstore.Upload),
// except small collected files, which it packs into bundles (see bundler).
type bucketSink struct {
	ctx context.Context
	b   Bucket
	l   layout.Layout
	*bundler
}

func newBucketSink(ctx context.Context, b Bucket, l layout.Layout, id string, opts BundleOptions) *bucketSink {
	return &bucketSink{ctx: ctx, b: b, l: l, bundler: newBundler(ctx, b, l, id, opts)}
}

func (b *bucketSink) Dir(string, int64, time.Time) error { return nil } // prefixes need no objects

func (b *bucketSink) File(name string, size, _ int64, _ time.Time) (io.WriteCloser, error) {
	if err := b.failed(); err != nil {
		return nil, err
	}
	ow, err := b.b.Create(b.ctx, b.l.ObjectKey(name), size)
	if err != nil {
		return nil, err
	}
	return objectWriter{ow}, nil
}

func (b *bucketSink) Member(name string, size, mode int64, mtime time.Time) (MemberWriter, error) {
	if b.takes(size) {
		return b.member(name, size, mode, mtime)
	}
	w, err := b.File(name, size, mode, mtime)
	return alone{w}, err
}

// Link copies the target's object; a bundled target's bytes are already in its bundle,
// where the manifest and the record place the link too.
func (b *bucketSink) Link(name, target string, at Placement, _ time.Time) error {
	if at.Bundle != 0 {
		return nil
	}
	return b.b.Copy(b.ctx, b.l.ObjectKey(name), b.l.ObjectKey(target))
}

func (b *bucketSink) Encode(bool) error { return nil }

func (b *bucketSink) Flush(ctx context.Context) error {
	if err := b.flush(ctx); err != nil {
		return err
	}
	return b.b.Wait(ctx)
}

func (b *bucketSink) Version(name string) string { return b.b.Version(b.l.ObjectKey(name)) }

func (b *bucketSink) Close() error { return b.Flush(b.ctx) }

func (b *bucketSink) Finish(error) error { return nil } // Close waited for every object

func (b *bucketSink) Discard(ctx context.Context) error {
	b.stop()
	b.b.Abort(ctx)
	return nil
}

// teeSink writes every entry to each of its destinations (destination.mode both).
type teeSink []Destination

func (t teeSink) Dir(name string, mode int64, mtime time.Time) error {
	return t.each(func(d Destination) error { return d.Dir(name, mode, mtime) })
}

func (t teeSink) File(name string, size, mode int64, mtime time.Time) (io.WriteCloser, error) {
	ws := make(multiWriteCloser[io.WriteCloser], 0, len(t))
	for _, d := range t {
		w, err := d.File(name, size, mode, mtime)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// Member writes the file to each destination; its placement is the one that packed it.
func (t teeSink) Member(name string, size, mode int64, mtime time.Time) (MemberWriter, error) {
	ws := make(multiWriteCloser[MemberWriter], 0, len(t))
	for _, d := range t {
		w, err := d.Member(name, size, mode, mtime)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return multiMemberWriter{ws}, nil
}

func (t teeSink) Link(name, target string, at Placement, mtime time.Time) error {
	return t.each(func(d Destination) error { return d.Link(name, target, at, mtime) })
}

// Packed are the bundles of every destination (one of them packs).
func (t teeSink) Packed() []manifest.Bundle {
	var all []manifest.Bundle
	for _, d := range t {
		all = append(all, d.Packed()...)
	}
	return all
}

func (t teeSink) Encode(gzip bool) error {
	return t.each(func(d Destination) error { return d.Encode(gzip) })
}

func (t teeSink) Flush(ctx context.Context) error {
	return t.each(func(d Destination) error { return d.Flush(ctx) })
}

// Version is the first version any destination keeps for name.
func (t teeSink) Version(name string) string {
	for _, d := range t {
		if v := d.Version(name); v != "" {
			return v
		}
	}
	return ""
}

func (t teeSink) Close() error { return t.each(Destination.Close) }

// Finish ends every leg; the first destination's failure is the collection's.
func (t teeSink) Finish(err error) error {
	var first error
	for _, d := range t {
		if ferr := d.Finish(err); ferr != nil && first == nil {
			first = ferr
		}
	}
	return first
}

func (t teeSink) Discard(ctx context.Context) error {
	var errs []error
	for _, d := range t {
		errs = append(errs, d.Discard(ctx))
	}
	return errors.Join(errs...)
}

func (t teeSink) each(f func(Destination) error) error {
	for _, d := range t {
		if err := f(d); err != nil {
			return err
		}
	}
	return nil
}

// multiWriteCloser writes to each writer in turn and closes them all.
type multiWriteCloser[W io.WriteCloser] []W

func (m multiWriteCloser[W]) Write(p []byte) (int, error) {
	for _, w := range m {
		if n, err := w.Write(p); err != nil {
			return n, err
		} else if n != len(p) {
			return n, io.ErrShortWrite
		}
	}
	return len(p), nil
}

// multiMemberWriter is a multiWriteCloser of members.
type multiMemberWriter struct{ multiWriteCloser[MemberWriter] }

// Placement is the first placement in a bundle.
func (m multiMemberWriter) Placement() Placement {
	for _, w := range m.multiWriteCloser {
		if p := w.Placement(); p.Bundle != 0 {
			return p
		}
	}
	return Placement{}
}

func (m multiWriteCloser[W]) Close() error {
	var errs []error
	for _, w := range m {
		errs = append(errs, w.Close())
	}
	return errors.Join(errs...)
}
