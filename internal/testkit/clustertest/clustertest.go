// Package clustertest is what the e2e suite and the benchmarks (bench/) both do on the
// local cluster: source pods that run a script and report Ready when it is done, waiting for
// Ready, finding the analysis pod the agent would choose, and reading the agent's metrics.
package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/pkg/exec"
)

// SourcePod is a pod whose container "app" runs script in image, touches /tmp/ready and
// sleeps: it is Ready once script has finished.
func SourcePod(ns, name, image, script string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", "set -e\n" + script + "\ntouch /tmp/ready\nexec sleep 2147483647"},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/ready"}}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// WaitReady waits up to timeout until pod ns/name is Ready.
func WaitReady(ctx context.Context, client kubernetes.Interface, ns, name string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return destination.Ready(p), nil
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s Ready: %w", ns, name, err)
	}
	return nil
}

// Analysis is the analysis pod the agent chooses with the install's defaults.
func Analysis(ctx context.Context, client kubernetes.Interface) (exec.Target, error) {
	return destination.Chooser{Client: client, Config: destination.Defaults()}.Choose(ctx, "")
}

// Scrape returns the metric samples served at addr's /metrics, by "name{labels}".
func Scrape(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads Prometheus text exposition into samples by "name{labels}".
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndex(line, " ")
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// FirstNode is the local cluster's first node, where pods that do not ask for a node run
// (extra nodes are tainted: hack/cluster/cluster.sh).
const FirstNode = "localhost"

// AgentPod is the live, Ready agent pod on node (an error until there is exactly one).
func AgentPod(ctx context.Context, client kubernetes.Interface, node string) (*corev1.Pod, error) {
	list, err := client.CoreV1().Pods("podcopy").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=agent"})
	if err != nil {
		return nil, err
	}
	var live []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.NodeName == node && p.DeletionTimestamp == nil && destination.Ready(p) {
			live = append(live, p)
		}
	}
	if len(live) != 1 {
		return nil, fmt.Errorf("%d Ready agent pods on node %s, want 1", len(live), node)
	}
	return live[0], nil
}

// AgentAddr is where the agent on node serves port: agents run in the host network and
// bind their node's address (listenOnHostIP), the pod's host IP.
func AgentAddr(ctx context.Context, client kubernetes.Interface, node, port string) (string, error) {
	p, err := AgentPod(ctx, client, node)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(p.Status.HostIP, port), nil
}
