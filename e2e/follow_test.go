//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/status"
)

// writerScript appends numbered lines to /var/log/app/app.log at about 20 per second
// through one open descriptor. `touch /tmp/rotate` renames the file to app.log.1, writes
// five more lines to the renamed file (a writer that has not reopened yet), then reopens
// app.log. `touch /tmp/stop` ends the writer and leaves /tmp/stopped.
const writerScript = `mkdir -p /var/log/app
(
  n=0 pad=0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz
  exec 3>>/var/log/app/app.log
  while ! [ -f /tmp/stop ]; do
    n=$((n+1)); echo "line $n $pad" >&3
    if [ -f /tmp/rotate ]; then
      rm /tmp/rotate
      mv /var/log/app/app.log /var/log/app/app.log.1
      for i in 1 2 3 4 5; do n=$((n+1)); echo "line $n late $pad" >&3; done
      exec 3>>/var/log/app/app.log
      touch /tmp/rotated
    fi
    sleep 0.05
  done
  touch /tmp/stopped
) &`

// followDest is where the agent appends a followed file (the layout's own answer; TestFollow
// spells SPEC §4's path out once).
func followDest(t *testing.T, ns, pod, container, path string) string {
	t.Helper()
	l, err := layout.New("/collect", ns, pod)
	if err != nil {
		t.Fatal(err)
	}
	file, _, err := l.FollowFile(container, path)
	if err != nil {
		t.Fatal(err)
	}
	return file
}

// followScenario drives the writer through a rotation and a disruption, then checks that the
// destination holds every line of every generation, in order, exactly once.
type followScenario struct {
	src      exec.Target
	dest     string        // destination file in the analysis pod
	interval time.Duration // the follow interval
	disrupt  func(t *testing.T)
	// tool is the argv prefix of touch, test and cat in the source container (the distroless
	// image has none: its own binary stands in); empty means the container's own.
	tool []string
}

func (s followScenario) cmd(argv ...string) []string {
	return append(append([]string{}, s.tool...), argv...)
}

func (s followScenario) run(t *testing.T) {
	dst := analysis(t)
	lines := func() int {
		out, err := run(t, dst, "sh", "-c", `[ -f "$1" ] && wc -l < "$1" || echo 0`, "sh", s.dest)
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	// The writer's nominal rate is 20 lines/s: the scenario spans about five intervals, two
	// before the rotation, one between it and the disruption, two after.
	perInterval := int(s.interval / (50 * time.Millisecond))
	waitFor(t, 2*time.Minute, "lines at the destination", func(ctx context.Context) (bool, error) { return lines() >= 2*perInterval, nil })
	mustRun(t, s.src, s.cmd("touch", "/tmp/rotate")...)
	waitFor(t, 30*time.Second, "rotation in the source", func(ctx context.Context) (bool, error) {
		_, err := run(t, s.src, s.cmd("test", "-f", "/tmp/rotated")...)
		return err == nil, nil
	})
	before := lines()
	waitFor(t, 2*time.Minute, "the new generation at the destination", func(ctx context.Context) (bool, error) {
		return lines() > before+perInterval, nil
	})
	s.disrupt(t)
	after := lines()
	waitFor(t, 3*time.Minute, "shipping after the disruption", func(ctx context.Context) (bool, error) {
		return lines() > after+2*perInterval, nil
	})
	mustRun(t, s.src, s.cmd("touch", "/tmp/stop")...)
	waitFor(t, 30*time.Second, "the writer to stop", func(ctx context.Context) (bool, error) {
		_, err := run(t, s.src, s.cmd("test", "-f", "/tmp/stopped")...)
		return err == nil, nil
	})
	stopped := time.Now()
	want := mustRun(t, s.src, s.cmd("cat", "/var/log/app/app.log.1", "/var/log/app/app.log")...)
	var got string
	_ = wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, 3*s.interval+time.Minute, true, func(ctx context.Context) (bool, error) {
		got, _ = run(t, dst, "cat", s.dest)
		return len(got) >= len(want), nil
	}) // on a timeout, checkLines says what is missing
	t.Logf("lag: the destination held the writer's last line %.1f s after it was written (interval %s)",
		time.Since(stopped).Seconds(), s.interval)
	checkLines(t, got, want)
}

// checkLines wants got == want, and want to be lines 1..N in order.
func checkLines(t *testing.T, got, want string) {
	t.Helper()
	gl, wl := strings.Split(strings.TrimSuffix(got, "\n"), "\n"), strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	for i, l := range gl {
		if f := strings.Fields(l); len(f) < 2 || f[1] != strconv.Itoa(i+1) {
			t.Fatalf("destination line %d is %q: a line is missing or repeated", i+1, l)
		}
	}
	if got != want {
		t.Fatalf("destination has %d lines (%d bytes), the source generations %d lines (%d bytes); last lines: destination %q, source %q",
			len(gl), len(got), len(wl), len(want), gl[max(0, len(gl)-2):], wl[max(0, len(wl)-2):])
	}
	t.Logf("destination = source generations: %d lines, %d bytes, no gap, no duplicate", len(gl), len(got))
}

