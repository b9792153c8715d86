package collect

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	testclock "k8s.io/utils/clock/testing"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
)

// flakyWriter fails terminal status writes while down is set.
type flakyWriter struct {
	status.Writer
	mu       sync.Mutex
	down     bool
	refusals int
}

func (f *flakyWriter) Write(ctx context.Context, pod *corev1.Pod, s status.Status) error {
	f.mu.Lock()
	down := f.down && s.Phase != status.Running
	if down {
		f.refusals++
	}
	f.mu.Unlock()
	if down {
		return errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	}
	return f.Writer.Write(ctx, pod, s)
}

func (f *flakyWriter) up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = false
}

// TestFinalStatusLandsAfterTheAPIServerReturns is issue 12's first defect: the final status
// write failed once, the request was remembered as finished, and the pod said Running for
// good. Now the sync asks to be run again (with a growing delay, no goroutine of its own),
// each sync tries the write again, and no sync in between runs the request again.
func TestFinalStatusLandsAfterTheAPIServerReturns(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	fw := &flakyWriter{Writer: e.h.Status, down: true}
	e.h.Status = fw
	var retry *RetryError
	if err := e.sync(t.Context(), pod); !errors.As(err, &retry) || retry.After != finalRetryBase {
		t.Fatalf("sync with the final write refused: %v", err)
	}
	if st := e.status(t); st.Phase != status.Running {
		t.Fatalf("status %+v", st)
	}
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second} { // the queue's retries
		if err := e.sync(t.Context(), e.refresh(t)); !errors.As(err, &retry) || retry.After != want {
			t.Fatalf("retry: %v, want a requeue after %s", err, want)
		}
	}
	if len(e.runner.jobs) != 1 {
		t.Fatalf("ran %d times while its final status was pending", len(e.runner.jobs))
	}
	fw.up()
	if err := e.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Succeeded {
		t.Fatalf("status %+v", st)
	}
	if err := e.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	if len(e.runner.jobs) != 1 || fw.refusals != 3 || testutil.ToFloat64(e.h.Metrics.StatusWriteRetries) != 3 {
		t.Fatalf("jobs %d refusals %d", len(e.runner.jobs), fw.refusals)
	}
}

// scriptedRunner fails with errs in order, then succeeds.
type scriptedRunner struct {
	fakeRunner
	errs []error
}

func (s *scriptedRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	res, _ := s.fakeRunner.Run(ctx, job)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.jobs) - 1; n < len(s.errs) {
		return ship.Result{}, s.errs[n]
	}
	return res, nil
}

func TestTransientFailuresAreRetried(t *testing.T) {
	t.Parallel()
	cut := errors.New("source tar stream ended without the end-of-archive marker")
	tests := []struct {
		name      string
		errs      []error
		wantPhase status.Phase
		wantRuns  int
	}{
		{"cut twice then ok", []error{cut, cut}, status.Succeeded, 3},
		{"cut three times", []error{cut, cut, cut}, status.Failed, 3},
		{"disk full is not retried", []error{&ship.DestinationError{Err: &exec.ExitError{Code: 2, Stderr: "tar: write error: No space left on device"}}}, status.Failed, 1},
		{"missing file is not retried", []error{&ship.PermanentError{Err: errors.New("/var/log/x: no such file")}}, status.Failed, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
			e := newEnv(pod, nil)
			r := &scriptedRunner{fakeRunner: fakeRunner{res: e.runner.res}, errs: tt.errs}
			e.h.Runner = r
			e.h.Settings.Attempts = 3
			e.h.RetryBase = 10 * time.Millisecond
			clock := testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			e.h.Clock = clock
			waits := e.syncUntilDone(t, clock)
			st := e.status(t)
			if want := tt.wantRuns - 1; len(waits) != want {
				t.Fatalf("%d scheduled retries %v, want %d", len(waits), waits, want)
			}
			if st.Phase != tt.wantPhase || len(r.jobs) != tt.wantRuns || st.Attempt != tt.wantRuns {
				t.Fatalf("status %+v after %d runs", st, len(r.jobs))
			}
			if tt.wantPhase == status.Failed && strings.Contains(tt.name, "disk") && !strings.Contains(st.Message, "No space left on device") {
				t.Fatalf("message %q", st.Message)
			}
		})
	}
}

