//go:build e2e

// Package e2e proves podcopy on the project's real local cluster (hack/cluster): a real
// kube-apiserver, kubelet and containerd, with the agent running as a DaemonSet pod from its
// image. Run it with `make e2e`, which brings the cluster up and deploys the agent first.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/status"
)

// Images built by hack/cluster/images.sh.
const (
	imageBusybox = "podcopy.local/busybox:1"
	imageGNUTar  = "podcopy.local/gnutar:1"
)

var (
	state     string // the local cluster's state dir (PKI, env); "" against another cluster
	cfg       *rest.Config
	client    kubernetes.Interface
	executor  exec.Executor
	agentPort string
	// foreign is true when the suite runs against another cluster (PODCOPY_E2E_KUBECONFIG).
	foreign bool
	// kubeconfig is the admin kubeconfig the suite (and the plugin it runs) uses.
	kubeconfig string
	// firstNode is where the suite's pods run: the local cluster's first node, or
	// PODCOPY_E2E_NODE (default: the first Ready node without a NoSchedule taint).
	firstNode = clustertest.FirstNode
)

// TestMain connects to the local cluster (hack/cluster: its state directory), or to any
// cluster with podcopy installed from this tree when PODCOPY_E2E_KUBECONFIG names an admin
// kubeconfig (the test images loaded on its nodes under their podcopy.local names, as
// `kind load image-archive` does). Tests that need the local cluster itself (its PKI, its
// processes, its ports on this machine) then skip, naming what they need.
func TestMain(m *testing.M) {
	if kc := os.Getenv("PODCOPY_E2E_KUBECONFIG"); kc != "" {
		foreign, kubeconfig = true, kc
	} else {
		state = os.Getenv("PODCOPY_CLUSTER_STATE")
		if state == "" {
			cache := os.Getenv("PODCOPY_CACHE_DIR")
			if cache == "" {
				cache = filepath.Join("..", ".cache")
			}
			state = filepath.Join(cache, "cluster")
		}
		kubeconfig = filepath.Join(state, "admin.kubeconfig")
	}
	var err error
	cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "no cluster (run `make e2e`, or set PODCOPY_E2E_KUBECONFIG): %v\n", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client = kubernetes.NewForConfigOrDie(cfg)
	executor = exec.NewRemote(cfg, client.CoreV1().RESTClient(), exec.TransportAuto)
	if foreign {
		if firstNode, err = schedulableNode(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "no node for the suite's pods: %v\n", err)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	port, err := os.ReadFile(filepath.Join(state, "agent-port"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent not deployed (run `make e2e`): %v\n", err)
		os.Exit(1)
	}
	agentPort = strings.TrimSpace(string(port))
	os.Exit(m.Run())
}

// schedulableNode is PODCOPY_E2E_NODE, or the first Ready node without a NoSchedule taint.
func schedulableNode(ctx context.Context) (string, error) {
	if n := os.Getenv("PODCOPY_E2E_NODE"); n != "" {
		return n, nil
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	for _, n := range nodes.Items {
		ready, tainted := false, false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		for _, tn := range n.Spec.Taints {
			tainted = tainted || tn.Effect == corev1.TaintEffectNoSchedule
		}
		if ready && !tainted {
			return n.Name, nil
		}
	}
	return "", errors.New("no Ready node without a NoSchedule taint; set PODCOPY_E2E_NODE")
}

// local skips a test that needs the local cluster itself when the suite runs against
// another cluster.
func local(t *testing.T, what string) {
	t.Helper()
	if foreign {
		t.Skipf("needs the local cluster's %s (the suite runs against PODCOPY_E2E_KUBECONFIG)", what)
	}
}

// artifacts is where screenshots go: next to the local cluster's state, else a temp dir.
func artifacts() string {
	if foreign {
		return os.TempDir()
	}
	return filepath.Join(state, "..")
}

// namespace makes a fresh namespace for one test and deletes it afterwards.
func namespace(t *testing.T) string {
	t.Helper()
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := "e2e-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.TrimRight(name, "-") + "-" + hex.EncodeToString(suffix)
	_, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Pods need the default ServiceAccount, which the controller-manager creates.
	waitFor(t, 30*time.Second, "default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// sourcePod runs script in image and waits until it has touched /tmp/ready.
func sourcePod(t *testing.T, ns, name, image, script string) *corev1.Pod {
	t.Helper()
	p := clustertest.SourcePod(ns, name, image, script)
	if foreign {
		p.Spec.NodeName = firstNode // where scrape reads the agent's metrics
	}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := clustertest.WaitReady(t.Context(), client, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	p, err := client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func annotate(t *testing.T, ns, pod string, ann map[string]string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if _, err := client.CoreV1().Pods(ns).Patch(t.Context(), pod, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func getStatus(t *testing.T, ns, pod string) (status.Status, bool) {
	t.Helper()
	// Not t.Context(): cleanups that report a failure call this after it is cancelled.
	p, err := client.CoreV1().Pods(ns).Get(context.WithoutCancel(t.Context()), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return status.Get(p)
}

// waitFinal waits for a final phase of a request other than notRequest.
func waitFinal(t *testing.T, ns, pod, notRequest string) status.Status {
	t.Helper()
	var st status.Status
	waitFor(t, 3*time.Minute, "final status on "+pod, func(ctx context.Context) (bool, error) {
		s, ok := getStatus(t, ns, pod)
		st = s
		return ok && s.Request != notRequest && s.Done(s.Request), nil
	})
	return st
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// run executes argv in a container and returns stdout.
func run(t *testing.T, target exec.Target, argv ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := executor.Exec(t.Context(), exec.Request{Target: target, Command: argv, Stdout: &out, Stderr: &errb})
	return out.String(), err
}

func mustRun(t *testing.T, target exec.Target, argv ...string) string {
	t.Helper()
	out, err := run(t, target, argv...)
	if err != nil {
		t.Fatalf("%v in %s: %v", argv, target, err)
	}
	return out
}

// analysis is the analysis pod's container, chosen the way the agent chooses it.
func analysis(t *testing.T) exec.Target {
	t.Helper()
	target, err := chooseAnalysis(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func chooseAnalysis(ctx context.Context) (exec.Target, error) {
	return clustertest.Analysis(ctx, client)
}

// readManifest reads manifest.json of a collection from the analysis pod.
func readManifest(t *testing.T, st status.Status) manifest.Manifest {
	t.Helper()
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	var m manifest.Manifest
	if err := json.Unmarshal([]byte(mustRun(t, analysis(t), "cat", dir+"/manifest.json")), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func sha256In(t *testing.T, target exec.Target, path string) string {
	t.Helper()
	out := mustRun(t, target, "sha256sum", path)
	return strings.Fields(out)[0]
}

// events returns "Type Reason: message" for each Event on the pod.
func events(t *testing.T, ns, pod string) []string {
	t.Helper()
	list, err := client.CoreV1().Events(ns).List(context.WithoutCancel(t.Context()), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Type+" "+e.Reason+": "+e.Message)
	}
	return out
}

func waitEvent(t *testing.T, ns, pod, reason string) string {
	t.Helper()
	var found string
	waitFor(t, 30*time.Second, reason+" event on "+pod, func(ctx context.Context) (bool, error) {
		for _, e := range events(t, ns, pod) {
			if strings.Contains(e, " "+reason+": ") {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

func countEvents(t *testing.T, ns, pod, reason string) int {
	n := 0
	for _, e := range events(t, ns, pod) {
		if strings.Contains(e, " "+reason+": ") {
			n++
		}
	}
	return n
}

// scrape returns the metric samples, by "name{labels}", of the agent on the first node
// (where the suite's pods run unless a test pins one elsewhere).
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	return scrapeNode(t, firstNode)
}

// scrapeNode returns the metric samples of the agent on node.
func scrapeNode(t *testing.T, node string) map[string]float64 {
	t.Helper()
	if foreign { // through the API server's proxy to the agent pod's metrics port
		pod := agentOn(t, node)
		port := ""
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == "metrics" {
					port = strconv.Itoa(int(p.ContainerPort))
				}
			}
		}
		// By number: kube-apiserver v1.37.2 answers a named port here with a nil-pointer
		// panic (normalizeLocation), measured on the local cluster.
		body, err := client.CoreV1().Pods(pod.Namespace).ProxyGet("", pod.Name, port, "metrics", nil).DoRaw(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out, err := clustertest.ParseMetrics(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return scrapeAt(t, agentAddr(t, node, agentPort))
}

// janitorNode is the node of the agent that holds the janitor's Lease (its identity starts
// with the node's name), waiting for one to hold it.
func janitorNode(t *testing.T) string {
	t.Helper()
	var node string
	waitFor(t, 2*time.Minute, "the janitor's Lease holder", func(ctx context.Context) (bool, error) {
		l, err := client.CoordinationV1().Leases("podcopy").Get(ctx, "podcopy-janitor", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false, nil
		}
		node, _, _ = strings.Cut(*l.Spec.HolderIdentity, "/")
		return node != "", nil
	})
	return node
}

// agentAddr is where the agent on node serves port (its node's address), waiting for it.
func agentAddr(t *testing.T, node, port string) string {
	t.Helper()
	local(t, "agents' addresses on this machine")
	var addr string
	waitFor(t, 2*time.Minute, "the agent on "+node, func(ctx context.Context) (bool, error) {
		var err error
		addr, err = clustertest.AgentAddr(ctx, client, node, port)
		return err == nil, nil
	})
	return addr
}

// scrapeAt returns the metric samples served at addr.
func scrapeAt(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	out, err := clustertest.Scrape(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logJanitorOnFailure logs, when t fails, the janitor's Lease and each agent's log lines
// about it (what a failed retention or sweep wait needs to be understood).
func logJanitorOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if l, err := client.CoordinationV1().Leases("podcopy").Get(ctx, "podcopy-janitor", metav1.GetOptions{}); err == nil {
			holder, renewed, transitions := "", "", int32(0)
			if l.Spec.HolderIdentity != nil {
				holder = *l.Spec.HolderIdentity
			}
			if l.Spec.RenewTime != nil {
				renewed = l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
			}
			if l.Spec.LeaseTransitions != nil {
				transitions = *l.Spec.LeaseTransitions
			}
			t.Logf("janitor Lease: holder %q, renewed %s, %d transitions (now %s)", holder, renewed, transitions, time.Now().UTC().Format(time.RFC3339Nano))
		}
		pods, err := client.CoreV1().Pods("podcopy").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Logf("listing agents: %v", err)
			return
		}
		for _, p := range pods.Items {
			if !strings.HasPrefix(p.Name, "podcopy-agent-") {
				continue
			}
			b, err := client.CoreV1().Pods("podcopy").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				t.Logf("log of %s: %v", p.Name, err)
				continue
			}
			var lines []string
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "sweep") || strings.Contains(line, "retention") || strings.Contains(line, "janitor") || strings.Contains(line, "lease") {
					lines = append(lines, line)
				}
			}
			t.Logf("agent %s on %s, its janitor lines (last 40 of %d):\n%s", p.Name, p.Spec.NodeName, len(lines), strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
}
