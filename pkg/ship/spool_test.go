package ship

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestSourceSpool: the source writes at its own pace while nothing reads, up to the memory
// and disk bounds and no further; what is read is what was written, in order, across the
// spool's moves between memory and its (unlinked) file; the end is the writer's.
func TestSourceSpool(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const max = 4 << 20
	held, waits := &gauge{}, &gauge{}
	r, w := newSourceSpool(dir, max, SpoolMeter{Bytes: held, Waits: waits})
	defer r.CloseWithError(nil)
	var written atomic.Int64
	const total = 20 << 20
	sum := make(chan []byte, 1)
	go func() {
		src := sha256.New()
		for i := 0; i < total; {
			n := min(1+(i*7919)%(96<<10), total-i)
			b := bytes.Repeat([]byte{byte(i), byte(i >> 8), byte(i >> 16)}, n/3+1)[:n]
			src.Write(b)
			if _, err := w.Write(b); err != nil {
				t.Error(err)
				sum <- nil
				return
			}
			written.Add(int64(n))
			i += n
		}
		w.CloseWithError(nil)
		sum <- src.Sum(nil)
	}()
	// Nothing reads: the writer gets as far as memory and disk hold, and waits there.
	for deadline := time.Now().Add(20 * time.Second); waits.v.Load() == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
	}
	if got := written.Load(); waits.v.Load() == 0 || got > spoolMemory+max || got < spoolMemory+max-(96<<10) {
		t.Fatalf("the writer got %d bytes in (%d waits) with %d of memory and %d of disk and no reader", got, waits.v.Load(), spoolMemory, max)
	}
	if h := held.v.Load(); h < spoolMemory+max-(96<<10) || h > spoolMemory+max {
		t.Fatalf("the meter says %d bytes held", h)
	}
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Fatalf("the spool's file is in its directory: %v", names)
	}
	got := sha256.New()
	buf := make([]byte, 37<<10)
	n, err := io.CopyBuffer(got, struct{ io.Reader }{r}, buf)
	if err != nil || n != total {
		t.Fatalf("read %d, %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), <-sum) {
		t.Fatal("what was read is not what was written")
	}
	if held.v.Load() != 0 {
		t.Fatalf("the meter says %d bytes held after the end", held.v.Load())
	}
}

// TestSourceSpoolReaderEnds: a reader that stops ends a writer that waits for room.
func TestSourceSpoolReaderEnds(t *testing.T) {
	t.Parallel()
	r, w := newSourceSpool(t.TempDir(), 1<<10, SpoolMeter{})
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, spoolMemory+4<<10))
		done <- err
	}()
	stop := errors.New("processing failed")
	r.CloseWithError(stop)
	if err := <-done; !errors.Is(err, stop) {
		t.Fatalf("the waiting writer ended with %v", err)
	}
}

// gauge counts what a SpoolMeter is told.
type gauge struct{ v atomic.Int64 }

func (g *gauge) Add(f float64) { g.v.Add(int64(f)) }
func (g *gauge) Inc()          { g.v.Add(1) }
