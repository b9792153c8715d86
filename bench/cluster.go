package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// env is the connection to the local cluster and the deployed agent.
type env struct {
	o         options
	client    kubernetes.Interface
	exec      exec.Executor
	kubecfg   string
	kubectl   string
	agentPort string
}

func newEnv(o options) (*env, error) {
	e := &env{o: o, kubecfg: filepath.Join(o.state, "admin.kubeconfig")}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubecfg)
	if err != nil {
		return nil, fmt.Errorf("no local cluster (make bench brings it up): %w", err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	e.client = kubernetes.NewForConfigOrDie(cfg)
	e.exec = exec.NewRemote(cfg, e.client.CoreV1().RESTClient(), exec.TransportAuto)
	vars, err := os.ReadFile(filepath.Join(o.state, "env"))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(vars), "\n") {
		if v, ok := strings.CutPrefix(line, "BIN="); ok {
			e.kubectl = filepath.Join(v, "kubectl")
		}
	}
	port, err := os.ReadFile(filepath.Join(o.state, "agent-port"))
	if err != nil {
		return nil, err
	}
	e.agentPort = strings.TrimSpace(string(port))
	return e, nil
}

// sh runs a host command line (the kubectl baselines are shell pipelines, as users run them).
func (e *env) sh(ctx context.Context, line string) (time.Duration, error) {
	cmd := osexec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", line)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubecfg, "K="+e.kubectl)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %s", line, err, stderr.String())
	}
	return time.Since(start), nil
}

func (e *env) run(ctx context.Context, t exec.Target, argv ...string) (string, error) {
	var out, errb bytes.Buffer
	if err := e.exec.Exec(ctx, exec.Request{Target: t, Command: argv, Stdout: &out, Stderr: &errb}); err != nil {
		return "", fmt.Errorf("%v: %w", argv, err)
	}
	return out.String(), nil
}

func (e *env) analysis(ctx context.Context) (exec.Target, error) {
	return clustertest.Analysis(ctx, e.client)
}

// pod creates a busybox pod running script, and waits until it is Ready.
func (e *env) pod(ctx context.Context, ns, name, script string) error {
	if _, err := e.client.CoreV1().Pods(ns).Create(ctx, clustertest.SourcePod(ns, name, "podcopy.local/busybox:1", script), metav1.CreateOptions{}); err != nil {
		return err
	}
	return clustertest.WaitReady(ctx, e.client, ns, name, 10*time.Minute)
}

func (e *env) namespace(ctx context.Context, name string) error {
	_ = e.client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	_ = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return err != nil, nil
	})
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// collect annotates a pod with a new trigger and waits for the outcome. It returns the time to
// the Running status (first byte) and to Succeeded.
func (e *env) collect(ctx context.Context, ns, pod, paths, source, trigger string) (start, done time.Duration, st status.Status, err error) {
	ann := map[string]any{"podcopy/collect": paths, "podcopy/trigger": trigger, "podcopy/source": nil}
	if source != "" {
		ann["podcopy/source"] = source
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	t0 := time.Now()
	patched, err := e.client.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return 0, 0, st, err
	}
	req, err := request.Parse(patched, policy.Default())
	if err != nil {
		return 0, 0, st, err
	}
	id := req.ID()
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s, ok := status.Get(p)
		if !ok || s.Request != id {
			return false, nil
		}
		if start == 0 && (s.Phase == status.Running || s.Done(id)) {
			start = time.Since(t0)
		}
		st = s
		return s.Done(id), nil
	})
	done = time.Since(t0)
	if err == nil && st.Phase != status.Succeeded {
		err = fmt.Errorf("collection %s: %s", st.Phase, st.Message)
	}
	return start, done, st, err
}

// scrape reads the agent's metrics.
func (e *env) scrape(ctx context.Context) (map[string]float64, error) {
	addr, err := clustertest.AgentAddr(ctx, e.client, clustertest.FirstNode, e.agentPort)
	if err != nil {
		return nil, err
	}
	return clustertest.Scrape(ctx, addr)
}

// agentPID finds the agent process on this host (it runs in the host network, so its process
// is visible here); helper containers run the same binary as "podcopy-agent source". With
// several nodes on this machine, it is the first node's agent (NODE_NAME in its environment).
func agentPID() (int, error) {
	out, err := osexec.Command("pgrep", "-x", "podcopy-agent").Output()
	if err != nil {
		return 0, fmt.Errorf("agent process not found: %w", err)
	}
	for _, pid := range strings.Fields(string(out)) {
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		environ, _ := os.ReadFile("/proc/" + pid + "/environ")
		if err == nil && !slices.Contains(strings.Split(string(cmdline), "\x00"), "source") &&
			slices.Contains(strings.Split(string(environ), "\x00"), "NODE_NAME="+clustertest.FirstNode) {
			return strconv.Atoi(pid)
		}
	}
	return 0, fmt.Errorf("no agent among podcopy-agent processes %q", out)
}

// resetPeak clears the kernel's peak-RSS mark of pid; peakRSS reads it (VmHWM, bytes).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM for %d", pid)
}

// helm upgrades the release, keeping the local cluster's values, and waits for the agent.
func (e *env) helm(ctx context.Context, sets ...string) error {
	args := []string{filepath.Join(e.o.repo, "hack/cluster/helm.sh"), "upgrade", "podcopy", filepath.Join(e.o.repo, "charts/podcopy"), "-n", "podcopy", "--reuse-values", "--wait", "--timeout", "3m"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	cmd := osexec.CommandContext(ctx, "bash", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubecfg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("helm %v: %v\n%s", sets, err, out)
	}
	if _, err := e.sh(ctx, `"$K" -n podcopy rollout status ds/podcopy-agent --timeout=120s 2>/dev/null || "$K" -n podcopy rollout status deploy/podcopy-agent --timeout=120s`); err != nil {
		return err
	}
	// Ready means informers synced; give the new process a moment to own the port.
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.scrape(ctx)
		return err == nil, nil
	})
}
