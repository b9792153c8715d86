//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/nodeloss"
	"github.com/podcopy/podcopy/internal/shell"
	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/status"
)

// The suite's tests on several nodes run one at a time (not t.Parallel): they count each
// agent's collections and stop a node's kubelet, which no other test may see.

// clusterEnv is the local cluster's env file (hack/cluster/cluster.sh up).
func clusterEnv(t *testing.T) map[string]string {
	t.Helper()
	local(t, "env file")
	f, err := os.Open(filepath.Join(state, "env"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = strings.Trim(v, `"`)
		}
	}
	return env
}

// secondNode is the cluster's second node; the test is skipped on a one-node cluster
// (NODES=1 make cluster-up), which `make e2e` never builds.
func secondNode(t *testing.T) string {
	t.Helper()
	names := strings.Fields(clusterEnv(t)["NODE_NAMES"])
	if len(names) < 2 {
		t.Skip("the local cluster has one node (NODES=1); make cluster-up starts two")
	}
	return names[1]
}

// pinnedPod is sourcePod on node (tolerating the extra nodes' taint).
func pinnedPod(t *testing.T, ns, name, node, script string) *corev1.Pod {
	t.Helper()
	p := clustertest.SourcePod(ns, name, imageBusybox, script)
	p.Spec.NodeName = node
	p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := clustertest.WaitReady(t.Context(), client, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return p
}

// cluster runs hack/cluster/cluster.sh with args (stop, resume, restart a component).
func cluster(t *testing.T, args ...string) {
	t.Helper()
	local(t, "processes (cluster.sh)")
	cmd := osexec.CommandContext(context.WithoutCancel(t.Context()), "bash", append([]string{filepath.Join("..", "hack", "cluster", "cluster.sh")}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cluster.sh %v: %v\n%s", args, err, out)
	}
}

// nodeReady waits until node's Ready condition is want.
func nodeReady(t *testing.T, node string, want bool, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("node %s Ready=%v", node, want), func(ctx context.Context) (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		_, _, notReady := nodeloss.NotReady(n)
		return notReady != want, nil
	})
}

// kubeletOf is the cluster.sh name of node's kubelet.
func kubeletOf(node string) string {
	if node == firstNode {
		return "kubelet"
	}
	return "kubelet-" + node
}

// killAgent SIGKILLs the agent container on node through that node's containerd (also
// when its kubelet is down), returning the killed pod.
func killAgent(t *testing.T, node string, pod corev1.Pod) {
	t.Helper()
	env := clusterEnv(t)
	i := slices.Index(strings.Fields(env["NODE_NAMES"]), node)
	socks := strings.Fields(env["CONTAINERD_SOCKS"])
	if i < 0 || i >= len(socks) || len(pod.Status.ContainerStatuses) == 0 {
		t.Fatalf("no containerd for node %s or no container in %s", node, pod.Name)
	}
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := osexec.CommandContext(t.Context(), filepath.Join(env["BIN"], "ctr"), "--address", socks[i], "-n", "k8s.io",
		"tasks", "kill", "--signal", "SIGKILL", id).CombinedOutput()
	if err != nil {
		t.Fatalf("killing agent container %s on %s: %v %s", id, node, err, out)
	}
	t.Logf("killed agent %s on %s (container %.12s)", pod.Name, node, id)
}

// agentLog is the log of the agent pod's current container.
func agentLog(t *testing.T, pod corev1.Pod) string {
	t.Helper()
	b, err := client.CoreV1().Pods("podcopy").GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// succeeded is podcopy_collections_total{result="succeeded"} of a scrape.
func succeeded(m map[string]float64) float64 {
	return m[`podcopy_collections_total{result="succeeded"}`]
}

// TestNodes: with two nodes, each agent collects exactly its own node's pods (proven from
// both agents' metrics and logs, and the manifest's agent node), a pod on node 2 lands in
// the analysis pod on node 1 and the reverse, the plugin fetches from an analysis pod on
// node 2, and the web shell on node 1's agent opens a shell in a pod on node 2.
func TestNodes(t *testing.T) {
	node2 := secondNode(t)
	node1 := firstNode
	ns := namespace(t)
	agent1, agent2 := agentOn(t, node1), agentOn(t, node2)
	addr1, addr2 := agentAddr(t, node1, agentPort), agentAddr(t, node2, agentPort)
	if addr1 == addr2 {
		t.Fatalf("both agents serve at %s", addr1)
	}
	before1, before2 := scrapeAt(t, addr1), scrapeAt(t, addr2)
	for addr, node := range map[string]string{addr1: node1, addr2: node2} {
		if m := scrapeAt(t, addr); !slices.ContainsFunc(slices.Collect(maps.Keys(m)), func(k string) bool {
			return strings.HasPrefix(k, `podcopy_agent_info{node="`+node+`"`)
		}) {
			t.Fatalf("the agent at %s does not say it is node %s's", addr, node)
		}
	}

	// An analysis pod on node 2 (its name sorts after the install's, so only requests that
	// name it use it).
	remote := "podcopy-analysis-zz-" + node2
	zero := int64(0)
	ap := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: remote, Labels: map[string]string{"app.kubernetes.io/component": "analysis"}},
		Spec: corev1.PodSpec{
			NodeName: node2, TerminationGracePeriodSeconds: &zero,
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			Volumes:     []corev1.Volume{{Name: "collect", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{{Name: "store", Image: imageBusybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "2147483647"}, VolumeMounts: []corev1.VolumeMount{{Name: "collect", MountPath: "/collect"}}}},
		},
	}
	if _, err := client.CoreV1().Pods("podcopy").Create(t.Context(), ap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Pods("podcopy").Delete(context.Background(), remote, metav1.DeleteOptions{})
	})

	script := func(name string) string {
		return "mkdir -p /var/log && head -c 5242880 /dev/urandom > /var/log/app.bin && echo " + name + " > /var/log/who"
	}
	pinnedPod(t, ns, "on-one", node1, script("on-one"))
	pinnedPod(t, ns, "on-two", node2, script("on-two"))
	pinnedPod(t, ns, "to-two", node1, script("to-two"))
	waitFor(t, 2*time.Minute, remote+" Ready", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods("podcopy").Get(ctx, remote, metav1.GetOptions{})
		return err == nil && destination.Ready(p), nil
	})
	annotate(t, ns, "on-one", map[string]string{"podcopy/collect": "/var/log/app.bin,/var/log/who"})
	annotate(t, ns, "on-two", map[string]string{"podcopy/collect": "/var/log/app.bin,/var/log/who"})
	annotate(t, ns, "to-two", map[string]string{"podcopy/collect": "/var/log/app.bin,/var/log/who", "podcopy/destination": remote})

	want := map[string]string{"on-one": node1, "on-two": node2, "to-two": node1}
	for pod, node := range want {
		st := waitFinal(t, ns, pod, "")
		if st.Phase != status.Succeeded {
			t.Fatalf("%s: %+v", pod, st)
		}
		target := analysis(t)
		if pod == "to-two" {
			target.Pod, target.Container = remote, "store"
			if !strings.HasPrefix(st.Destination, "podcopy/"+remote+"/") {
				t.Fatalf("%s went to %s, not %s", pod, st.Destination, remote)
			}
		}
		dir := st.Destination[strings.Index(st.Destination, ":")+1:]
		mf := mustRun(t, target, "cat", dir+"/manifest.json")
		if !strings.Contains(mf, `"node":"`+node+`"`) && !strings.Contains(mf, `"node": "`+node+`"`) {
			t.Fatalf("%s: the manifest does not name agent node %s:\n%.600s", pod, node, mf)
		}
		t.Logf("%s (node %s) collected by the agent on %s into %s", pod, node, node, st.Destination)
	}

	// Each agent's own count grew by its own node's pods only.
	after1, after2 := scrapeAt(t, addr1), scrapeAt(t, addr2)
	d1, d2 := succeeded(after1)-succeeded(before1), succeeded(after2)-succeeded(before2)
	t.Logf("collections succeeded: agent on %s +%.0f, agent on %s +%.0f", node1, d1, node2, d2)
	if d1 != 2 || d2 != 1 {
		t.Fatalf("agent on %s collected %.0f (want 2), agent on %s %.0f (want 1)", node1, d1, node2, d2)
	}
	// The API requests of one collection: the agent on node 2 ran exactly one (docs/scale.md).
	var calls []string
	total := 0.0
	for _, k := range slices.Collect(maps.Keys(after2)) {
		if strings.HasPrefix(k, "podcopy_api_requests_total{") {
			d := after2[k] - before2[k]
			total += d
			calls = append(calls, fmt.Sprintf("%s %.0f", strings.TrimSuffix(strings.TrimPrefix(k, `podcopy_api_requests_total{method="`), `"}`), d))
		}
	}
	slices.Sort(calls)
	t.Logf("API requests of the agent on %s while it ran one collection (background included): %.0f (%s)", node2, total, strings.Join(calls, ", "))
	log1, log2 := agentLog(t, agent1), agentLog(t, agent2)
	for pod, node := range want {
		key := `"pod":"` + ns + "/" + pod + `"`
		in1, in2 := strings.Contains(log1, key), strings.Contains(log2, key)
		if in1 != (node == node1) || in2 != (node == node2) {
			t.Fatalf("%s on %s: in the log of the agent on %s: %v, on %s: %v", pod, node, node1, in1, node2, in2)
		}
	}

	// The plugin fetches from the analysis pod on node 2.
	out, errOut, code := kubectlPodcopy(t, kubeconfig, "fetch", "to-two", "-n", ns, "-o", t.TempDir())
	if code != 0 || !strings.Contains(out, "fetched 2 files") {
		t.Fatalf("fetch from %s: exit %d\n%s\n%s", remote, code, out, errOut)
	}
	t.Logf("plugin fetch from the analysis pod on %s: %s", node2, strings.TrimSpace(out))

	// The web shell of the agent on node 1, into the pod on node 2.
	shellInto(t, ns, "on-two", "app", `echo "on-$(cat /var/log/who)-$((6*7))"`, "on-on-two-42")
}