func TestFollow(t *testing.T) {
	ns := namespace(t)
	sourcePod(t, ns, "writer", imageBusybox, writerScript)
	src := exec.Target{Namespace: ns, Pod: "writer", Container: "app"}
	annotate(t, ns, "writer", map[string]string{
		"podcopy/collect": "/var/log/app/*.log", "podcopy/mode": "follow", "podcopy/interval": "5s"}) // a glob: app.log.1 does not match
	var maxLag float64
	lagKey := fmt.Sprintf(`podcopy_follow_lag_bytes{container="app",namespace="%s",path="/var/log/app/app.log",pod="writer"}`, ns)
	followScenario{
		src: src, interval: 5 * time.Second,
		dest: fmt.Sprintf("/collect/%s/writer/follow/app/var/log/app/app.log", ns), // SPEC §4, spelled out once
		disrupt: func(t *testing.T) {
			waitEvent(t, ns, "writer", "FollowRotated")
			maxLag = max(maxLag, scrape(t)[lagKey])
			deleteAgentPod(t)
			maxLag = max(maxLag, scrape(t)[lagKey])
		},
	}.run(t)
	maxLag = max(maxLag, scrape(t)[lagKey])
	t.Logf("podcopy_follow_lag_bytes seen: max %.0f bytes (about one interval of writes)", maxLag)
	st, _ := getStatus(t, ns, "writer")
	if st.Phase != status.Running || st.Collection != "follow" || st.Bytes == 0 {
		t.Fatalf("status %+v", st)
	}
	if n := countEvents(t, ns, "writer", "FollowDataLost"); n != 0 {
		t.Fatalf("%d FollowDataLost events: %v", n, events(t, ns, "writer"))
	}
	// Removing the request stops following and says so.
	p, err := client.CoreV1().Pods(ns).Get(t.Context(), "writer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(p.Annotations, "podcopy/collect")
	if _, err := client.CoreV1().Pods(ns).Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "writer", "FollowStopped")
	st, _ = getStatus(t, ns, "writer")
	if st.Phase != status.Succeeded || !strings.Contains(st.Message, "follow stopped") {
		t.Fatalf("status after removal %+v", st)
	}
}

// deleteAgentPod deletes the agent pod and waits for the DaemonSet's replacement to be Ready.
func deleteAgentPod(t *testing.T) {
	t.Helper()
	old := agentPod(t)
	if err := client.CoreV1().Pods("podcopy").Delete(t.Context(), old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted agent pod %s", old.Name)
	waitFor(t, 2*time.Minute, "a new Ready agent pod", func(ctx context.Context) (bool, error) {
		p, err := clustertest.AgentPod(ctx, client, firstNode)
		return err == nil && p.UID != old.UID, nil
	})
}

// TestFollowAcrossASameNamePod (issue 20): a followed pod is deleted and a pod with the same
// name (a new UID) is followed: the new pod's harvested file holds only its own lines, the
// earlier pod's is kept whole under its UID.
func TestFollowAcrossASameNamePod(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	dst := analysis(t)
	file := followDest(t, ns, "same", "app", "/var/log/app/pod.log")
	follow := map[string]string{"podcopy/collect": "/var/log/app/pod.log", "podcopy/mode": "follow", "podcopy/interval": "5s"}
	first := sourcePod(t, ns, "same", imageBusybox, "mkdir -p /var/log/app && echo 'first pod' > /var/log/app/pod.log")
	annotate(t, ns, "same", follow)
	waitFor(t, time.Minute, "the first pod's line harvested", func(ctx context.Context) (bool, error) {
		out, _ := run(t, dst, "cat", file)
		return out == "first pod\n", nil
	})
	zero := int64(0)
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), "same", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the first pod gone", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(ctx, "same", metav1.GetOptions{})
		return err != nil, nil
	})
	second := sourcePod(t, ns, "same", imageBusybox, "mkdir -p /var/log/app && echo 'second' > /var/log/app/pod.log")
	if second.UID == first.UID {
		t.Fatal("the same UID")
	}
	annotate(t, ns, "same", follow)
	waitFor(t, time.Minute, "the second pod's line harvested", func(ctx context.Context) (bool, error) {
		out, _ := run(t, dst, "cat", file)
		return out == "second\n", nil
	})
	if out := mustRun(t, dst, "cat", file+".pod-"+string(first.UID)); out != "first pod\n" {
		t.Fatalf("the first pod's harvested file: %q", out)
	}
	t.Logf("%s holds the second pod's line; %s.pod-%s the first pod's", file, file, first.UID)
}
