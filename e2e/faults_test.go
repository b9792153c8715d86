//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/status"
)

// terminalBound is how long after a fault a collection may take to reach a terminal status.
const terminalBound = 3 * time.Minute

// TestFaults kills parts of the real cluster in the middle of collections (issue 12). It is
// not parallel: Go runs it while the parallel tests are paused, so the faults hit only it.
// For each fault: the status is terminal within terminalBound, the analysis pod holds a
// complete collection (every hash checked) or nothing, no staging directory is left, and
// the agent keeps serving without a restart.
func TestFaults(t *testing.T) {
	ns := namespace(t)
	const bigSize = 400 << 20
	const smallFiles = 4000
	sourcePod(t, ns, "big", imageBusybox, fmt.Sprintf("mkdir -p /var/log && head -c %d /dev/urandom > /var/log/big.bin", bigSize))
	sourcePod(t, ns, "small", imageBusybox, fmt.Sprintf("mkdir -p /var/log/many && cd /var/log/many && i=0; while [ $i -lt %d ]; do echo \"line $i\" > f$i; i=$((i+1)); done", smallFiles))
	agentBefore := agentPod(t)
	type fault struct {
		name, pod, path string
		inject          func(t *testing.T)
	}
	faults := []fault{
		{"kube-apiserver killed/large file", "big", "/var/log/big.bin", restart("kube-apiserver")},
		{"kube-apiserver killed/many small files", "small", "/var/log/many", restart("kube-apiserver")},
		{"kubelet killed/large file", "big", "/var/log/big.bin", restart("kubelet")},
		{"kubelet killed/many small files", "small", "/var/log/many", restart("kubelet")},
		{"containerd killed/large file", "big", "/var/log/big.bin", restart("containerd")},
		{"containerd killed/many small files", "small", "/var/log/many", restart("containerd")},
		{"analysis pod deleted/large file", "big", "/var/log/big.bin", deleteAnalysisPod},
	}
	summary := map[string]int{}
	for i, f := range faults {
		ok := t.Run(f.name, func(t *testing.T) {
			prev, _ := getStatus(t, ns, f.pod)
			annotate(t, ns, f.pod, map[string]string{"podcopy/collect": f.path, "podcopy/trigger": strconv.Itoa(i)})
			waitFor(t, time.Minute, "the collection to be Running", func(ctx context.Context) (bool, error) {
				s, ok := getStatus(t, ns, f.pod)
				return ok && s.Request != prev.Request && s.Phase == status.Running && s.Attempt == 1, nil
			})
			time.Sleep(700 * time.Millisecond) // mid-stream
			injected := time.Now()
			f.inject(t)
			waitClusterReady(t)
			st := waitFinalWithin(t, ns, f.pod, prev.Request, terminalBound)
			t.Logf("terminal %.1fs after the fault: %s, attempt %d: %s", time.Since(injected).Seconds(), st.Phase, st.Attempt, st.Message)
			summary[string(st.Phase)]++
			checkCompleteOrAbsent(t, ns, f.pod, st)
			if st.Phase != status.Succeeded && st.Phase != status.Failed {
				t.Fatalf("phase %s", st.Phase)
			}
		})
		if !ok {
			break
		}
	}
	if after := agentPod(t); after.Name != agentBefore.Name || restarts(after) != restarts(agentBefore) {
		t.Fatalf("the agent restarted: %s (%d restarts) -> %s (%d restarts)", agentBefore.Name, restarts(agentBefore), after.Name, restarts(after))
	}
	t.Logf("faults injected: %d; terminal: %v; stuck: 0; half-written collections: 0", len(faults), summary)
}

// TestFollowFaults: a follow keeps no gap and no duplicate across a kube-apiserver, a kubelet
// and a containerd killed mid-way (not parallel, like TestFaults).
func TestFollowFaults(t *testing.T) {
	for _, component := range []string{"kube-apiserver", "kubelet", "containerd"} {
		t.Run(component, func(t *testing.T) {
			ns := namespace(t)
			sourcePod(t, ns, "writer", imageBusybox, writerScript)
			annotate(t, ns, "writer", map[string]string{"podcopy/collect": "/var/log/app/app.log", "podcopy/mode": "follow", "podcopy/interval": "5s"})
			followScenario{
				src: exec.Target{Namespace: ns, Pod: "writer", Container: "app"}, interval: 5 * time.Second,
				dest: followDest(t, ns, "writer", "app", "/var/log/app/app.log"),
				disrupt: func(t *testing.T) {
					restart(component)(t)
					waitClusterReady(t)
				},
			}.run(t)
		})
	}
}

