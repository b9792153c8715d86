package ship

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// BundleOptions say which collected files a bucket packs into bundles and how large a
// bundle grows (contract §5, destination.s3.bundles). A bundle is a tar of its members
// under their names in the collection, so `tar -tvf` lists it; the manifest and the
// custody record place each member by bundle, offset and size.
type BundleOptions struct {
	// MemberMaxBytes: collected files of at most this many bytes are packed (0: none are,
	// every file is an object of its own).
	MemberMaxBytes int64
	// MaxBytes: a bundle is stored once the next member would take it past this size.
	MaxBytes int64
	// MaxMembers: a bundle is stored once it holds this many members.
	MaxMembers int
	// InFlight is how many bundles upload while the next one fills. Memory per collection
	// is at most (InFlight+1) × (MaxBytes + MemberMaxBytes).
	InFlight int
}

// DefaultBundles packs files of up to 512 KiB into bundles of 4 MiB or 4,096 members, two
// uploading while a third fills (at most 13.5 MiB per collection; the agent's default
// memory limit is 128 MiB). Restic packs 16 MiB and kopia 20 MiB for the same reason: one
// signed PUT per small file costs far more than its bytes.
var DefaultBundles = BundleOptions{MemberMaxBytes: 512 << 10, MaxBytes: 4 << 20, MaxMembers: 4096, InFlight: 2}

// memberOverhead is what a member adds to a bundle besides its bytes, at most: its header, a
// PAX header for a long name, and padding to a block.
const memberOverhead = 3 * 512

// bundler packs one collection's small files into bundles and uploads each full bundle
// while the next one fills. It owns the goroutines of its uploads: flush and stop join them.
type bundler struct {
	ctx   context.Context
	b     Bucket
	l     layout.Layout
	id    string
	opts  BundleOptions
	cur   *bundle
	n     int
	free  chan *bytes.Buffer
	slots chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
	done  []manifest.Bundle
}

// bundle is the bundle being filled.
type bundle struct {
	n       int
	buf     *bytes.Buffer
	tw      *tar.Writer
	members int
}

func newBundler(ctx context.Context, b Bucket, l layout.Layout, id string, opts BundleOptions) *bundler {
	opts.InFlight = max(opts.InFlight, 1)
	return &bundler{ctx: ctx, b: b, l: l, id: id, opts: opts,
		free: make(chan *bytes.Buffer, opts.InFlight+1), slots: make(chan struct{}, opts.InFlight)}
}

// takes is true when a file of size bytes is packed.
func (b *bundler) takes(size int64) bool {
	return b.opts.MemberMaxBytes > 0 && size >= 0 && size <= b.opts.MemberMaxBytes
}

func (b *bundler) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *bundler) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
}

// member starts file name (an entry of the layout) in the current bundle, storing the
// current one first when the file would not fit.
func (b *bundler) member(name string, size, mode int64, mtime time.Time) (MemberWriter, error) {
	if err := b.failed(); err != nil {
		return nil, err
	}
	rel, ok := strings.CutPrefix(name, b.id+"/")
	if !ok {
		return nil, fmt.Errorf("bundle member %q is not an entry of collection %s", name, b.id)
	}
	if c := b.cur; c != nil && (int64(c.buf.Len())+size+memberOverhead > b.opts.MaxBytes || c.members >= b.opts.MaxMembers) {
		if err := b.ship(); err != nil {
			return nil, err
		}
	}
	if b.cur == nil {
		var buf *bytes.Buffer
		select {
		case buf = <-b.free:
		default:
			buf = bytes.NewBuffer(make([]byte, 0, b.opts.MaxBytes+b.opts.MemberMaxBytes))
		}
		b.n++
		b.cur = &bundle{n: b.n, buf: buf, tw: tar.NewWriter(buf)}
	}
	c := b.cur
	if err := c.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Size: size, Mode: mode, ModTime: mtime}); err != nil {
		return nil, fmt.Errorf("bundle %s: %s: %w", layout.BundleName(c.n), rel, err)
	}
	c.members++
	// tar writes each header whole before the file's bytes: they start here.
	return &memberWriter{c: c, at: Placement{Bundle: c.n, Offset: int64(c.buf.Len())}}, nil
}

// ship ends the current bundle and uploads it, once fewer than InFlight are uploading.
func (b *bundler) ship() error {
	c := b.cur
	b.cur = nil
	if err := c.tw.Close(); err != nil { // the end-of-archive marker: a bundle is a whole tar
		return err
	}
	entry, err := b.l.SubjectEntry(b.id, layout.BundleName(c.n))
	if err != nil {
		return err
	}
	select {
	case b.slots <- struct{}{}:
	case <-b.ctx.Done():
		return context.Cause(b.ctx)
	}
	data := c.buf.Bytes()
	sum := sha256.Sum256(data)
	b.done = append(b.done, manifest.Bundle{Name: layout.BundleName(c.n), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Members: c.members})
	b.wg.Go(func() {
		defer func() { <-b.slots }()
		if err := b.b.Put(b.ctx, b.l.ObjectKey(entry), data, sum); err != nil {
			b.fail(err)
		}
		c.buf.Reset()
		select {
		case b.free <- c.buf:
		default:
		}
	})
	return nil
}

// flush stores the bundle being filled and waits for every upload.
func (b *bundler) flush(context.Context) error {
	if b.cur != nil {
		if err := b.ship(); err != nil {
			b.wg.Wait()
			return err
		}
	}
	b.wg.Wait()
	for drained := false; !drained; { // the buffers go: nothing more is packed, the record comes next
		select {
		case <-b.free:
		default:
			drained = true
		}
	}
	return b.failed()
}

// stop waits for the uploads in flight (a failed collection: their context ends them).
func (b *bundler) stop() { b.wg.Wait() }

// Packed are the bundles stored (after flush).
func (b *bundler) Packed() []manifest.Bundle { return b.done }

// memberWriter writes one member's bytes into its bundle.
type memberWriter struct {
	c  *bundle
	at Placement
}

func (m *memberWriter) Write(p []byte) (int, error) { return m.c.tw.Write(p) }

// Close pads the member to its block; tar fails it when fewer bytes than its size came.
func (m *memberWriter) Close() error { return m.c.tw.Flush() }

func (m *memberWriter) Placement() Placement { return m.at }
