// Package executor runs the work the controller decides on: each pod's collection in a
// goroutine it owns, at most a fixed number at a time (SPEC §5 concurrency: the one gate,
// which follow ticks pass too), and asks for the pod to be synced again when the work ends.
// A sync only decides and returns; nothing it starts runs on the controller's workers, so a
// rejection or a stop on one pod never waits behind long collections of others.
package executor

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
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
	// Clock times the works for Stats (the real clock when nil).
	Clock clock.PassiveClock

	mu    sync.Mutex
	tasks map[types.UID]*task
	wg    sync.WaitGroup
	// toolless holds, per pod, the containers found without tar or sh: they are read
	// through the podcopy helper at once on later collections.
	toolless map[types.UID]map[string]bool
	loops    map[types.UID]*loop
}

type task struct {
	cancel  context.CancelCauseFunc
	waiting bool      // for a slot
	since   time.Time // when it started waiting, then when it got its slot
}

// Stats are the executor's works now: how many run (hold a slot) and wait for one, and the
// longest any has run and waited (0 when none).
type Stats struct {
	Running, Queued             int
	OldestRunning, OldestQueued time.Duration
}

// Stats says what runs and waits now (the metrics read it at each scrape).
func (e *Executor) Stats() Stats {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	var st Stats
	for _, t := range e.tasks {
		age := now.Sub(t.since)
		if t.waiting {
			st.Queued++
			st.OldestQueued = max(st.OldestQueued, age)
		} else {
			st.Running++
			st.OldestRunning = max(st.OldestRunning, age)
		}
	}
	return st
}

func (e *Executor) now() time.Time {
	if e.Clock != nil {
		return e.Clock.Now()
	}
	return time.Now()
}

// New returns an Executor with n slots (unbounded when n < 1).
func New(n int) *Executor {
	e := &Executor{tasks: map[types.UID]*task{}, toolless: map[types.UID]map[string]bool{}, loops: map[types.UID]*loop{}}
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
	t := &task{cancel: cancel, since: e.now()}
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
		t.waiting, t.since = false, e.now()
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

// Wait returns once every work started has returned (and its Done was called); loops are
// StopLoops'.
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

// Loop is work that runs until it is told to stop (a follow): it returns once stop is
// closed (after what End asks for) or its context ends. id names what it runs (the
// request's id).
type Loop func(ctx context.Context, stop <-chan struct{}, end func() End)

// End says how a Loop is to end.
type End struct {
	// Why is written as the reason it ended ("": nothing is written: the agent stops, or
	// the pod is gone).
	Why string
	// Final asks for one last round first (the pod is terminating).
	Final bool
}

// loop is one running Loop.
type loop struct {
	id       string
	stop     chan struct{}
	done     chan struct{}
	stopping bool
	end      End
}

// StartLoop runs l for pod uid in a goroutine of its own, unless a loop of uid is there
// (running or ending): it returns false then. Loops take no slot; their rounds do
// (Acquire).
func (e *Executor) StartLoop(ctx context.Context, uid types.UID, id string, l Loop) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.loops[uid]; ok {
		return false
	}
	lp := &loop{id: id, stop: make(chan struct{}), done: make(chan struct{})}
	e.loops[uid] = lp
	go func() { // StopLoops waits for it (done)
		l(ctx, lp.stop, func() End {
			e.mu.Lock()
			defer e.mu.Unlock()
			return lp.end
		})
		e.mu.Lock()
		if e.loops[uid] == lp {
			delete(e.loops, uid)
		}
		e.mu.Unlock()
		close(lp.done)
	}()
	return true
}

// LoopID is the id of uid's running loop ("" when there is none, or it is ending).
func (e *Executor) LoopID(uid types.UID) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if lp := e.loops[uid]; lp != nil && !lp.stopping {
		return lp.id
	}
	return ""
}

// HasLoop reports whether a loop of uid is there (running or ending).
func (e *Executor) HasLoop(uid types.UID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.loops[uid]
	return ok
}

// StopLoop tells uid's loop to end as end says (the first word counts) and never waits
// for it: it reports whether the loop has ended (true when there was none).
func (e *Executor) StopLoop(uid types.UID, end End) (ended bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	lp := e.loops[uid]
	if lp == nil {
		return true
	}
	if !lp.stopping {
		lp.stopping, lp.end = true, end
		close(lp.stop)
	}
	select {
	case <-lp.done:
		return true
	default:
		return false
	}
}

// LoopDone is closed once uid's loop has ended (nil when there is none): for tests, and
// for callers that must wait.
func (e *Executor) LoopDone(uid types.UID) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if lp := e.loops[uid]; lp != nil {
		return lp.done
	}
	return nil
}

// StopLoops ends every loop after its current round, writing nothing (the agent stops;
// the next agent resumes), and waits for them.
func (e *Executor) StopLoops() {
	e.mu.Lock()
	var done []chan struct{}
	for _, lp := range e.loops {
		if !lp.stopping {
			lp.stopping = true
			close(lp.stop)
		}
		done = append(done, lp.done)
	}
	e.mu.Unlock()
	for _, d := range done {
		<-d
	}
}