// TestAgentDeletedMidCollection: the agent pod is deleted during a large collection; the
// DaemonSet's next agent finds the Running status no live collection backs and runs the next
// attempt to a terminal status, with a complete collection or nothing.
func TestAgentDeletedMidCollection(t *testing.T) {
	ns := namespace(t)
	sourcePod(t, ns, "big", imageBusybox, "mkdir -p /var/log && head -c 419430400 /dev/urandom > /var/log/big.bin")
	annotate(t, ns, "big", map[string]string{"podcopy/collect": "/var/log/big.bin"})
	waitFor(t, time.Minute, "the collection to be Running", func(ctx context.Context) (bool, error) {
		s, ok := getStatus(t, ns, "big")
		return ok && s.Phase == status.Running, nil
	})
	time.Sleep(700 * time.Millisecond)
	old := agentPod(t)
	zero := int64(0)
	if err := client.CoreV1().Pods("podcopy").Delete(t.Context(), old.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	injected := time.Now()
	st := waitFinalWithin(t, ns, "big", "", terminalBound)
	t.Logf("terminal %.1fs after the agent was deleted: %s, attempt %d: %s", time.Since(injected).Seconds(), st.Phase, st.Attempt, st.Message)
	if st.Phase != status.Succeeded || st.Attempt < 2 {
		t.Fatalf("status %+v", st)
	}
	checkCompleteOrAbsent(t, ns, "big", st)
}

// TestFullDisk: the analysis pod's disk fills up; the reason is tar's own error, it is not
// retried, and nothing is left behind.
func TestFullDisk(t *testing.T) {
	ns := namespace(t)
	sourcePod(t, ns, "big", imageBusybox, "mkdir -p /var/log && head -c 41943040 /dev/urandom > /var/log/big.bin")
	tiny := tinyAnalysisPod(t)
	annotate(t, ns, "big", map[string]string{"podcopy/collect": "/var/log/big.bin", "podcopy/destination": tiny})
	st := waitFinalWithin(t, ns, "big", "", terminalBound)
	if st.Phase != status.Failed || !strings.Contains(st.Message, "No space left on device") || st.Attempt != 1 {
		t.Fatalf("status %+v; the pod's Events: %v", st, events(t, ns, "big"))
	}
	t.Logf("reported: %s", st.Message)
	target := exec.Target{Namespace: "podcopy", Pod: tiny, Container: "store"}
	if out, _ := run(t, target, "sh", "-c", "find /collect -type f | head"); strings.TrimSpace(out) != "" {
		t.Fatalf("left in the full analysis pod: %s", out)
	}
}

func restart(component string) func(t *testing.T) {
	return func(t *testing.T) {
		t.Helper()
		local(t, "processes (cluster.sh restart)")
		cmd := osexec.CommandContext(t.Context(), "bash", filepath.Join("..", "hack", "cluster", "cluster.sh"), "restart", component, "3")
		cmd.Env = append(os.Environ(), "PODCOPY_CLUSTER_STATE="+state)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restarting %s: %v\n%s", component, err, out)
		}
	}
}

func deleteAnalysisPod(t *testing.T) {
	t.Helper()
	a := analysis(t)
	zero := int64(0) // killed at once, mid-stream (its sleep ignores SIGTERM)
	if err := client.CoreV1().Pods(a.Namespace).Delete(t.Context(), a.Pod, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "a new analysis pod", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(a.Namespace).Get(ctx, a.Pod, metav1.GetOptions{})
		return err == nil && p.DeletionTimestamp == nil && destination.Ready(p), nil
	})
}

// waitClusterReady waits until the API server answers, the node is Ready and an exec in the
// analysis pod runs: the node's Ready condition lags a restarted container runtime by up to
// its status interval, and the checks that follow read the analysis pod through exec.
func waitClusterReady(t *testing.T) {
	t.Helper()
	waitFor(t, 2*time.Minute, "the API server, the node and the container runtime", func(ctx context.Context) (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, "localhost", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		if !ready {
			return false, nil
		}
		a, err := chooseAnalysis(ctx)
		if err != nil {
			return false, nil
		}
		probe, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return executor.Exec(probe, exec.Request{Target: a, Command: []string{"true"}}) == nil, nil
	})
}