// shellInto opens a web shell session into ns/pod on the first node's agent with a token
// that may exec there, types line and waits for want in the terminal.
func shellInto(t *testing.T, ns, pod, container, line, want string) {
	t.Helper()
	sa := "shell-user"
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}}}}
	if _, err := client.RbacV1().Roles(ns).Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}}
	if _, err := client.RbacV1().RoleBindings(ns).Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := shellURL(t)
	u, _ := url.Parse(base)
	u.Scheme, u.Path = "ws", "/api/v1/session"
	u.RawQuery = url.Values{"namespace": {ns}, "pod": {pod}, "container": {container}}.Encode()
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second,
		Subprotocols: []string{shell.Subprotocol, "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(tr.Status.Token))}}
	var ws *websocket.Conn
	waitFor(t, 30*time.Second, "the shell session (RBAC propagates)", func(ctx context.Context) (bool, error) {
		c, resp, err := d.DialContext(ctx, u.String(), http.Header{"Origin": {strings.TrimSuffix(base, "/")}})
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return false, nil
		}
		ws = c
		return true, nil
	})
	defer func() { _ = ws.Close() }()
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte(line+"\n")); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for !strings.Contains(seen.String(), want) {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("shell into %s/%s: %v; terminal so far:\n%s", ns, pod, err, seen.String())
		}
		if typ == websocket.BinaryMessage {
			seen.Write(data)
		}
	}
	t.Logf("web shell on %s's agent into %s/%s: saw %q", firstNode, ns, pod, want)
}

