package collect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/layout"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testclock "k8s.io/utils/clock/testing"

	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/helpercontainer"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/source"
	"github.com/podcopy/podcopy/pkg/status"
)

// eventually polls cond (a condition, not a timing assertion: the deadline only bounds a hang).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never happened: %s", what)
}

// startFollow syncs a Running pod with ann, its follow commands run as local processes
// writing under dst.
func startFollow(t *testing.T, ann map[string]string, dst string) (*env, *corev1.Pod) {
	t.Helper()
	pod := sourcePod(ann, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.h.Exec = &exectest.Local{}
	e.h.Settings.Dir = dst
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	return e, pod
}

func TestFollowShipsThenStopsWhenTheAnnotationIsRemoved(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	log := filepath.Join(src, "app.log")
	if err := os.WriteFile(log, []byte("line 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, pod := startFollow(t, map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow", request.AnnotationInterval: "5s"}, dst)
	dest, _ := followPaths(dst, "ns", "mysql", "db", log)
	eventually(t, "first tick shipped", func() bool {
		b, _ := os.ReadFile(dest)
		return string(b) == "line 1\n"
	})
	eventually(t, "status running", func() bool {
		st, _ := status.Get(e.refresh(t))
		return st.Phase == status.Running && st.Bytes == 7 && st.Collection == "follow" &&
			st.Destination == "podcopy/analysis-0/store:"+filepath.Join(dst, "ns/mysql/follow/db")
	})
	// The same request again (status writes, resyncs) does not start a second loop.
	if err := e.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	p := e.refresh(t)
	delete(p.Annotations, request.AnnotationCollect)
	if _, err := e.client.CoreV1().Pods("ns").Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	e.followEnded(t, pod.UID) // Sync does not wait for it: the loop writes why it ended
	st := e.status(t)
	if st.Phase != status.Succeeded || !strings.Contains(st.Message, "follow stopped: podcopy/collect was removed") {
		t.Fatalf("status %+v", st)
	}
	evs := strings.Join(e.events(), "\n")
	if !strings.Contains(evs, "Normal CollectionStarted following") || !strings.Contains(evs, "Normal FollowStopped") {
		t.Fatalf("events %s", evs)
	}
	e.h.StopFollowing()
	if e.h.Work.HasLoop(pod.UID) {
		t.Fatal("a loop is left")
	}
}

func TestFollowGlob(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	for _, n := range []string{"a.log", "b.log", "c.txt"} {
		if err := os.WriteFile(filepath.Join(src, n), []byte(n+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := startFollow(t, map[string]string{request.AnnotationCollect: filepath.Join(src, "*.log"), request.AnnotationMode: "follow"}, dst)
	eventually(t, "both matches shipped", func() bool {
		st, _ := status.Get(e.refresh(t))
		return st.Files == 2 && st.Bytes == 12
	})
	for _, n := range []string{"a.log", "b.log"} {
		dest, _ := followPaths(dst, "ns", "mysql", "db", filepath.Join(src, n))
		if b, err := os.ReadFile(dest); err != nil || string(b) != n+"\n" {
			t.Fatalf("%s: %q %v", n, b, err)
		}
	}
	e.h.StopFollowing()
}

func TestAgentShutdownLeavesFollowRunningForTheNextAgent(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	log := filepath.Join(src, "app.log")
	e, _ := startFollow(t, map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow"}, t.TempDir())
	eventually(t, "status written", func() bool { st, _ := status.Get(e.refresh(t)); return st.Phase == status.Running })
	e.h.StopFollowing()
	if st := e.status(t); st.Phase != status.Running {
		t.Fatalf("shutdown changed the status: %+v", st)
	}
}

// TestMain doubles as the podcopy helper ("podcopy-source ..."), so a follow through the
// helper runs the real helper as a separate process.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "podcopy-source" {
		os.Exit(source.Main(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// shellless runs commands locally, except that the source container ("db") has no sh: its
// runtime's answer is an API error, as for a distroless image.
type shellless struct{ local *exectest.Local }

func (s shellless) Exec(ctx context.Context, req exec.Request) error {
	if req.Container == "db" && req.Command[0] == "sh" {
		return &exec.MissingCommandError{Command: "sh", Err: errors.New(`exec: "sh": executable file not found in $PATH`)}
	}
	return s.local.Exec(ctx, req)
}

// localHelpers starts no container: the helper is this test binary, reading this machine.
type localHelpers struct{}

func (localHelpers) Ensure(ctx context.Context, pod *corev1.Pod, container string) (helpercontainer.Helper, error) {
	return helpercontainer.Helper{Target: exec.Target{Namespace: pod.Namespace, Pod: pod.Name, Container: "podcopy"},
		Command: []string{os.Args[0], "podcopy-source", "--root=/"}}, nil
}

// TestFollowFallsBackToTheHelper: with podcopy/source auto, a container without sh is
// followed through the helper from the first tick, and an Event says so.
func TestFollowFallsBackToTheHelper(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	log := filepath.Join(src, "app.log")
	if err := os.WriteFile(log, []byte("line 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := sourcePod(map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow", request.AnnotationInterval: "5s"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.h.Exec = shellless{local: &exectest.Local{}}
	e.h.Helpers = localHelpers{}
	e.h.Settings.Dir = dst
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	dest, _ := followPaths(dst, "ns", "mysql", "db", log)
	eventually(t, "first tick shipped through the helper", func() bool {
		b, _ := os.ReadFile(dest)
		return string(b) == "line 1\n"
	})
	e.h.StopFollowing()
	if evs := strings.Join(e.events(), "\n"); !strings.Contains(evs, ReasonHelperFallback+" container db has no sh; following through the podcopy helper") {
		t.Fatalf("events %s", evs)
	}
}

func TestTerminatingPodGetsALastShipment(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	log := filepath.Join(src, "app.log")
	if err := os.WriteFile(log, []byte("early\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, _ := startFollow(t, map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow", request.AnnotationInterval: "1h"}, dst)
	dest, _ := followPaths(dst, "ns", "mysql", "db", log)
	eventually(t, "first tick shipped", func() bool { b, _ := os.ReadFile(dest); return string(b) == "early\n" })
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("last words\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	terminating := e.refresh(t)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	if err := e.sync(t.Context(), terminating); err != nil {
		t.Fatal(err)
	}
	e.followEnded(t, terminating.UID) // Sync does not wait for the last tick
	if b, _ := os.ReadFile(dest); string(b) != "early\nlast words\n" {
		t.Fatalf("dest %q", b)
	}
}

func TestModeChangeStopsFollowing(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "app.log")
	e, pod := startFollow(t, map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow"}, t.TempDir())
	once := e.refresh(t)
	once.Annotations[request.AnnotationMode] = "once"
	if err := e.sync(t.Context(), once); err != nil {
		t.Fatal(err)
	}
	if e.h.followingID(pod.UID) != "" || len(e.runner.jobs) != 1 {
		t.Fatalf("still following %q, once jobs %d", e.h.followingID(pod.UID), len(e.runner.jobs))
	}
	if !strings.Contains(strings.Join(e.events(), "\n"), "FollowStopped follow stopped: podcopy/mode changed") {
		t.Fatalf("events %q", e.events())
	}
}

// followEnded waits until uid's follow loop has ended.
func (e *env) followEnded(t *testing.T, uid types.UID) {
	t.Helper()
	if done := e.h.Work.LoopDone(uid); done != nil {
		<-done
	}
}

func followPaths(dst, ns, pod, container, src string) (string, string) {
	l, err := layout.New(dst, ns, pod)
	if err != nil {
		panic(err)
	}
	file, state, err := l.FollowFile(container, src)
	if err != nil {
		panic(err)
	}
	return file, state
}

// TestFollowEndsAtItsCap (issue 20): a followed pod's harvested files cannot grow without
// bound: past policy.maxFollowBytes following ends, Failed with reason LimitExceeded and a
// Warning Event, and it is not started again.
func TestFollowEndsAtItsCap(t *testing.T) {
	t.Parallel()
	e, pod, _, _ := followedLog(t, strings.Repeat("x", 100)+"\n")
	e.h.Settings.Limits = func() ship.Limits { return ship.Limits{MaxFollowBytes: 50} }
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the follow ends at its cap", func() bool {
		st, _ := status.Get(e.refresh(t))
		return st.Phase == status.Failed
	})
	st := e.status(t)
	if st.Reason != failure.LimitExceeded || !strings.Contains(st.Message, "policy.maxFollowBytes=50") {
		t.Fatalf("status %+v", st)
	}
	// The final status is written before its Event (whoever sees the Event finds the status).
	eventually(t, "the CollectionFailed Event", func() bool {
		return strings.Contains(strings.Join(e.events(), "\n"), "Warning CollectionFailed follow stopped")
	})
	eventually(t, "the loop to end at its cap", func() bool { return !e.h.Work.HasLoop(pod.UID) })
	if err := e.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	if e.h.Work.HasLoop(pod.UID) {
		t.Fatal("following started again after its cap")
	}
	e.h.StopFollowing()
}

// TestFollowTicksCountWithinConcurrency (issue 20): a follow tick takes one of the agent's
// concurrency slots, as a collection does, so follow loops cannot take more than the
// configured concurrency.
func TestFollowTicksCountWithinConcurrency(t *testing.T) {
	t.Parallel()
	e, pod, log, dst := followedLog(t, "line 1\n")
	e.h.Work = e.newWork(1)
	release, err := e.h.Work.Acquire(t.Context()) // a collection holds the only slot
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	dest, _ := followPaths(dst, "ns", "mysql", "db", log)
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("a follow tick ran while every slot was taken")
	}
	release() // the collection ends
	eventually(t, "the tick once a slot is free", func() bool {
		b, _ := os.ReadFile(dest)
		return string(b) == "line 1\n"
	})
	e.h.StopFollowing()
}

// followedLog writes content to a log file and returns a Running pod that asks to follow it
// every 5s (not synced yet), its env with follow commands run as local processes, the log
// and the destination directory.
func followedLog(t *testing.T, content string) (*env, *corev1.Pod, string, string) {
	t.Helper()
	src, dst := t.TempDir(), t.TempDir()
	log := filepath.Join(src, "app.log")
	if err := os.WriteFile(log, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := sourcePod(map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow", request.AnnotationInterval: "5s"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.h.Exec = &exectest.Local{}
	e.h.Settings.Dir = dst
	return e, pod, log, dst
}

// TestFollowUntil: a follow with podcopy/follow-until asks to be synced again at that time
// (a fake clock; no sleeping); once it has passed, the loop ships what is left and the
// status says why it ended; a later sync does not start it again.
func TestFollowUntil(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	log := filepath.Join(src, "app.log")
	if err := os.WriteFile(log, []byte("line 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := sourcePod(map[string]string{request.AnnotationCollect: log, request.AnnotationMode: "follow", request.AnnotationInterval: "5s",
		request.AnnotationFollowUntil: "2026-01-01T01:00:00Z"}, corev1.PodRunning)
	e := newEnv(pod, nil)
	e.h.Exec = &exectest.Local{}
	e.h.Settings.Dir = dst
	clock := testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e.h.Clock = clock
	var retry *RetryError
	if err := e.sync(t.Context(), pod); !errors.As(err, &retry) || retry.After != time.Hour {
		t.Fatalf("sync: %v, want a requeue in 1h", err)
	}
	eventually(t, "first tick shipped", func() bool {
		st, _ := status.Get(e.refresh(t))
		return st.Phase == status.Running && st.Bytes == 7
	})
	clock.Step(time.Hour)
	if err := e.sync(t.Context(), e.refresh(t)); err != nil {
		t.Fatal(err)
	}
	st := e.status(t)
	if st.Phase != status.Succeeded || !strings.Contains(st.Message, "podcopy/follow-until 2026-01-01T01:00:00Z has passed") {
		t.Fatalf("status %+v", st)
	}
	if err := e.sync(t.Context(), e.refresh(t)); err != nil || e.h.followingID(pod.UID) != "" {
		t.Fatalf("a later sync: %v, following %q", err, e.h.followingID(pod.UID))
	}
	e.h.StopFollowing()
	// An agent that finds the time passed and no loop of its own (a restart) ends it too.
	e2 := newEnv(e.refresh(t), nil)
	e2.h.Clock = clock
	running := e.refresh(t)
	st.Phase, st.Message = status.Running, "following"
	b, _ := json.Marshal(st)
	running.Annotations[status.Annotation] = string(b)
	if err := e2.sync(t.Context(), running); err != nil {
		t.Fatal(err)
	}
	if got, _ := status.Get(e2.refresh(t)); got.Phase != status.Succeeded || !strings.Contains(got.Message, "has passed") {
		t.Fatalf("after a restart: %+v", got)
	}
}

// TestFirstTickAfter: the second tick of a follow comes within its interval, and not at
// the same offset for every follow.
func TestFirstTickAfter(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]bool{}
	for range 100 {
		d := firstTickAfter(30 * time.Second)
		if d < 15*time.Second || d > 30*time.Second {
			t.Fatalf("%s is outside [15s, 30s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct offsets in 100", len(seen))
	}
}

// TestFollowStopsAtTheNamespaceQuota: follow bytes count against destination.quota.bytes:
// with the namespace's share of the analysis pod used up (by another pod's collection), the
// follow ships nothing and ends Failed, QuotaExceeded, with a Warning Event.
func TestFollowStopsAtTheNamespaceQuota(t *testing.T) {
	t.Parallel()
	e, pod, log, dst := followedLog(t, "line 1\n")
	other := filepath.Join(dst, "ns", "other", "20260101T000000Z-01234567")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "big"), bytes.Repeat([]byte("x"), 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	e.h.Settings.Quota = destination.Quota{Bytes: "32Ki"}
	if err := e.sync(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the follow to end", func() bool {
		st, _ := status.Get(e.refresh(t))
		return st.Phase == status.Failed
	})
	st := e.status(t)
	if st.Reason != failure.QuotaExceeded || !strings.Contains(st.Message, "destination.quota.bytes=32Ki") {
		t.Fatalf("status %+v", st)
	}
	dest, _ := followPaths(dst, "ns", "mysql", "db", log)
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("the follow shipped past the quota")
	}
	var evs []string
	eventually(t, "the Warning Event", func() bool {
		evs = append(evs, e.events()...)
		return strings.Contains(strings.Join(evs, "\n"), "Warning CollectionFailed follow stopped: namespace ns uses")
	})
	e.h.StopFollowing()
}
