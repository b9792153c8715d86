package ship

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
)

func TestPipeDeliversThenEnds(t *testing.T) {
	t.Parallel()
	boom := errors.New("source exited 2")
	tests := []struct {
		name    string
		closeBy error
		want    error
	}{
		{"close", nil, io.EOF},
		{"close with error", boom, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, w := newPipe()
			var want bytes.Buffer
			go func() {
				for i := range 100 {
					b := bytes.Repeat([]byte{byte(i)}, 1000+i)
					want.Write(b)
					if _, err := w.Write(b); err != nil {
						t.Error(err)
					}
				}
				w.CloseWithError(tt.closeBy)
			}()
			var got bytes.Buffer
			buf := make([]byte, 777)
			var err error
			for err == nil {
				var n int
				n, err = r.Read(buf)
				got.Write(buf[:n])
			}
			if err != tt.want || !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("read %d bytes (want %d), then %v (want %v)", got.Len(), want.Len(), err, tt.want)
			}
		})
	}
}

// TestPipeBounded: a writer waits once pipeChunks writes are unread, and a reader's close
// releases it with the reader's error.
func TestPipeBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r, w := newPipe()
		written := make(chan int)
		go func() {
			n := 0
			for {
				if _, err := w.Write([]byte("x")); err != nil {
					written <- n
					return
				}
				n++
			}
		}()
		synctest.Wait() // the writer is blocked
		stop := errors.New("analysis pod stopped reading")
		r.CloseWithError(stop)
		if n := <-written; n != pipeChunks {
			t.Fatalf("%d writes before blocking, want %d", n, pipeChunks)
		}
		if _, err := w.Write([]byte("y")); err != stop {
			t.Fatalf("write after the reader closed: %v", err)
		}
	})
}

// TestPipeConcurrentClose: closes racing with reads and writes neither panic nor hang
// (run with -race).
func TestPipeConcurrentClose(t *testing.T) {
	t.Parallel()
	for range 50 {
		r, w := newPipe()
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				if _, err := w.Write(make([]byte, 100)); err != nil {
					return
				}
			}
		})
		wg.Go(func() { _, _ = io.Copy(io.Discard, r) })
		wg.Go(func() { w.CloseWithError(errors.New("cancelled")) })
		wg.Go(func() { _ = r.Close() })
		wg.Wait()
	}
}
