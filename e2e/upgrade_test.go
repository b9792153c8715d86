//go:build e2e

package e2e

import (
	"context"
	"fmt"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/status"
)

// helm runs the project's helm (hack/cluster/helm.sh) from the repository's root.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := osexec.CommandContext(context.WithoutCancel(t.Context()), "bash", append([]string{helmBin()}, args...)...)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// agentUIDs are the UIDs of the Ready agent pods of nodes, by node (agentOn's).
func agentUIDs(t *testing.T, nodes []string) map[string]types.UID {
	t.Helper()
	out := map[string]types.UID{}
	for _, node := range nodes {
		out[node] = agentOn(t, node).UID
	}
	return out
}

// replaced fails unless every node's agent pod is a new one after step.
func replaced(t *testing.T, step string, before, after map[string]types.UID) {
	t.Helper()
	if len(before) < 2 || len(after) != len(before) {
		t.Fatalf("%s: agents before %v, after %v", step, before, after)
	}
	for node, uid := range before {
		if after[node] == uid || after[node] == "" {
			t.Fatalf("%s: the agent on %s was not replaced (%v -> %v)", step, node, uid, after[node])
		}
	}
}

// onceLoop asks pod for a collection, waits for it to end, and asks again, until stop is
// closed; it returns each request's final status. A request must end (Succeeded, or Failed
// after its retries) within five minutes, whatever the agents do meanwhile.
func onceLoop(ctx context.Context, ns, pod string, stop <-chan struct{}) ([]status.Status, error) {
	var done []status.Status
	for i := 1; ; i++ {
		select {
		case <-stop:
			return done, nil
		default:
		}
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"podcopy/collect":"/var/log/a.bin","podcopy/trigger":"upgrade-%d"}}}`, i)
		p, err := client.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			return done, err
		}
		prev, _ := status.Get(p)
		deadline := time.Now().Add(5 * time.Minute)
		for {
			if time.Now().After(deadline) {
				return done, fmt.Errorf("%s/%s: request %d did not end within 5 minutes", ns, pod, i)
			}
			time.Sleep(500 * time.Millisecond)
			p, err := client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
			if err != nil {
				continue // the API server is fine here; a blip is retried
			}
			st, ok := status.Get(p)
			if ok && st.Request != prev.Request && st.Done(st.Request) {
				done = append(done, st)
				// Keep the namespace under its quota (destination.quota.collections in the
				// e2e values): the collection was checked by its status; it goes.
				if target, dir, ok := strings.Cut(st.Destination, ":"); ok && st.Phase == status.Succeeded {
					if a, err := chooseAnalysis(ctx); err == nil && a.String() == target {
						_ = executor.Exec(ctx, exec.Request{Target: a, Command: []string{"rm", "-rf", "--", dir}})
					}
				}
				break
			}
		}
	}
}

// TestUpgradeUnderLoad: `helm upgrade` to a new agent image and `helm rollback` while once
// collections run back to back on both nodes and a follow runs on each: every once request
// ends Succeeded (retried where an agent was replaced mid-way), every follow resumes from its
// checkpoint (the harvested file equals the source: nothing lost or duplicated), and no
// staging directory is left behind. The new image is the same build under a second tag in
// every node's containerd: the pod template changes, so the DaemonSet replaces each agent
// twice (upgrade, rollback), which is what an upgrade does to collections in flight.
func TestUpgradeUnderLoad(t *testing.T) {
	local(t, "helm and containerd on this machine")
	node2 := secondNode(t)
	env := clusterEnv(t)
	for _, sock := range strings.Fields(env["CONTAINERD_SOCKS"]) {
		cmd := osexec.CommandContext(t.Context(), filepath.Join(env["BIN"], "ctr"), "--address", sock, "-n", "k8s.io", "images", "tag", "--force",
			"podcopy.local/podcopy-agent:dev", "podcopy.local/podcopy-agent:upgrade")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tagging the agent image in %s: %v\n%s", sock, err, out)
		}
	}
	ns := namespace(t)
	nodes := []string{firstNode, node2}
	for i, node := range nodes {
		pinnedPod(t, ns, fmt.Sprintf("followed-%d", i), node,
			`mkdir -p /var/log && (i=0; while [ $i -lt 700 ]; do i=$((i+1)); echo "line $i" >> /var/log/app.log; sleep 0.1; done; touch /tmp/written) &`)
		annotate(t, ns, fmt.Sprintf("followed-%d", i), map[string]string{"podcopy/collect": "/var/log/app.log", "podcopy/mode": "follow", "podcopy/interval": "5s"})
		pinnedPod(t, ns, fmt.Sprintf("once-%d", i), node, `mkdir -p /var/log && head -c 300000 /dev/urandom > /var/log/a.bin`)
	}
	for i := range nodes {
		pod := fmt.Sprintf("followed-%d", i)
		waitFor(t, time.Minute, pod+" to be followed", func(ctx context.Context) (bool, error) {
			s, ok := getStatus(t, ns, pod)
			return ok && s.Phase == status.Running && s.Bytes > 0, nil
		})
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	results := make([][]status.Status, len(nodes))
	errs := make([]error, len(nodes))
	for i := range nodes {
		wg.Go(func() {
			results[i], errs[i] = onceLoop(context.WithoutCancel(t.Context()), ns, fmt.Sprintf("once-%d", i), stop)
		})
	}
	time.Sleep(5 * time.Second)
	before := agentUIDs(t, nodes)
	start := time.Now()
	helm(t, "upgrade", "podcopy", "charts/podcopy", "-n", "podcopy", "--reuse-values", "--set", "image.tag=upgrade", "--wait", "--timeout", "5m")
	upgraded := time.Since(start)
	ds, err := client.AppsV1().DaemonSets("podcopy").Get(t.Context(), "podcopy-agent", metav1.GetOptions{})
	if err != nil || !strings.HasSuffix(ds.Spec.Template.Spec.Containers[0].Image, ":upgrade") {
		t.Fatalf("after the upgrade the DaemonSet runs %v (%v)", ds.Spec.Template.Spec.Containers, err)
	}
	upgradedUIDs := agentUIDs(t, nodes)
	replaced(t, "upgrade", before, upgradedUIDs)
	time.Sleep(5 * time.Second)
	start = time.Now()
	helm(t, "rollback", "podcopy", "0", "-n", "podcopy", "--wait", "--timeout", "5m")
	rolledBack := time.Since(start)
	replaced(t, "rollback", upgradedUIDs, agentUIDs(t, nodes))
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()

	total := 0
	for i, sts := range results {
		if errs[i] != nil {
			t.Error(errs[i])
		}
		for _, st := range sts {
			total++
			if st.Phase != status.Succeeded {
				t.Errorf("once-%d: request %s ended %s (%s): %s", i, st.Request, st.Phase, st.Reason, st.Message)
			}
		}
	}
	retried := 0
	for _, sts := range results {
		for _, st := range sts {
			if st.Attempt > 1 {
				retried++
			}
		}
	}
	if total < 4 {
		t.Errorf("only %d once collections ran during the upgrade and rollback", total)
	}

	for i := range nodes {
		pod := fmt.Sprintf("followed-%d", i)
		target := exec.Target{Namespace: ns, Pod: pod, Container: "app"}
		waitFor(t, 4*time.Minute, pod+"'s writer to finish", func(ctx context.Context) (bool, error) {
			_, err := run(t, target, "test", "-f", "/tmp/written")
			return err == nil, nil
		})
		want := mustRun(t, target, "cat", "/var/log/app.log")
		dest := followDest(t, ns, pod, "app", "/var/log/app.log")
		var got string
		waitFor(t, 2*time.Minute, pod+"'s harvested file to catch up", func(ctx context.Context) (bool, error) {
			got, _ = run(t, analysis(t), "cat", dest)
			return len(got) >= len(want), nil
		})
		checkLines(t, got, want)
	}
	// Nothing half-written stays: no staging directory of the namespace's pods.
	out, _ := run(t, analysis(t), "sh", "-c", "ls -d /collect/"+ns+"/*/.partial/* 2>/dev/null || true")
	if strings.TrimSpace(out) != "" {
		t.Errorf("staging left behind: %s", out)
	}
	t.Logf("upgrade %.0fs, rollback %.0fs (each replaced the agents of both nodes); %d once collections all Succeeded (%d needed a second attempt); both follows resumed from their checkpoints, no gap, no duplicate; no staging left",
		upgraded.Seconds(), rolledBack.Seconds(), total, retried)
}
