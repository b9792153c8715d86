package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podcopy/podcopy/pkg/status"
)

// scaleTests: 100 pods annotated at once on the node; then agent memory in single-replica
// mode with 0, 1,000 and 5,000 pods in the cluster (pods no node can take, so they never run
// but are in the informer's cache).
func (e *env) scaleTests(ctx context.Context) ([]string, error) {
	var out []string
	const ns = "bench-scale"
	fmt.Println("scale: 100 pods annotated at once ...")
	if err := e.helm(ctx, "config.exec.transport=auto", "config.compression=none"); err != nil {
		return nil, err
	}
	if err := e.namespace(ctx, ns); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			if err := e.plainPod(ctx, ns, fmt.Sprintf("p%03d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	pid, err := agentPID()
	if err != nil {
		return nil, err
	}
	_ = resetPeak(pid)
	maxInflight := 0.0
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if m, err := e.scrape(ctx); err == nil {
					maxInflight = max(maxInflight, m["podcopy_inflight_collections"])
				}
			}
		}
	})
	start := time.Now()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{"podcopy/collect": "/var/log/app.log"}}})
	for i := range 100 {
		if _, err := e.client.CoreV1().Pods(ns).Patch(ctx, fmt.Sprintf("p%03d", i), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return nil, err
		}
	}
	succeeded := 0
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 15*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		succeeded = 0
		for i := range list.Items {
			if s, ok := status.Get(&list.Items[i]); ok && s.Phase == status.Succeeded {
				succeeded++
			} else if ok && s.Done(s.Request) {
				return false, fmt.Errorf("pod %s: %s %s", list.Items[i].Name, s.Phase, s.Message)
			}
		}
		return succeeded == 100, nil
	})
	total := time.Since(start)
	close(stop)
	sampler.Wait()
	if err != nil {
		return nil, err
	}
	peak, _ := peakRSS(pid)
	out = append(out, fmt.Sprintf("100 pods annotated at once (1 MiB each): %d/100 succeeded in %.1fs; in-flight gauge max %.0f (concurrency 4); agent peak RSS %.1f MiB",
		succeeded, total.Seconds(), maxInflight, float64(peak)/(1<<20)))
	fmt.Println("  ", out[len(out)-1])
	_ = e.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})

	fmt.Println("scale: single-replica mode with 0, 1,000, 5,000 pods ...")
	if err := e.helm(ctx, "mode=deployment"); err != nil {
		return nil, err
	}
	defer func() { _ = e.helm(context.WithoutCancel(ctx), "mode=daemonset") }()
	idle := fmt.Sprintf("bench-idle-%d", time.Now().Unix())
	if err := e.namespace(ctx, idle); err != nil {
		return nil, err
	}
	created := 0
	for _, target := range []int{0, 1000, 5000} {
		var cwg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for ; created < target; created++ {
			name := fmt.Sprintf("idle-%05d", created)
			sem <- struct{}{}
			cwg.Go(func() {
				defer func() { <-sem }()
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "idle", "tier": "bench"},
					Annotations: map[string]string{"team": "payments", "kubectl.kubernetes.io/last-applied-configuration": string(make([]byte, 2048))}},
					Spec: corev1.PodSpec{NodeSelector: map[string]string{"podcopy.dev/bench": "never"}, Containers: []corev1.Container{{Name: "app", Image: "podcopy.local/busybox:1",
						Env: []corev1.EnvVar{{Name: "A", Value: "some value"}, {Name: "B", Value: "another value"}}}}}}
				_, _ = e.client.CoreV1().Pods(idle).Create(ctx, p, metav1.CreateOptions{})
			})
		}
		cwg.Wait()
		time.Sleep(15 * time.Second) // let the informer catch up and the heap settle
		m, err := e.scrape(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("single-replica mode, %d pods in the cluster: agent RSS %.1f MiB (Go heap in use %.1f MiB)",
			target, m["process_resident_memory_bytes"]/(1<<20), m["go_memstats_heap_inuse_bytes"]/(1<<20)))
		fmt.Println("  ", out[len(out)-1])
	}
	_ = e.client.CoreV1().Namespaces().Delete(ctx, idle, metav1.DeleteOptions{})
	return out, nil
}

// plainPod is a pod whose file is written by an init container into a shared emptyDir, so it
// needs no readiness probe: 100 exec probes a second would measure the kubelet, not podcopy.
func (e *env) plainPod(ctx context.Context, ns, name string) error {
	zero := int64(0)
	vol := []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log"}}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: &zero,
		Volumes:                       []corev1.Volume{{Name: "logs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		InitContainers: []corev1.Container{{Name: "init", Image: "podcopy.local/busybox:1", ImagePullPolicy: corev1.PullNever, VolumeMounts: vol,
			Command: []string{"/bin/sh", "-c", "head -c 1048576 /dev/urandom > /var/log/app.log"}}},
		Containers: []corev1.Container{{Name: "app", Image: "podcopy.local/busybox:1", ImagePullPolicy: corev1.PullNever, VolumeMounts: vol,
			Command: []string{"/bin/sleep", "2147483647"}}},
	}}
	if _, err := e.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, err
	})
}
