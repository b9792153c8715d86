package collect

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
)

// progressInterval is how often a Running status is updated with files and bytes so far
// (SPEC §2: at most every 2 s).
const progressInterval = 2 * time.Second

// reportProgress writes st with p's counts every progressInterval while they change, until
// the returned stop is called; stop returns once no write is in flight, so the terminal
// status written next is the last word.
func (h onceWork) reportProgress(ctx context.Context, pod *corev1.Pod, st status.Status, p *ship.Progress) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := h.clock().NewTicker(h.progressEvery())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
			}
			files, bytes, expected := int(p.Files.Load()), p.Bytes.Load(), p.Expected.Load()
			if files == st.Files && bytes == st.Bytes && expected == st.ExpectedBytes {
				continue
			}
			st.Files, st.Bytes, st.ExpectedBytes = files, bytes, expected
			wctx, wcancel := context.WithTimeout(ctx, progressInterval)
			_ = h.Status.Write(wctx, pod, st) // best effort: the next tick or the final status follows
			wcancel()
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

func (h onceWork) progressEvery() time.Duration {
	if h.ProgressInterval > 0 {
		return h.ProgressInterval
	}
	return progressInterval
}
