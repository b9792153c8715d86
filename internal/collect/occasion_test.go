package collect

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
)

// TestCollectOnRestart: a request deferred to restarts waits (Pending, Waiting) until the
// container restarts, then runs once per restart count, each with its own identity and
// occasion; the result of one stays on show until the next restart.
func TestCollectOnRestart(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log", request.AnnotationCollectOn: "restart"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Pending || st.Reason != failure.Waiting || !strings.Contains(st.Message, "a restart of container db") {
		t.Fatalf("before a restart: %+v", st)
	}
	if len(e.runner.jobs) != 0 {
		t.Fatal("ran before the container restarted")
	}
	var ids []string
	for _, restarts := range []int32{1, 1, 2} {
		pod = e.refresh(t)
		pod.Status.ContainerStatuses[0].RestartCount = restarts
		if err := e.sync(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		st := e.status(t)
		if st.Phase != status.Succeeded || st.Occasion != fmt.Sprintf("restart-%d", restarts) {
			t.Fatalf("after restart %d: %+v", restarts, st)
		}
		ids = append(ids, st.Request)
	}
	if len(e.runner.jobs) != 2 || ids[0] != ids[1] || ids[1] == ids[2] {
		t.Fatalf("%d runs, request ids %v: want one run per restart count", len(e.runner.jobs), ids)
	}
	if got := e.runner.jobs[1].Header.Occasion; got != "restart-2" {
		t.Fatalf("manifest occasion %q", got)
	}
}

type fakeRecords struct{ include []string }

func (f *fakeRecords) Gather(ctx context.Context, pod *corev1.Pod, include []string) ([]ship.RecordFile, func(), error) {
	f.include = include
	return []ship.RecordFile{{Record: manifest.Record{Name: "_pod/pod.json", Kind: "spec"}, Open: func() (io.ReadCloser, int64, error) {
		return io.NopCloser(strings.NewReader("{}")), 2, nil
	}}}, func() {}, nil
}

// TestCollectOnTermination: a request deferred to termination waits while the pod runs and
// is collected once the pod has a deletion timestamp, with its records and its alert; a
// pod being deleted without it is left alone.
func TestCollectOnTermination(t *testing.T) {
	t.Parallel()
	pod := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log", request.AnnotationCollectOn: "termination",
		request.AnnotationInclude: "spec", request.AnnotationAlert: `{"source":"alertmanager","rule":"PodCompromised","id":"f1"}`}, corev1.PodRunning)
	e := newEnv(pod, nil)
	recs := &fakeRecords{}
	e.h.PodRecords = recs
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	if st := e.status(t); st.Phase != status.Pending || !strings.Contains(st.Message, "the pod's termination") {
		t.Fatalf("while running: %+v", st)
	}
	pod = e.refresh(t)
	pod.DeletionTimestamp = &metav1.Time{Time: e.h.now()}
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	st := e.status(t)
	if st.Phase != status.Succeeded || st.Occasion != "termination" || st.Alert == nil || st.Alert.Rule != "PodCompromised" {
		t.Fatalf("after deletion began: %+v", st)
	}
	if evs := strings.Join(e.events(), "\n"); !strings.Contains(evs, `for alertmanager alert "PodCompromised" (id f1) on termination`) {
		t.Fatalf("events %s", evs)
	}
	if len(e.runner.jobs) != 1 || len(e.runner.jobs[0].Records) != 1 || strings.Join(recs.include, ",") != "spec" || e.runner.jobs[0].Header.Alert.ID != "f1" {
		t.Fatalf("jobs %+v, include %v", e.runner.jobs, recs.include)
	}

	plain := sourcePod(map[string]string{request.AnnotationCollect: "/var/log/mysql/slow.log"}, corev1.PodRunning)
	plain.DeletionTimestamp = &metav1.Time{Time: e.h.now()}
	e2 := newEnv(plain, nil)
	if err := e2.sync(t.Context(), plain); err != nil || len(e2.runner.jobs) != 0 {
		t.Fatalf("a terminating pod without collect-on ran %d jobs (%v)", len(e2.runner.jobs), err)
	}
}
