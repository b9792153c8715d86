// Package executor runs the work the controller decides on: each pod's collection in a
// goroutine it owns, at most a fixed number at a time (SPEC §5 concurrency: the one gate,
// which follow ticks pass too), and asks for the pod to be synced again when the work ends.
// A sync only decides and returns; nothing it starts runs on the controller's workers, so a
// rejection or a stop on one pod never waits behind long collections of others.
package executor

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Work is one pod's work. It runs with a slot held; what it returns is handed to Done
// (collect.RetryError: sync again later; nil: sync again now).
type Work func(ctx context.Context) error

// Executor owns every goroutine that works on a pod, the slots they hold, and their
// cancellation. The zero value is not usable: build it with New.
type Executor struct {
	slots chan struct{} // nil: unbounded
	// Done is called with the work's context (ended by then), the pod's key and the work's
	// result once the work has returned and released its slot (watch.Controller's Ended in
	// production). Set it before the
	// first Start.
	Done func(ctx context.Context, key string, err error)

	mu    sync.Mutex
	tasks map[types.UID]*task
	wg    sync.WaitGroup
	// toolless holds, per pod, the containers found without tar or sh: they are read
	// through the podcopy helper at once on later collections.
	toolless map[types.UID]map[string]bool
}

type task struct {
	cancel  context.CancelCauseFunc
	waiting bool // for a slot
}

// New returns an Executor with n slots (unbounded when n < 1).
func New(n int) *Executor {
	e := &Executor{tasks: map[types.UID]*task{}, toolless: map[types.UID]map[string]bool{}}
	if n > 0 {
		e.slots = make(chan struct{}, n)
	}
	return e
}

// Start runs w for pod uid (key namespace/name) in a goroutine of its own, once a slot is
// free. It returns false, and does nothing, when work of uid is already there (running or
// waiting). When no slot is free, queued is called first, in that goroutine, with the
// pod's place in the queue (1: next), so whatever it writes lands before anything w
// writes. The work's context derives from ctx and ends with Stop's cause.
func (e *Executor) Start(ctx context.Context, uid types.UID, key string, w Work, queued func(ctx context.Context, position int)) bool {
	e.mu.Lock()
	if _, ok := e.tasks[uid]; ok {
		e.mu.Unlock()
		return false
	}
	wctx, cancel := context.WithCancelCause(ctx)
	t := &task{cancel: cancel}
	e.tasks[uid] = t
	position := 0
	if !e.tryAcquire() {
		t.waiting, position = true, 1
		for _, o := range e.tasks {
			if o != t && o.waiting {
				position++
			}
		}
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		err := e.run(wctx, t, position, w, queued)
		e.mu.Lock()
		delete(e.tasks, uid)
		e.mu.Unlock()
		cancel(nil)
		if e.Done != nil {
			e.Done(wctx, key, err)
		}
	}()
	return true
}

func (e *Executor) run(ctx context.Context, t *task, position int, w Work, queued func(context.Context, int)) error {
	if position > 0 {
		if queued != nil {
			queued(ctx, position)
		}
		release, err := e.Acquire(ctx)
		if err != nil {
			return err
		}
		e.mu.Lock()
		t.waiting = false
		e.mu.Unlock()
		defer release()
	} else {
		defer e.release()
	}
	return w(ctx)
}

func (e *Executor) tryAcquire() bool {
	if e.slots == nil {
		return true
	}
	select {
	case e.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (e *Executor) release() {
	if e.slots != nil {
		<-e.slots
	}
}

// Acquire takes a slot for work that is not a Start (a follow tick), or returns ctx's
// cause; release gives it back.
func (e *Executor) Acquire(ctx context.Context) (release func(), err error) {
	if e.slots == nil {
		return func() {}, nil
	}
	select {
	case e.slots <- struct{}{}:
		return e.release, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Running reports whether work of uid is there (running, or waiting for a slot).
func (e *Executor) Running(uid types.UID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.tasks[uid]
	return ok
}

// Stop cancels uid's work with cause; Done is still called when it has returned.
func (e *Executor) Stop(uid types.UID, cause error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t, ok := e.tasks[uid]; ok {
		t.cancel(cause)
	}
}

// Wait returns once every work started has returned (and its Done was called).
func (e *Executor) Wait() { e.wg.Wait() }

// Slots is how many works may run at once (0: unbounded).
func (e *Executor) Slots() int { return cap(e.slots) }

// Toolless reports whether pod uid's container was found without tar or sh.
func (e *Executor) Toolless(uid types.UID, container string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.toolless[uid][container]
}

// MarkToolless records that pod uid's container has no tar or sh.
func (e *Executor) MarkToolless(uid types.UID, container string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.toolless[uid] == nil {
		e.toolless[uid] = map[string]bool{}
	}
	e.toolless[uid][container] = true
}

// Forget drops what the executor remembers of pod uid (its tool cache) and stops its work
// with cause.
func (e *Executor) Forget(uid types.UID, cause error) {
	e.mu.Lock()
	delete(e.toolless, uid)
	e.mu.Unlock()
	e.Stop(uid, cause)
}