// TestRunningStatusWithoutACollectionIsResolved: an agent that starts and finds Running
// (its predecessor stopped mid-way) runs the next attempt, and past retry.attempts fails it.
func TestRunningStatusWithoutACollectionIsResolved(t *testing.T) {
	t.Parallel()
	for _, prevAttempt := range []int{1, 3} {
		pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
		req, err := request.Parse(pod, e0Policy())
		if err != nil {
			t.Fatal(err)
		}
		setStatus(pod, status.Status{Request: req.ID(), Phase: status.Running, Collection: "20251231T000000Z-" + req.ID()[:8], Attempt: prevAttempt})
		e := newEnv(pod, nil)
		e.h.Settings.Attempts = 3
		if err := e.sync(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		st := e.status(t)
		switch prevAttempt {
		case 1:
			if st.Phase != status.Succeeded || st.Attempt != 2 || len(e.runner.jobs) != 1 {
				t.Fatalf("status %+v runs %d", st, len(e.runner.jobs))
			}
		case 3:
			if st.Phase != status.Failed || !strings.Contains(st.Message, "interrupted") || len(e.runner.jobs) != 0 {
				t.Fatalf("status %+v runs %d", st, len(e.runner.jobs))
			}
		}
	}
}

func e0Policy() policy.Policy { return policy.Default() }

// fakeClock is the handler's clock in tests of retry scheduling.
// syncUntilDone syncs the pod as the controller would, until its request has a terminal
// status: after a *RetryError it advances clock by the requested delay (no sleeping) and
// returns the delays; another error is retried at once (the queue's rate limit).
func (e *env) syncUntilDone(t *testing.T, clock *testclock.FakeClock) []time.Duration {
	t.Helper()
	var waits []time.Duration
	for range 20 {
		err := e.sync(t.Context(), e.refresh(t))
		var retry *RetryError
		switch {
		case errors.As(err, &retry) && retry.After > 0:
			// Early: the status says when, so a sync before then runs nothing.
			if again := e.sync(t.Context(), e.refresh(t)); !errors.As(again, &retry) {
				t.Fatalf("a sync before the next attempt is due: %v", again)
			}
			waits = append(waits, retry.After)
			clock.Step(retry.After + time.Second)
		case err != nil:
			clock.Step(time.Second)
		default:
			if st, ok := status.Get(e.refresh(t)); ok && st.Phase != status.Running && st.Phase != status.Pending {
				return waits
			}
		}
	}
	t.Fatal("no terminal status after 20 syncs")
	return nil
}

func setStatus(pod *corev1.Pod, s status.Status) {
	b, _ := json.Marshal(s)
	pod.Annotations[status.Annotation] = string(b)
}

// downWriter refuses every status write while down.
type downWriter struct {
	status.Writer
	mu   sync.Mutex
	down bool
}

func (d *downWriter) Write(ctx context.Context, pod *corev1.Pod, s status.Status) error {
	d.mu.Lock()
	down := d.down
	d.mu.Unlock()
	if down {
		return errors.New("connection refused")
	}
	return d.Writer.Write(ctx, pod, s)
}

// TestAnOutageDoesNotUseUpAttempts: while the API server does not answer, no attempt runs;
// the next one starts once it answers again.
func TestAnOutageDoesNotUseUpAttempts(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	dw := &downWriter{Writer: e.h.Status}
	e.h.Status = dw
	cut := errors.New("stream cut")
	r := &scriptedRunner{fakeRunner: fakeRunner{res: e.runner.res}}
	r.errs = []error{cut}
	e.h.Runner = &outageRunner{scriptedRunner: r, dw: dw}
	e.h.Settings.Attempts = 2
	e.h.RetryBase = 10 * time.Millisecond
	clock := testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e.h.Clock = clock
	// The queue syncs again while the API server is down: nothing runs, no attempt is used.
	for i := range 5 {
		if err := e.sync(t.Context(), e.refresh(t)); err == nil {
			t.Fatalf("sync %d during the outage: no error", i)
		}
		clock.Step(time.Second)
	}
	if len(r.jobs) != 1 {
		t.Fatalf("%d attempts ran during the outage", len(r.jobs))
	}
	dw.mu.Lock()
	dw.down = false
	dw.mu.Unlock()
	e.syncUntilDone(t, clock)
	if st := e.status(t); st.Phase != status.Succeeded || st.Attempt != 2 || len(r.jobs) != 2 {
		t.Fatalf("status %+v after %d runs", st, len(r.jobs))
	}
}

// outageRunner takes the API server down when the first attempt fails.
type outageRunner struct {
	*scriptedRunner
	dw *downWriter
}

func (o *outageRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	res, err := o.scriptedRunner.Run(ctx, job)
	if err != nil {
		o.dw.mu.Lock()
		o.dw.down = true
		o.dw.mu.Unlock()
	}
	return res, err
}

// TestRetryRemovesTheEarlierStaging: an attempt the status scheduled (nextAttemptTime)
// first removes the earlier attempt's staging directory, which that attempt's agent may have
// been stopped before removing (e2e TestUpgradeUnderLoad saw one left).
func TestRetryRemovesTheEarlierStaging(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
	req, err := request.Parse(pod, e0Policy())
	if err != nil {
		t.Fatal(err)
	}
	prev := "20251231T000000Z-" + req.ID()[:8]
	setStatus(pod, status.Status{Request: req.ID(), Phase: status.Running, Collection: prev, Attempt: 1, NextAttemptTime: "2000-01-01T00:00:00Z"})
	e := newEnv(pod, nil)
	e.h.Settings.Attempts = 3
	var mu sync.Mutex
	var removed []string
	e.h.Exec = exectest.Func(func(ctx context.Context, r exec.Request) error {
		mu.Lock()
		defer mu.Unlock()
		if r.Command[0] == "rm" {
			removed = append(removed, r.Command[len(r.Command)-1])
		}
		return nil
	})
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Succeeded || st.Attempt != 2 {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(removed) != 1 || !strings.HasSuffix(removed[0], "/.partial/"+prev) {
		t.Fatalf("removed %q, want the staging directory of %s", removed, prev)
	}
}
