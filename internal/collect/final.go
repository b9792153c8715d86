package collect

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/pkg/status"
)

// Final status writes: each bounded in time, retried from finalRetryBase doubling to
// finalRetryMax.
const (
	finalWriteTimeout = 10 * time.Second
	finalRetryBase    = time.Second
	finalRetryMax     = 30 * time.Second
)

// finalStatuses owns the end of every request in this process: which request of a pod it
// finished (the informer's cache may not show that status yet, and a request is never run
// twice), and the terminal status it could not write yet, which the pod's next syncs try
// again with backoff (no goroutine of its own, and no run of the request in between).
type finalStatuses struct {
	mu      sync.Mutex
	done    map[types.UID]string        // request ids finished by this process
	pending map[types.UID]*pendingFinal // terminal statuses not written yet
}

// pendingFinal is a terminal status not written yet, and the delay before the next try.
type pendingFinal struct {
	id    string
	st    status.Status
	delay time.Duration
}

// finished reports whether this process finished request id of pod uid.
func (f *finalStatuses) finished(uid types.UID, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done[uid] == id
}

// markFinished records that request id of pod uid has ended (its terminal status written).
func (f *finalStatuses) markFinished(uid types.UID, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		f.done = map[types.UID]string{}
	}
	f.done[uid] = id
}

// forget drops what is remembered of pod uid (it was deleted).
func (f *finalStatuses) forget(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.done, uid)
	delete(f.pending, uid)
}

// write writes request id's terminal status st. Until it lands, it is kept and a
// *RetryError asks the controller to sync the pod again (retry, at each sync).
func (f *finalStatuses) write(ctx context.Context, w status.Writer, pod *corev1.Pod, id string, st status.Status) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	err := w.Write(wctx, pod, st)
	cancel()
	if err == nil {
		f.markFinished(pod.UID, id)
		return nil
	}
	logr.FromContextOrDiscard(ctx).Error(err, "writing the final status failed; retrying until it lands", "phase", st.Phase)
	f.mu.Lock()
	if f.pending == nil {
		f.pending = map[types.UID]*pendingFinal{}
	}
	f.pending[pod.UID] = &pendingFinal{id: id, st: st, delay: finalRetryBase}
	f.mu.Unlock()
	return &RetryError{Reason: "the final status of " + st.Collection + " is not written yet", After: finalRetryBase}
}

// retry tries again to write pod's pending terminal status, if it has one. It returns
// held=false when there is none; else the error the sync returns (a *RetryError while it
// does not land, nil once it has, or the pod is gone or replaced).
func (f *finalStatuses) retry(ctx context.Context, w status.Writer, m *metrics.Metrics, pod *corev1.Pod) (held bool, err error) {
	f.mu.Lock()
	pf := f.pending[pod.UID]
	f.mu.Unlock()
	if pf == nil {
		return false, nil
	}
	m.StatusWriteRetries.Inc()
	wctx, cancel := context.WithTimeout(ctx, finalWriteTimeout)
	err = w.Write(wctx, pod, pf.st)
	cancel()
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		f.mu.Lock()
		pf.delay = min(2*pf.delay, finalRetryMax)
		after := pf.delay
		f.mu.Unlock()
		return true, &RetryError{Reason: "the final status of " + pf.st.Collection + " is not written yet: " + err.Error(), After: after}
	}
	// Written, or NotFound/Conflict: the pod is gone or replaced (UID precondition).
	f.mu.Lock()
	delete(f.pending, pod.UID)
	f.mu.Unlock()
	f.markFinished(pod.UID, pf.id)
	logr.FromContextOrDiscard(ctx).Info("final status written after retries", "pod", pod.Namespace+"/"+pod.Name, "phase", pf.st.Phase)
	return true, nil
}