// leader reports which of the agents at addrs holds the janitor's Lease ("" when none) and
// fails when more than one says so.
func leader(t *testing.T, addrs map[string]string) (string, map[string]map[string]float64) {
	t.Helper()
	holder, all := "", map[string]map[string]float64{}
	for node, addr := range addrs {
		m, err := clustertest.Scrape(t.Context(), addr)
		if err != nil {
			continue // an agent restarting
		}
		all[node] = m
		if m["podcopy_janitor_leader"] == 1 {
			if holder != "" {
				t.Fatalf("two agents hold the janitor's Lease: %s and %s", holder, node)
			}
			holder = node
		}
	}
	return holder, all
}

// TestJanitorLease: one agent holds the janitor's Lease and only it runs the chores; killed,
// the other takes over within the Lease's duration.
func TestJanitorLease(t *testing.T) {
	node2 := secondNode(t)
	nodes := []string{firstNode, node2}
	addrs := map[string]string{}
	for _, n := range nodes {
		addrs[n] = agentAddr(t, n, agentPort)
	}
	var holder string
	waitFor(t, time.Minute, "a holder of the janitor's Lease", func(context.Context) (bool, error) {
		holder, _ = leader(t, addrs)
		return holder != "", nil
	})
	other := nodes[0]
	if holder == other {
		other = nodes[1]
	}
	_, m := leader(t, addrs)
	runsOther := m[other]["podcopy_janitor_runs_total"]
	if m[holder]["podcopy_janitor_runs_total"] < 1 || runsOther != 0 {
		t.Fatalf("janitor rounds: holder %s %.0f, other %s %.0f (want >= 1 and 0)", holder, m[holder]["podcopy_janitor_runs_total"], other, runsOther)
	}
	t.Logf("the agent on %s holds the Lease (%.0f janitor rounds); the agent on %s has run none", holder, m[holder]["podcopy_janitor_runs_total"], other)

	// The holder's node goes (its kubelet stopped, so nothing restarts the agent there).
	victim := agentOn(t, holder)
	cluster(t, "stop", kubeletOf(holder))
	defer func() {
		cluster(t, "resume", kubeletOf(holder))
		nodeReady(t, holder, true, 2*time.Minute)
	}()
	killAgent(t, holder, victim)
	killed := time.Now()
	waitFor(t, 2*time.Minute, "the other agent to take the Lease", func(context.Context) (bool, error) {
		h, _ := leader(t, addrs)
		return h == other, nil
	})
	took := time.Since(killed)
	t.Logf("the agent on %s took the Lease %.1fs after the holder was killed (Lease duration 15s)", other, took.Seconds())
	if took > 45*time.Second {
		t.Fatalf("takeover took %s", took)
	}
	// The node comes back with a new agent process, which does not run the chores.
	cluster(t, "resume", kubeletOf(holder))
	nodeReady(t, holder, true, 2*time.Minute)
	waitFor(t, 2*time.Minute, "the killed agent back", func(ctx context.Context) (bool, error) {
		p, err := clustertest.AgentPod(ctx, client, holder)
		return err == nil && restarts(*p) > restarts(victim), nil
	})
	time.Sleep(5 * time.Second)
	h, m := leader(t, addrs)
	if h != other || m[holder]["podcopy_janitor_runs_total"] != 0 {
		t.Fatalf("after the restart: holder %q, the restarted agent ran %.0f janitor rounds", h, m[holder]["podcopy_janitor_runs_total"])
	}
}

