package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podcopy/podcopy/pkg/status"
)

// scaleTests: -scale-pods pods annotated at once on the node; then agent memory in
// single-replica mode with 0, 1,000 and 5,000 pods in the cluster (pods no node can take, so
// they never run but are in the informer's cache).
func (e *env) scaleTests(ctx context.Context) ([]string, error) {
	var out []string
	const ns = "bench-scale"
	fmt.Printf("scale: %d pods annotated at once, concurrency %d ...\n", e.o.scalePods, e.o.scaleConcurrency)
	if err := e.helm(ctx, "config.exec.transport=auto", "config.compression=auto", fmt.Sprintf("config.concurrency=%d", e.o.scaleConcurrency)); err != nil {
		return nil, err
	}
	if err := e.namespace(ctx, ns); err != nil {
		return nil, err
	}
	// In waves of 50: all at once, the runtime times out creating containers (seen with
	// 1,000: "context deadline exceeded", retried with back-off) and starting takes longer.
	t0 := time.Now()
	for wave := 0; wave < e.o.scalePods; wave += 50 {
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := wave; i < min(wave+50, e.o.scalePods); i++ {
			wg.Go(func() {
				if err := e.plainPod(ctx, ns, fmt.Sprintf("p%04d", i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return nil, err
		}
		if err := e.allRunning(ctx, ns, min(wave+50, e.o.scalePods)); err != nil {
			return nil, err
		}
	}
	started := time.Since(t0)
	fmt.Printf("  %d pods running after %.0fs\n", e.o.scalePods, started.Seconds())
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
	before, err := e.scrapeRequests(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	// A fresh trigger: pods kept from an earlier run are collected again.
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		"podcopy/collect": "/tmp/app.log", "podcopy/trigger": fmt.Sprint(time.Now().UnixNano())}}})
	for i := range e.o.scalePods {
		if _, err := e.client.CoreV1().Pods(ns).Patch(ctx, fmt.Sprintf("p%04d", i), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return nil, err
		}
	}
	succeeded := 0
	err = wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Minute, true, func(ctx context.Context) (bool, error) {
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
		return succeeded == e.o.scalePods, nil
	})
	total := time.Since(start)
	close(stop)
	sampler.Wait()
	if err != nil {
		return nil, err
	}
	after, err := e.scrapeRequests(ctx)
	if err != nil {
		return nil, err
	}
	peak, _ := peakRSS(pid)
	out = append(out, fmt.Sprintf("%d pods annotated at once (1 MiB each): %d/%d succeeded in %.1fs (%.2fs per collection); in-flight gauge max %.0f (concurrency %d); agent peak RSS %.1f MiB; API requests per collection: %s; the node took %.0fs to start the pods",
		e.o.scalePods, succeeded, e.o.scalePods, total.Seconds(), total.Seconds()/float64(e.o.scalePods), maxInflight, e.o.scaleConcurrency, float64(peak)/(1<<20), perCollection(before, after, e.o.scalePods), started.Seconds()))
	fmt.Println("  ", out[len(out)-1])
	if !e.o.keepScalePods {
		_ = e.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	}

	fmt.Println("scale: single-replica mode with 0, 1,000, 5,000 pods ...")
	if err := e.helm(ctx, "mode=deployment"); err != nil {
		return nil, err
	}
	defer func() { _ = e.helm(context.WithoutCancel(ctx), "mode=daemonset", "config.concurrency=4") }()
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

// plainPod is a pod in the host network (the pod subnet is a /24) whose container writes its
// file before it sleeps; it needs no probe: 1,000 exec probes would measure the kubelet.
func (e *env) plainPod(ctx context.Context, ns, name string) error {
	zero := int64(0)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: &zero,
		HostNetwork:                   true,
		Containers: []corev1.Container{{Name: "app", Image: "podcopy.local/busybox:1", ImagePullPolicy: corev1.PullNever,
			Command: []string{"/bin/sh", "-c", "head -c 1048576 /dev/urandom > /tmp/app.log && exec sleep 2147483647"}}},
	}}
	_, err := e.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil // kept from an earlier run (-keep-scale-pods): starting 1,000 takes the node ~20 minutes
	}
	return err
}

// allRunning waits until n pods in ns run (and a moment more, for the last files).
func (e *env) allRunning(ctx context.Context, ns string, n int) error {
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 30*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == n, nil
	})
	time.Sleep(2 * time.Second)
	return err
}

// scrapeRequests reads podcopy_api_requests_total by method.
func (e *env) scrapeRequests(ctx context.Context) (map[string]float64, error) {
	m, err := e.scrape(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for k, v := range m {
		if method, ok := strings.CutPrefix(k, `podcopy_api_requests_total{method="`); ok {
			out[strings.TrimSuffix(method, `"}`)] = v
		}
	}
	return out, nil
}

// perCollection formats the requests made between two scrapes, per collection, by method.
func perCollection(before, after map[string]float64, n int) string {
	var parts []string
	total := 0.0
	for _, method := range slices.Sorted(maps.Keys(after)) {
		d := after[method] - before[method]
		total += d
		parts = append(parts, fmt.Sprintf("%s %.1f", method, d/float64(n)))
	}
	return fmt.Sprintf("%.1f (%s)", total/float64(n), strings.Join(parts, ", "))
}