func waitFinalWithin(t *testing.T, ns, pod, notRequest string, bound time.Duration) status.Status {
	t.Helper()
	var st status.Status
	waitFor(t, bound, "a terminal status on "+pod, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, nil // the API server may be coming back
		}
		s, ok := status.Get(p)
		st = s
		return ok && s.Request != notRequest && s.Done(s.Request), nil
	})
	return st
}

// checkCompleteOrAbsent: a Succeeded collection is complete (every file's hash equals the
// manifest's, computed in the analysis pod), a Failed one is absent, and no staging
// directory of the pod remains.
func checkCompleteOrAbsent(t *testing.T, ns, pod string, st status.Status) {
	t.Helper()
	a := analysis(t)
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	if st.Phase == status.Succeeded {
		m := readManifest(t, st)
		if len(m.Files) != st.Files || m.Totals.Files != st.Files {
			t.Fatalf("manifest has %d files, status %d", len(m.Files), st.Files)
		}
		var list strings.Builder
		for _, f := range m.Files {
			fmt.Fprintf(&list, "%s  %s/%s%s\n", f.SHA256, dir, m.Source.Container, f.Path)
		}
		out, err := runStdin(t, a, list.String(), "sha256sum", "-c", "-s", "-")
		if err != nil {
			t.Fatalf("hashes in the analysis pod differ from the manifest: %v %s", err, out)
		}
	} else if out, _ := run(t, a, "ls", "-d", dir); strings.TrimSpace(out) != "" {
		t.Fatalf("a failed collection left %s", out)
	}
	waitFor(t, 90*time.Second, "no staging directory", func(ctx context.Context) (bool, error) {
		out, _ := run(t, a, "sh", "-c", "ls -A /collect/"+ns+"/"+pod+"/.partial 2>/dev/null")
		return strings.TrimSpace(out) == "", nil
	})
}

// agentPod is the agent pod on the first node, where the suite's pods run.
func agentPod(t *testing.T) corev1.Pod {
	t.Helper()
	return agentOn(t, firstNode)
}

// agentOn is the live, Ready agent pod on node.
func agentOn(t *testing.T, node string) corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	waitFor(t, 2*time.Minute, "the agent pod on "+node, func(ctx context.Context) (bool, error) {
		var err error
		p, err = clustertest.AgentPod(ctx, client, node)
		return err == nil, nil
	})
	return *p
}

func restarts(p corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

// tinyAnalysisPod starts an analysis pod whose /collect is an 8 MiB tmpfs. Its name sorts
// after the real one, so only requests that name it use it.
func tinyAnalysisPod(t *testing.T) string {
	t.Helper()
	name := "zz-tiny-" + strconv.FormatInt(time.Now().UnixNano()%100000, 10)
	limit := resource.MustParse("8Mi")
	zero := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: name, Labels: map[string]string{"app.kubernetes.io/component": "analysis"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &zero,
			Volumes:                       []corev1.Volume{{Name: "collect", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &limit}}}},
			Containers: []corev1.Container{{Name: "store", Image: imageBusybox, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sleep", "2147483647"},
				VolumeMounts: []corev1.VolumeMount{{Name: "collect", MountPath: "/collect"}}}},
		},
	}
	if _, err := client.CoreV1().Pods("podcopy").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.CoreV1().Pods("podcopy").Delete(context.Background(), name, metav1.DeleteOptions{}) })
	waitFor(t, 2*time.Minute, name+" Ready and taking execs", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods("podcopy").Get(ctx, name, metav1.GetOptions{})
		if err != nil || !destination.Ready(p) {
			return false, nil
		}
		// Ready is the kubelet's word; an exec the moment after may still be refused (a
		// transient failure the agent retries, which would hide what the test checks).
		_, err = run(t, exec.Target{Namespace: "podcopy", Pod: name, Container: "store"}, "true")
		return err == nil, nil
	})
	return name
}

// runStdin executes argv in a container with stdin and returns stdout and stderr.
func runStdin(t *testing.T, target exec.Target, stdin string, argv ...string) (string, error) {
	t.Helper()
	var out strings.Builder
	err := executor.Exec(t.Context(), exec.Request{Target: target, Command: argv, Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &out})
	return out.String(), err
}
