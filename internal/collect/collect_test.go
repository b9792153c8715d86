package collect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	testclock "k8s.io/utils/clock/testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/executor"
	"github.com/podcopy/podcopy/internal/helpercontainer"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
)

type fakeRunner struct {
	mu   sync.Mutex
	jobs []ship.Job
	err  error
	res  ship.Result
}

func (f *fakeRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, job)
	return f.res, f.err
}

type fakeChooser struct{ err error }

func (f fakeChooser) Choose(ctx context.Context, requested string) (exec.Target, error) {
	return exec.Target{Namespace: "podcopy", Pod: "analysis-0", Container: "store"}, f.err
}

func sourcePod(ann map[string]string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "mysql", UID: "uid-1", Annotations: ann},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "db", Image: "mysql:8"}}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "db", ImageID: "sha256:abc", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
	}
}

type env struct {
	h        *Handler
	ended    chan error // what the collections the executor ran returned
	runner   *fakeRunner
	client   *fake.Clientset
	recorder *record.FakeRecorder
}

func newEnv(pod *corev1.Pod, chooserErr error) *env {
	client := fake.NewClientset(pod)
	e := &env{runner: &fakeRunner{res: ship.Result{Totals: manifest.Totals{Files: 2, Bytes: 30, Skipped: 1},
		SkippedByType: map[string]int{"symlink": 1}, Completion: time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)}},
		client: client, recorder: record.NewFakeRecorder(100), ended: make(chan error, 100)}
	e.h = &Handler{Runner: e.runner, Chooser: fakeChooser{err: chooserErr}, Status: status.PatchWriter{Client: client},
		Recorder: e.recorder, Metrics: metrics.New(),
		Settings: Settings{Policy: policy.Default, Limits: func() ship.Limits { return ship.Limits{} }, Dir: "/collect"},
		Clock:    testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		Work:     e.newWork(0)}
	return e
}

// newWork is an executor with n slots whose ended work reports to e.ended.
func (e *env) newWork(n int) *executor.Executor {
	w := executor.New(n)
	w.Done = func(_ context.Context, _ string, err error) { e.ended <- err }
	return w
}

// sync runs Sync as the controller does and, when it started a collection, waits for the
// executor to finish it and returns what the collection ended with (what the controller
// would requeue the pod with).
func (e *env) sync(ctx context.Context, pod *corev1.Pod) error {
	err := e.h.Sync(ctx, pod)
	for errors.Is(err, errFollowEnding) { // the controller syncs again once the loop ended
		if done := e.h.Work.LoopDone(pod.UID); done != nil {
			<-done
		}
		err = e.h.Sync(ctx, pod)
	}
	if err != nil {
		return err
	}
	e.h.Work.Wait()
	select {
	case err := <-e.ended:
		return err
	default:
		return nil
	}
}