// TestNodeLoss: what a responder sees when a node dies mid-collection, with the times.
func TestNodeLoss(t *testing.T) {
	node2 := secondNode(t)
	ns := namespace(t)
	// ~400 MiB: the collection is still streaming when the fault is injected.
	big := "mkdir -p /var/log && head -c 419430400 /dev/zero > /var/log/big.bin"
	// collecting starts the 400 MiB collection of a new pod on node 2 and waits until bytes move.
	collecting := func(pod string) {
		pinnedPod(t, ns, pod, node2, big)
		annotate(t, ns, pod, map[string]string{"podcopy/collect": "/var/log/big.bin"})
		waitFor(t, 2*time.Minute, pod+" Running with bytes", func(ctx context.Context) (bool, error) {
			s, ok := getStatus(t, ns, pod)
			return ok && s.Phase == status.Running && s.Bytes > 0, nil
		})
	}
	resume := func() {
		cluster(t, "resume", "kubelet-"+node2)
		nodeReady(t, node2, true, 2*time.Minute)
		agentOn(t, node2)
	}

	t.Run("KubeletStopped", func(t *testing.T) {
		collecting("kubelet-stopped")
		cluster(t, "stop", "kubelet-"+node2)
		stopped := time.Now()
		defer resume()
		st := waitFinalWithin(t, ns, "kubelet-stopped", "", 3*time.Minute)
		took := time.Since(stopped)
		t.Logf("%.1fs after node %s's kubelet stopped: %s %s, attempt %d: %s", took.Seconds(), node2, st.Phase, st.Reason, st.Attempt, st.Message)
		if st.Phase != status.Failed || st.Reason != failure.NodeUnreachable {
			t.Fatalf("status %+v", st)
		}
		checkCompleteOrAbsent(t, ns, "kubelet-stopped", st)
	})

	t.Run("AgentKilled", func(t *testing.T) {
		collecting("agent-killed")
		killAgent(t, node2, agentOn(t, node2))
		killed := time.Now()
		st := waitFinalWithin(t, ns, "agent-killed", "", 5*time.Minute)
		t.Logf("%.1fs after node %s's agent was killed: %s, attempt %d: %s", time.Since(killed).Seconds(), node2, st.Phase, st.Attempt, st.Message)
		if st.Phase != status.Succeeded || st.Attempt < 2 {
			t.Fatalf("status %+v", st)
		}
		checkCompleteOrAbsent(t, ns, "agent-killed", st)
	})

	t.Run("NeverBack", func(t *testing.T) {
		collecting("never-back")
		agent := agentOn(t, node2)
		// The whole node goes: its kubelet, then its agent (which the kubelet cannot restart).
		cluster(t, "stop", "kubelet-"+node2)
		killAgent(t, node2, agent)
		lost := time.Now()
		defer resume()
		st := waitFinalWithin(t, ns, "never-back", "", 4*time.Minute)
		took := time.Since(lost)
		t.Logf("%.1fs after node %s went (NotReady after 20s, nodeLostAfter 30s): %s %s: %s", took.Seconds(), node2, st.Phase, st.Reason, st.Message)
		if st.Phase != status.Failed || st.Reason != failure.NodeLost || !strings.Contains(st.Message, node2) {
			t.Fatalf("status %+v", st)
		}
		waitEvent(t, ns, "never-back", nodeloss.ReasonNodeLost)
		checkCompleteOrAbsent(t, ns, "never-back", st)
		// The node comes back: its agent leaves the ended request as it is.
		resume()
		time.Sleep(10 * time.Second)
		if after, _ := getStatus(t, ns, "never-back"); after.Reason != failure.NodeLost || after.Phase != status.Failed {
			t.Fatalf("after the node came back: %+v", after)
		}
	})

	t.Run("FollowResumes", func(t *testing.T) {
		// A followed log on node 2 that grows by a numbered line every 100 ms; the node's
		// kubelet is away for 25 s; the harvested file is the source, no gap, no duplicate.
		pinnedPod(t, ns, "followed", node2, `mkdir -p /var/log && (i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo "line $i" >> /var/log/app.log; sleep 0.1; done; touch /tmp/written) &`)
		annotate(t, ns, "followed", map[string]string{"podcopy/collect": "/var/log/app.log", "podcopy/mode": "follow", "podcopy/interval": "5s"})
		waitFor(t, time.Minute, "the follow to be Running", func(ctx context.Context) (bool, error) {
			s, ok := getStatus(t, ns, "followed")
			return ok && s.Phase == status.Running && s.Bytes > 0, nil
		})
		cluster(t, "stop", "kubelet-"+node2)
		time.Sleep(25 * time.Second)
		resume()
		target := exec.Target{Namespace: ns, Pod: "followed", Container: "app"}
		waitFor(t, 3*time.Minute, "the writer to finish", func(ctx context.Context) (bool, error) {
			_, err := run(t, target, "test", "-f", "/tmp/written")
			return err == nil, nil
		})
		want := mustRun(t, target, "cat", "/var/log/app.log")
		dest := followDest(t, ns, "followed", "app", "/var/log/app.log")
		var got string
		waitFor(t, 2*time.Minute, "the harvested file to catch up", func(ctx context.Context) (bool, error) {
			got, _ = run(t, analysis(t), "cat", dest)
			return len(got) >= len(want), nil
		})
		checkLines(t, got, want)
		t.Logf("followed %d bytes across a 25 s kubelet outage on %s: no gap, no duplicate", len(got), node2)
	})
}
