package executor

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/types"
	testclock "k8s.io/utils/clock/testing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type result struct {
	key string
	err error
}

func newRecorded(n int) (*Executor, chan result) {
	ended := make(chan result, 16)
	e := New(n)
	e.Done = func(_ context.Context, key string, err error) { ended <- result{key, err} }
	return e, ended
}

// TestOneWorkPerPod: a second Start for a pod with work there does nothing.
func TestOneWorkPerPod(t *testing.T) {
	t.Parallel()
	e, ended := newRecorded(2)
	gate := make(chan struct{})
	if !e.Start(t.Context(), "u1", "ns/a", func(context.Context) error { <-gate; return nil }, nil) {
		t.Fatal("not started")
	}
	if e.Start(t.Context(), "u1", "ns/a", func(context.Context) error { t.Error("ran twice"); return nil }, nil) {
		t.Fatal("started twice")
	}
	if !e.Running("u1") || e.Running("u2") {
		t.Fatal("Running")
	}
	close(gate)
	if r := <-ended; r.key != "ns/a" || r.err != nil {
		t.Fatalf("ended %+v", r)
	}
	e.Wait()
	if e.Running("u1") {
		t.Fatal("still running")
	}
}

// TestSlotsAndQueue: with every slot held, work waits, is told its place in line before it
// runs, and runs once a slot frees; Acquire (a follow tick) takes the same slots.
func TestSlotsAndQueue(t *testing.T) {
	t.Parallel()
	e, ended := newRecorded(1)
	release, err := e.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	queued := make(chan int, 2)
	for _, k := range []string{"ns/a", "ns/b"} {
		e.Start(t.Context(), typesUID(k), k, func(context.Context) error { note("run " + k); return nil },
			func(_ context.Context, pos int) { note("queued " + k); queued <- pos })
	}
	p1, p2 := <-queued, <-queued
	if p1+p2 != 3 { // 1 and 2, in either order
		t.Fatalf("positions %d %d", p1, p2)
	}
	release()
	<-ended
	<-ended
	e.Wait()
	for _, k := range []string{"ns/a", "ns/b"} {
		qi, ri := -1, -1
		for i, s := range order {
			switch s {
			case "queued " + k:
				qi = i
			case "run " + k:
				ri = i
			}
		}
		if qi < 0 || ri < qi {
			t.Fatalf("%s: %v", k, order)
		}
	}
}

// TestStop: a stopped work (running or waiting) ends with Stop's cause.
func TestStop(t *testing.T) {
	t.Parallel()
	e, ended := newRecorded(1)
	cause := errors.New("pod deleted")
	started := make(chan struct{})
	e.Start(t.Context(), "u1", "ns/a", func(ctx context.Context) error { close(started); <-ctx.Done(); return context.Cause(ctx) }, nil)
	<-started
	e.Start(t.Context(), "u2", "ns/b", func(context.Context) error { t.Error("a stopped queued work ran"); return nil }, nil)
	e.Stop("u2", cause)
	if r := <-ended; r.key != "ns/b" || !errors.Is(r.err, cause) {
		t.Fatalf("ended %+v", r)
	}
	e.Stop("u1", cause)
	if r := <-ended; r.key != "ns/a" || !errors.Is(r.err, cause) {
		t.Fatalf("ended %+v", r)
	}
	e.Wait()
}

func typesUID(key string) types.UID { return types.UID("uid-" + key) }

// TestToolCache: a container found without tools is remembered per pod until the pod is
// forgotten.
func TestToolCache(t *testing.T) {
	t.Parallel()
	e := New(1)
	e.MarkToolless("u1", "app")
	if !e.Toolless("u1", "app") || e.Toolless("u1", "other") || e.Toolless("u2", "app") {
		t.Fatal("tool cache")
	}
	e.Forget("u1", errors.New("pod deleted"))
	if e.Toolless("u1", "app") {
		t.Fatal("a forgotten pod's container is still remembered")
	}
}

// TestLoops: one loop per pod; a stop is a signal (the first word counts) that never waits;
// StopLoops ends the rest and waits for them.
func TestLoops(t *testing.T) {
	t.Parallel()
	e := New(1)
	ended := make(chan End, 2)
	release := make(chan struct{})
	loop := func(ctx context.Context, stop <-chan struct{}, end func() End) {
		<-stop
		<-release // its last round
		ended <- end()
	}
	if !e.StartLoop(t.Context(), "u1", "req-1", loop) || e.StartLoop(t.Context(), "u1", "req-2", loop) {
		t.Fatal("a second loop for one pod")
	}
	e.StartLoop(t.Context(), "u2", "req-3", loop)
	if e.LoopID("u1") != "req-1" {
		t.Fatal("LoopID")
	}
	if e.StopLoop("u1", End{Why: "removed", Final: true}) || e.StopLoop("u1", End{Why: "later"}) {
		t.Fatal("a stop waited for the loop")
	}
	if e.LoopID("u1") != "" || !e.HasLoop("u1") {
		t.Fatal("an ending loop is named, or forgotten before it ended")
	}
	close(release)
	<-e.LoopDone("u1")
	if got := <-ended; got != (End{Why: "removed", Final: true}) {
		t.Fatalf("the loop ended as %+v", got)
	}
	if !e.StopLoop("u1", End{}) || e.HasLoop("u1") {
		t.Fatal("an ended loop is still there")
	}
	e.StopLoops()
	if got := <-ended; got != (End{}) || e.HasLoop("u2") {
		t.Fatalf("StopLoops: %+v", got)
	}
}

// TestStats: what runs and what waits for a slot, and for how long, by the injected clock.
func TestStats(t *testing.T) {
	t.Parallel()
	clk := testclock.NewFakePassiveClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	e := New(1)
	e.Clock = clk
	hold := make(chan struct{})
	started := make(chan struct{})
	e.Start(t.Context(), "a", "ns/a", func(ctx context.Context) error { close(started); <-hold; return nil }, nil)
	<-started
	clk.SetTime(clk.Now().Add(time.Minute))
	queued := make(chan struct{})
	e.Start(t.Context(), "b", "ns/b", func(ctx context.Context) error { return nil }, func(context.Context, int) { close(queued) })
	<-queued
	clk.SetTime(clk.Now().Add(10 * time.Second))
	if st := e.Stats(); st != (Stats{Running: 1, Queued: 1, OldestRunning: 70 * time.Second, OldestQueued: 10 * time.Second}) {
		t.Errorf("stats %+v", st)
	}
	close(hold)
	e.Wait()
	if st := e.Stats(); st != (Stats{}) {
		t.Errorf("after the works: %+v", st)
	}
}
