package spool

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"
)

// TestSpool: the source writes at its own pace while nothing reads, up to the memory
// and disk bounds and no further; what is read is what was written, in order, across the
// spool's moves between memory and its (unlinked) file; the end is the writer's.
func TestSpool(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const max = 4 << 20
	held, waits := &gauge{}, &gauge{}
	r, w := New(dir, max, Meter{Bytes: held, Waits: waits}, 0, nil, nil)
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
	if got := written.Load(); waits.v.Load() == 0 || got > memory+max || got < memory+max-(96<<10) {
		t.Fatalf("the writer got %d bytes in (%d waits) with %d of memory and %d of disk and no reader", got, waits.v.Load(), memory, max)
	}
	if h := held.v.Load(); h < memory+max-(96<<10) || h > memory+max {
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

// TestSpoolReaderEnds: a reader that stops ends a writer that waits for room.
func TestSpoolReaderEnds(t *testing.T) {
	t.Parallel()
	r, w := New(t.TempDir(), 1<<10, Meter{}, 0, nil, nil)
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, memory+4<<10))
		done <- err
	}()
	stop := errors.New("processing failed")
	r.CloseWithError(stop)
	if err := <-done; !errors.Is(err, stop) {
		t.Fatalf("the waiting writer ended with %v", err)
	}
}

// gauge counts what a Meter is told.
type gauge struct{ v atomic.Int64 }

func (g *gauge) Add(f float64) { g.v.Add(int64(f)) }
func (g *gauge) Inc()          { g.v.Add(1) }

// TestSpoolFull: a writer that waits on a full spool for its bound (a fake clock)
// fails with a *FullError and tells onFull; one whose reader frees room in time goes on.
func TestSpoolFull(t *testing.T) {
	t.Parallel()
	for _, reads := range []bool{false, true} {
		t.Run(fmt.Sprintf("reader frees room=%v", reads), func(t *testing.T) {
			t.Parallel()
			fc := testclock.NewFakeClock(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
			told := make(chan error, 1)
			r, w := New(t.TempDir(), 1<<10, Meter{}, 45*time.Second, fc, func(err error) { told <- err })
			defer r.CloseWithError(nil)
			done := make(chan error, 1)
			go func() {
				_, err := w.Write(make([]byte, memory+4<<10))
				done <- err
			}()
			for !fc.HasWaiters() { // the writer waits on the full spool
				time.Sleep(time.Millisecond)
			}
			fc.Step(44 * time.Second)
			if reads {
				if _, err := io.CopyN(io.Discard, r, memory+4<<10); err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatalf("the writer failed although room was freed in time: %v", err)
				}
				return
			}
			fc.Step(time.Second)
			err := <-done
			if full := (*FullError)(nil); !errors.As(err, &full) || full.Wait != 45*time.Second {
				t.Fatalf("the writer ended with %v, want a *FullError after 45s", err)
			}
			if told := <-told; told != err {
				t.Fatalf("onFull was told %v", told)
			}
		})
	}
}
