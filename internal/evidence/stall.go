package evidence

import (
	"context"
	"fmt"
	"io"
	"time"
)

// metadataTimeout bounds the small reads in the analysis pod (a listing, a manifest).
const metadataTimeout = 2 * time.Minute

// stallTimeout is how long fetch and verify wait for the analysis pod's next output before
// they give up (verify prints one line per file it has hashed).
const stallTimeout = 5 * time.Minute

// watched returns a context that is cancelled when nothing is written to the returned
// writer (wrapping w) for stall (stallTimeout when zero), and a stop function.
func watched(ctx context.Context, stall time.Duration, w io.Writer, what string) (context.Context, io.Writer, func()) {
	if stall <= 0 {
		stall = stallTimeout
	}
	ctx, cancel := context.WithCancelCause(ctx)
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		t := time.NewTimer(stall)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-progress:
				t.Reset(stall)
			case <-t.C:
				cancel(fmt.Errorf("%s: nothing arrived for %s", what, stall))
				return
			}
		}
	}()
	return ctx, stallWriter{w: w, progress: progress}, func() { close(done); cancel(nil) }
}

type stallWriter struct {
	w        io.Writer
	progress chan struct{}
}

func (s stallWriter) Write(p []byte) (int, error) {
	select {
	case s.progress <- struct{}{}:
	default:
	}
	return s.w.Write(p)
}

// maxManifestRead bounds what is read as a manifest by default (the agent caps it at
// policy.maxManifestBytes, 8 MiB by default).
const maxManifestRead = 64 << 20

// maxListing bounds the listing of a pod's directory in the analysis pod (a collection's
// name is about 30 bytes: half a million of them).
const maxListing = 16 << 20
