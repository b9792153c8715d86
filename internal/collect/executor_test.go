package collect

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/internal/executor"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
)

// gatedRunner holds every collection until its pod's gate is closed, and records, per pod,
// when the collection began.
type gatedRunner struct {
	mu      sync.Mutex
	gates   map[string]chan struct{}
	started map[string]chan struct{}
}

func newGatedRunner(pods ...string) *gatedRunner {
	r := &gatedRunner{gates: map[string]chan struct{}{}, started: map[string]chan struct{}{}}
	for _, p := range pods {
		r.gates[p], r.started[p] = make(chan struct{}), make(chan struct{})
	}
	return r
}

func (r *gatedRunner) Run(ctx context.Context, job ship.Job) (ship.Result, error) {
	r.mu.Lock()
	gate, started := r.gates[job.Source.Pod], r.started[job.Source.Pod]
	r.mu.Unlock()
	close(started)
	select {
	case <-gate:
		return ship.Result{Totals: manifest.Totals{Files: 1, Bytes: 1}}, nil
	case <-ctx.Done():
		return ship.Result{}, context.Cause(ctx)
	}
}

// statusLog records every status each pod's patches wrote, in order.
type statusLog struct {
	mu  sync.Mutex
	per map[string][]status.Status
}

func (l *statusLog) record(pod string, st status.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.per[pod] = append(l.per[pod], st)
}

func (l *statusLog) of(pod string) []status.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]status.Status(nil), l.per[pod]...)
}

// recordingWriter is a status.Writer that keeps what it is asked to write.
type recordingWriter struct {
	inner status.Writer
	log   *statusLog
}

func (w recordingWriter) Write(ctx context.Context, pod *corev1.Pod, st status.Status) error {
	w.log.record(pod.Name, st)
	return w.inner.Write(ctx, pod, st)
}

func namedPod(name string, ann map[string]string) *corev1.Pod {
	p := sourcePod(ann, corev1.PodRunning)
	p.Name, p.UID = name, types.UID("uid-"+name)
	return p
}

