package ship

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/podcopy/podcopy/pkg/failure"
)

// watchdog fails a collection that makes no progress for a while: a stalled exec (a dead
// kubelet that keeps its connection, a destination that stopped reading) never holds a
// worker. It is a failure detector, never an end-of-stream signal.
type watchdog struct {
	limit  time.Duration
	timer  *time.Timer
	mu     sync.Mutex
	err    error
	cancel context.CancelCauseFunc
}

func newWatchdog(limit time.Duration, cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{limit: limit, cancel: cancel}
	w.timer = time.AfterFunc(limit, w.fire)
	return w
}

func (w *watchdog) fire() {
	err := failure.New(failure.Stalled, fmt.Errorf("no progress for %s (neither the source nor the analysis pod moved a byte); the exec was abandoned", w.limit))
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	w.cancel(err)
}

func (w *watchdog) touch() { w.timer.Reset(w.limit) }

func (w *watchdog) stop() { w.timer.Stop() }

// fired returns the watchdog's error, if it fired.
func (w *watchdog) fired() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// writer counts every write as progress.
func (w *watchdog) writer(dst io.Writer) io.Writer { return progressWriter{w: dst, wd: w} }

type progressWriter struct {
	w  io.Writer
	wd *watchdog
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if n > 0 {
		p.wd.touch()
	}
	return n, err
}
