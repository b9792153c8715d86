// Package clustertest is what the e2e suite and the benchmarks (bench/) both do on the
// local cluster: source pods that run a script and report Ready when it is done, waiting for
// Ready, finding the analysis pod the agent would choose, and reading the agent's metrics.
package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/pkg/destination"
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
	return destination.Chooser{Client: client, Config: destination.Config{
		Namespace: "podcopy", Selector: "app.kubernetes.io/component=analysis", Dir: "/collect"}}.Choose(ctx, "")
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
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
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