// refresh returns the pod as the API server has it now, as the informer would deliver it.
func (e *env) refresh(t *testing.T) *corev1.Pod {
	t.Helper()
	p, err := e.client.CoreV1().Pods("ns").Get(t.Context(), "mysql", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) status(t *testing.T) status.Status {
	t.Helper()
	var s status.Status
	if err := json.Unmarshal([]byte(e.refresh(t).Annotations[status.Annotation]), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) events() []string {
	var out []string
	for {
		select {
		case ev := <-e.recorder.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func TestSyncSucceedsOnceThenTriggerReruns(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	st := e.status(t)
	if st.Phase != status.Succeeded || st.Reason != failure.Succeeded || st.Files != 2 || st.Bytes != 30 || st.Skipped != 1 ||
		st.Collection != "20260101T000000Z-"+st.Request[:8] || st.Destination != "podcopy/analysis-0/store:/collect/ns/mysql/"+st.Collection {
		t.Fatalf("status %+v", st)
	}
	evs := e.events()
	if len(evs) != 2 || !strings.HasPrefix(evs[0], "Normal CollectionStarted") || !strings.HasPrefix(evs[1], "Normal CollectionSucceeded") {
		t.Fatalf("events %q", evs)
	}
	job := e.runner.jobs[0]
	if job.Header.Source.Image != "mysql:8" || job.Header.Source.ImageID != "sha256:abc" || job.Header.Source.Node != "n1" || job.Source.Container != "db" {
		t.Fatalf("job %+v", job.Header)
	}
	// Same request again (from a stale cache, then from the refreshed pod, then from a new agent).
	for _, p := range []*corev1.Pod{pod, e.refresh(t)} {
		if err := e.sync(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	fresh := newEnv(e.refresh(t), nil)
	if err := fresh.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	if len(e.runner.jobs) != 1 || len(fresh.runner.jobs) != 0 {
		t.Fatalf("request ran again: %d, %d", len(e.runner.jobs), len(fresh.runner.jobs))
	}
	p := e.refresh(t)
	p.Annotations[request.AnnotationTrigger] = "again"
	if err := e.sync(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if len(e.runner.jobs) != 2 {
		t.Fatal("new trigger did not run")
	}
	// The clock has not moved: the second collection starts in the next second, so the
	// pod's ids (which retention orders) grow.
	if first, second := e.runner.jobs[0].Header.Collection, e.runner.jobs[1].Header.Collection; !strings.HasPrefix(second, "20260101T000001Z-") || second <= first {
		t.Fatalf("a later collection's id %s does not follow %s", second, first)
	}
	if got := testutil.ToFloat64(e.h.Metrics.Collections.WithLabelValues(metrics.ResultSucceeded)); got != 2 {
		t.Fatalf("succeeded metric %v", got)
	}
	if got := testutil.ToFloat64(e.h.Metrics.ShippedBytes); got != 60 {
		t.Fatalf("bytes metric %v", got)
	}
}

func TestSyncRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ann        map[string]string
		chooserErr error
		want       string
	}{
		{name: "relative path", ann: map[string]string{request.AnnotationCollect: "var/log/x"}, want: "not an absolute path"},
		{name: "denied", ann: map[string]string{request.AnnotationCollect: "/etc/shadow"}, want: "denied by policy"},
		{name: "foreign destination", ann: map[string]string{request.AnnotationCollect: "/var/log/x", request.AnnotationDestination: "evil"},
			chooserErr: &failure.Invalid{Reason: "podcopy/destination \"evil\" is not an analysis pod"}, want: "is not an analysis pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pod := sourcePod(tt.ann, corev1.PodRunning)
			e := newEnv(pod, tt.chooserErr)
			for range 2 {
				if err := e.sync(t.Context(), e.refresh(t)); err != nil {
					t.Fatal(err)
				}
			}
			st := e.status(t)
			if st.Phase != status.Rejected || !strings.Contains(st.Message, tt.want) {
				t.Fatalf("status %+v", st)
			}
			evs := e.events()
			if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning RequestRejected") || !strings.Contains(evs[0], tt.want) {
				t.Fatalf("events %q", evs)
			}
			if len(e.runner.jobs) != 0 {
				t.Fatal("rejected request ran")
			}
			if got := testutil.ToFloat64(e.h.Metrics.Collections.WithLabelValues(metrics.ResultRejected)); got != 1 {
				t.Fatalf("rejected metric %v", got)
			}
		})
	}
}

func TestSyncWaits(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/x"}, corev1.PodPending)
	e := newEnv(pod, nil)
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Pending || !strings.Contains(st.Message, "Running") {
		t.Fatalf("status %+v", st)
	}
	running := sourcePod(pod.Annotations, corev1.PodRunning)
	e.h.Chooser = fakeChooser{err: &destination.NotReadyError{Reason: "no Ready analysis pod"}}
	var retry *RetryError
	if err := e.sync(t.Context(), running); !errors.As(err, &retry) {
		t.Fatalf("err = %v, want RetryError", err)
	}
	if len(e.runner.jobs) != 0 {
		t.Fatal("ran without destination")
	}
}

func TestSyncFails(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/missing"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.runner.err = errors.New("/var/log/missing: no such file or directory in container db")
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	st := e.status(t)
	if st.Phase != status.Failed || !strings.Contains(st.Message, "/var/log/missing") || st.Reason != failure.Failed {
		t.Fatalf("status %+v", st)
	}
	evs := e.events()
	if len(evs) != 2 || !strings.HasPrefix(evs[1], "Warning CollectionFailed") || !strings.Contains(evs[1], "/var/log/missing") {
		t.Fatalf("events %q", evs)
	}
	// A failed request is final until the trigger changes.
	if err := e.sync(t.Context(), e.refresh(t)); err != nil || len(e.runner.jobs) != 1 {
		t.Fatalf("failed request re-ran: %v %d", err, len(e.runner.jobs))
	}
}

type blockingRunner struct{ started chan struct{} }

func (b blockingRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	close(b.started)
	<-ctx.Done()
	return ship.Result{}, context.Cause(ctx)
}

func TestSyncShutdownRecordsReason(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/x"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	br := blockingRunner{started: make(chan struct{})}
	e.h.Runner = br
	ctx, cancel := context.WithCancelCause(t.Context())
	go func() { <-br.started; cancel(errShutdownForTest) }()
	if err := e.sync(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Failed || st.Message != errShutdownForTest.Error() {
		t.Fatalf("status %+v", st)
	}
}

var errShutdownForTest = errors.New("agent shutting down: the collection was interrupted after the shutdown grace period")

// progressRunner moves a collection forward in steps, as ship does while streaming; after
// each step it moves the fake clock one progress interval on and waits until the status
// shows the step (written tells it what was last written).
type progressRunner struct {
	steps    int
	clock    *testclock.FakeClock
	interval time.Duration
	written  func() int // the files of the last progress write
}

func (r progressRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	job.Progress.Expected.Store(int64(r.steps) * 100)
	for i := range r.steps {
		job.Progress.Files.Add(1)
		job.Progress.Bytes.Add(100)
		for r.written() != i+1 {
			if r.clock.HasWaiters() { // the progress ticker
				r.clock.Step(r.interval)
			}
			goruntime.Gosched()
		}
	}
	return ship.Result{Totals: manifest.Totals{Files: r.steps, Bytes: int64(r.steps) * 100}}, nil
}

// TestRunningStatusShowsProgress: while Running, files and bytes grow (and expectedBytes is
// there for a client's progress bar); the terminal status is the last write.
func TestRunningStatusShowsProgress(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/big.log", request.AnnotationRequestedBy: "alice"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.h.ProgressInterval = 2 * time.Second
	var mu sync.Mutex
	var seen []status.Status
	e.h.Runner = progressRunner{steps: 20, clock: e.h.Clock.(*testclock.FakeClock), interval: e.h.ProgressInterval, written: func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return 0
		}
		return seen[len(seen)-1].Files
	}}
	e.client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		var patch struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(a.(k8stesting.PatchAction).GetPatch(), &patch)
		var s status.Status
		if json.Unmarshal([]byte(patch.Metadata.Annotations[status.Annotation]), &s) == nil {
			mu.Lock()
			seen = append(seen, s)
			mu.Unlock()
		}
		return false, nil, nil
	})
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var progress int
	for i, s := range seen {
		if s.RequestedBy != "alice" {
			t.Fatalf("write %d: requestedBy %q", i, s.RequestedBy)
		}
		if s.Phase == status.Running && s.Bytes > 0 {
			progress++
			if s.ExpectedBytes != 2000 || s.Bytes > s.ExpectedBytes {
				t.Fatalf("write %d: %+v", i, s)
			}
		}
	}
	if progress != 20 || seen[len(seen)-1].Phase != status.Succeeded || seen[len(seen)-1].Bytes != 2000 {
		t.Fatalf("%d progress writes; writes %+v", progress, seen)
	}
}

// toolRunner fails like a distroless container when asked to use the container's tar.
type toolRunner struct {
	mu    sync.Mutex
	tools []bool // per run: read with the container's own tools
	gzip  []bool // per run: compressed
}

func (r *toolRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tools = append(r.tools, job.Reader == nil)
	r.gzip = append(r.gzip, job.Gzip)
	if job.Reader == nil {
		return ship.Result{}, &exec.MissingCommandError{Command: "tar", Err: errors.New(`exec: "tar": executable file not found in $PATH`)}
	}
	return ship.Result{Totals: manifest.Totals{Files: 1, Bytes: 3}}, nil
}

type fakeHelpers struct{}

func (fakeHelpers) Ensure(ctx context.Context, pod *corev1.Pod, container string) (helpercontainer.Helper, error) {
	return helpercontainer.Helper{Target: exec.Target{Namespace: pod.Namespace, Pod: pod.Name, Container: "podcopy"}, Command: []string{"/podcopy-agent", "source", "--pid=1"}}, nil
}

// TestAutoFallsBackToTheHelperOnce: auto reads a container without tar through the helper,
// says so in an Event, and reads it through the helper at once afterwards; tar fails with
// the fix in its message.
func TestAutoFallsBackToTheHelperOnce(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/a.log"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	r := &toolRunner{}
	e.h.Runner, e.h.Helpers = r, fakeHelpers{}
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Succeeded {
		t.Fatalf("status %+v", st)
	}
	if evs := strings.Join(e.events(), "\n"); !strings.Contains(evs, ReasonHelperFallback+" container db has no tar") {
		t.Fatalf("events %s", evs)
	}
	p := e.refresh(t)
	p.Annotations[request.AnnotationTrigger] = "again"
	if err := e.sync(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false}; !slices.Equal(r.tools, want) {
		t.Fatalf("runs with the container's tools %v, want %v", r.tools, want)
	}
	p = e.refresh(t)
	p.Annotations[request.AnnotationTrigger], p.Annotations[request.AnnotationSource] = "tar", "tar"
	if err := e.sync(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Failed || !strings.Contains(st.Message, "use podcopy/source=helper") {
		t.Fatalf("tar on a container without it: %+v", st)
	}
}

// TestCompressionPerSource: compression gzip compresses every collection, none none, and
// auto only those read through the helper (its codec is fast, busybox gzip is not).
func TestCompressionPerSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		compression string
		want        []bool // the fallen-back run (container's tar), then the helper's two
	}{
		{"none", []bool{false, false, false}},
		{"gzip", []bool{true, true, true}},
		{"auto", []bool{false, true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.compression, func(t *testing.T) {
			t.Parallel()
			pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/a.log"}, corev1.PodRunning)
			e := newEnv(pod, nil)
			r := &toolRunner{}
			e.h.Runner, e.h.Helpers = r, fakeHelpers{}
			e.h.Settings.Compression = tt.compression
			if err := e.sync(t.Context(), pod); err != nil {
				t.Fatal(err)
			}
			p := e.refresh(t)
			p.Annotations[request.AnnotationTrigger] = "again"
			if err := e.sync(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.gzip, tt.want) {
				t.Fatalf("compressed runs %v, want %v", r.gzip, tt.want)
			}
		})
	}
}

// TestQuotaRefusesBeforeWriting (issue 20): a namespace over destination.quota in the
// analysis pod gets a Failed status with reason QuotaExceeded and an Event, and nothing
// runs; under the quota, the collection runs holding a reservation that grows as it writes
// and is released when it ends.
func TestQuotaRefusesBeforeWriting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer string // what reserve.sh prints
		want   status.Phase
	}{
		{name: "over", answer: "refused bytes 2097152 1\n", want: status.Failed},
		{name: "under", answer: "granted 524288 524288 1\n", want: status.Succeeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
			e := newEnv(pod, nil)
			e.h.Settings.Quota = destination.Quota{Bytes: "1Mi"}
			var mu sync.Mutex
			var asked []string
			e.h.Exec = exectest.Func(func(ctx context.Context, req exec.Request) error {
				mu.Lock()
				defer mu.Unlock()
				switch cmd := req.Command; {
				case len(cmd) > 3 && cmd[3] == "podcopy-reserve":
					asked = append(asked, "reserve "+cmd[7])
					_, err := io.WriteString(req.Stdout, tc.answer)
					return err
				case cmd[0] == "rm":
					asked = append(asked, "release "+cmd[len(cmd)-1])
					return nil
				}
				return fmt.Errorf("unexpected %v", req.Command)
			})
			if err := e.sync(t.Context(), pod); err != nil {
				t.Fatal(err)
			}
			st := e.status(t)
			if st.Phase != tc.want {
				t.Fatalf("status %+v", st)
			}
			if tc.want == status.Failed {
				if st.Reason != failure.QuotaExceeded || !strings.Contains(st.Message, "destination.quota.bytes=1Mi") || len(e.runner.jobs) != 0 {
					t.Fatalf("status %+v, %d jobs run", st, len(e.runner.jobs))
				}
				if evs := e.events(); len(evs) != 1 || !strings.Contains(evs[0], "Warning CollectionFailed collection refused") {
					t.Fatalf("events %q", evs)
				}
				return
			}
			q := e.runner.jobs[0].Quota
			if q == nil {
				t.Fatal("the job holds no reservation")
			}
			// Within the grant, nothing is asked; past it, the reservation grows.
			if ok, _, err := q.Reserve(t.Context(), 512<<10); !ok || err != nil {
				t.Fatalf("within the grant: %v %v", ok, err)
			}
			ok, reason, err := q.Reserve(t.Context(), 600<<10)
			if ok || err != nil || !strings.Contains(reason, "524288 bytes were left") {
				t.Fatalf("past what is left: %v %q %v", ok, reason, err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := []string{"reserve 67108864", "release /collect/ns/.quota/mysql_" + st.Collection, "reserve 67633152"}
			if !slices.Equal(asked, want) {
				t.Fatalf("asked %q, want %q", asked, want)
			}
		})
	}
}

// TestSyncFailsOnAnUnreachableNode: a transient failure on a node that is not Ready ends
// with reason NodeUnreachable and says what the Node says.
func TestSyncFailsOnAnUnreachableNode(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/app.log"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.h.RetryBase = time.Millisecond
	e.runner.err = errors.New("exec in ns/pod/c: connection reset by peer")
	e.h.NodeState = func(node string) string { return "node " + node + " is not Ready since 2026-12-02T10:00:00Z" }
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	st := e.status(t)
	if st.Phase != status.Failed || st.Reason != failure.NodeUnreachable || !strings.Contains(st.Message, "is not Ready since") ||
		!strings.Contains(st.Message, "connection reset") {
		t.Fatalf("status %+v", st)
	}
}