// TestSyncOnlyDecides: with every slot held by a slow collection, a rejection on another
// pod completes at once (Sync never runs a collection on the controller's worker); a collection that has no slot yet says Pending with its
// place in line, and Running is written only once it holds a slot.
func TestSyncOnlyDecides(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	busy := []string{"a1", "a2", "a3", "a4"}
	runner := newGatedRunner(append(busy, "c")...)
	var pods []*corev1.Pod
	var objs []runtime.Object
	ann := map[string]string{request.AnnotationCollect: "/var/log/x"}
	for _, n := range busy {
		pods = append(pods, namedPod(n, ann))
		objs = append(objs, pods[len(pods)-1])
	}
	bad := namedPod("b", map[string]string{request.AnnotationCollect: "relative/path"})
	queued := namedPod("c", ann)
	followed := namedPod("f", map[string]string{request.AnnotationCollect: "/var/log/app.log", request.AnnotationMode: "follow"})
	client := fake.NewClientset(append(objs, bad, queued, followed)...)
	log := &statusLog{per: map[string][]status.Status{}}
	ended := make(chan string, 10)
	work := newWorkFor(4, ended)
	h := &Handler{Runner: runner, Chooser: fakeChooser{}, Status: recordingWriter{inner: status.PatchWriter{Client: client}, log: log},
		Recorder: record.NewFakeRecorder(100), Metrics: metrics.New(),
		Settings: Settings{Policy: policy.Default, Limits: func() ship.Limits { return ship.Limits{} }, Dir: "/collect"},
		Work:     work}
	ctx := t.Context()
	for _, p := range pods {
		if err := h.Sync(ctx, p); err != nil {
			t.Fatal(err)
		}
		<-runner.started[p.Name]
	}
	// Every slot is held. The rejection lands while they all still run.
	if err := h.Sync(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if sts := log.of("b"); len(sts) != 1 || sts[0].Phase != status.Rejected {
		t.Fatalf("b's statuses %+v", sts)
	}
	// A follow whose first tick waits for a slot is stopped at once, and ends without one.
	if err := h.Sync(ctx, followed); err != nil {
		t.Fatal(err)
	}
	unfollowed := followed.DeepCopy()
	delete(unfollowed.Annotations, request.AnnotationCollect)
	if err := h.Sync(ctx, unfollowed); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the follow to end while every slot is held", func() bool {
		sts := log.of("f")
		return len(sts) > 0 && sts[len(sts)-1].Phase == status.Succeeded && strings.Contains(sts[len(sts)-1].Message, "podcopy/collect was removed")
	})
	// A fifth collection waits for a slot: Pending, first in line, and no Running.
	if err := h.Sync(ctx, queued); err != nil {
		t.Fatal(err)
	}
	eventually(t, "c's Pending status", func() bool { return len(log.of("c")) == 1 })
	if sts := log.of("c"); sts[0].Phase != status.Pending || !strings.Contains(sts[0].Message, "1st in line (concurrency=4)") {
		t.Fatalf("c's statuses %+v", sts)
	}
	// Syncing c again while it waits starts nothing more.
	if err := h.Sync(ctx, queued); err != nil {
		t.Fatal(err)
	}
	for _, n := range busy {
		if sts := log.of(n); len(sts) != 1 || sts[0].Phase != status.Running {
			t.Fatalf("%s's statuses while it runs %+v", n, sts)
		}
	}
	if len(log.of("c")) != 1 {
		t.Fatalf("c was written while it had no slot: %+v", log.of("c"))
	}
	close(runner.gates["a1"]) // a slot frees: c runs
	<-runner.started["c"]
	close(runner.gates["c"])
	for _, n := range busy[1:] {
		close(runner.gates[n])
	}
	work.Wait()
	if sts := log.of("c"); len(sts) != 3 || sts[1].Phase != status.Running || sts[2].Phase != status.Succeeded {
		t.Fatalf("c's statuses %+v", sts)
	}
	got := map[string]bool{}
	for range 5 {
		got[<-ended] = true
	}
	if len(got) != 5 {
		t.Fatalf("the executor asked to sync again %v, want the five collections' pods", got)
	}
}

// TestForgetStopsAQueuedCollection: a collection waiting for a slot whose pod is deleted
// never runs.
func TestForgetStopsAQueuedCollection(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	runner := newGatedRunner("a", "c")
	ann := map[string]string{request.AnnotationCollect: "/var/log/x"}
	a, c := namedPod("a", ann), namedPod("c", ann)
	client := fake.NewClientset(a, c)
	work := newWorkFor(1, make(chan string, 10))
	h := &Handler{Runner: runner, Chooser: fakeChooser{}, Status: status.PatchWriter{Client: client},
		Recorder: record.NewFakeRecorder(100), Metrics: metrics.New(),
		Settings: Settings{Policy: policy.Default, Limits: func() ship.Limits { return ship.Limits{} }, Dir: "/collect"},
		Work:     work}
	if err := h.Sync(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	<-runner.started["a"]
	if err := h.Sync(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	h.Forget(c.UID)
	eventually(t, "c's work to end", func() bool { return !work.Running(c.UID) })
	close(runner.gates["a"])
	work.Wait()
	select {
	case <-runner.started["c"]:
		t.Fatal("a deleted pod's queued collection ran")
	default:
	}
	p, err := client.CoreV1().Pods("ns").Get(t.Context(), "c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st status.Status
	_ = json.Unmarshal([]byte(p.Annotations[status.Annotation]), &st)
	if st.Phase == status.Running {
		t.Fatalf("c's status %+v", st)
	}
}

// newWorkFor is an executor with n slots that sends each ended work's pod name to ended.
func newWorkFor(n int, ended chan<- string) *executor.Executor {
	w := executor.New(n)
	w.Done = func(_ context.Context, key string, _ error) {
		_, name, _ := strings.Cut(key, "/")
		ended <- name
	}
	return w
}
