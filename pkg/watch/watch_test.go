package watch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podcopy/podcopy/pkg/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recordingSyncer struct {
	mu      sync.Mutex
	synced  []string
	forgot  []types.UID
	block   chan struct{} // when set, Sync waits for ctx or this
	started chan string
	causes  []error
}

func (r *recordingSyncer) Sync(ctx context.Context, pod *corev1.Pod) error {
	r.mu.Lock()
	r.synced = append(r.synced, pod.Name)
	r.mu.Unlock()
	if r.started != nil {
		r.started <- pod.Name
	}
	if r.block != nil {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			r.causes = append(r.causes, context.Cause(ctx))
			r.mu.Unlock()
		case <-r.block:
		}
	}
	return nil
}

func (r *recordingSyncer) Forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgot = append(r.forgot, uid)
}

func (r *recordingSyncer) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.synced...)
}

func pod(name string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Annotations: ann,
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
}

// startedInformers builds the pod informers as the agent's main does, and starts them.
func startedInformers(t *testing.T, client kubernetes.Interface) []coreinformers.PodInformer {
	t.Helper()
	var out []coreinformers.PodInformer
	for _, f := range PodInformers(client, nil, "") {
		pods := f.Core().V1().Pods()
		pods.Informer() // a factory starts only the informers asked for before Start
		out = append(out, pods)
		f.Start(t.Context().Done())
		t.Cleanup(f.Shutdown)
	}
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestControllerSyncsAnnotatedPods(t *testing.T) {
	client := fake.NewClientset(pod("plain", nil), pod("asked", map[string]string{"podcopy/collect": "/var/log/x"}))
	s := &recordingSyncer{}
	var drained atomic.Bool
	c, err := New(s, startedInformers(t, client), Options{Workers: 2, Grace: time.Second, Drain: func() { drained.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	eventually(t, "first sync", func() bool { return len(s.names()) == 1 })
	if !c.Ready() || s.names()[0] != "asked" {
		t.Fatalf("ready %v synced %v", c.Ready(), s.names())
	}
	// Our own status write does not enqueue the pod again; a new annotation does.
	setAnnotation := func(k, v string) {
		p, err := client.CoreV1().Pods("ns").Get(ctx, "asked", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p = p.DeepCopy()
		p.Annotations[k] = v
		if _, err := client.CoreV1().Pods("ns").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setAnnotation(status.Annotation, `{"phase":"Running"}`)
	setAnnotation("podcopy/trigger", "2")
	eventually(t, "second sync", func() bool { return len(s.names()) == 2 })
	// Removing the request is synced too (it stops a follow); a pod that never asked is not.
	p, err := client.CoreV1().Pods("ns").Get(ctx, "asked", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p = p.DeepCopy()
	delete(p.Annotations, "podcopy/collect")
	if _, err := client.CoreV1().Pods("ns").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sync of the removal", func() bool { return len(s.names()) == 3 })
	if err := client.CoreV1().Pods("ns").Delete(ctx, "asked", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "forget", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.forgot) == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !drained.Load() {
		t.Fatal("Drain was not called on shutdown")
	}
	if len(s.names()) != 3 {
		t.Fatalf("synced %v; a status-only update was synced", s.names())
	}
}

func TestControllerShutdownGrace(t *testing.T) {
	client := fake.NewClientset(pod("slow", map[string]string{"podcopy/collect": "/var/log/x"}))
	s := &recordingSyncer{block: make(chan struct{}), started: make(chan string, 1)}
	c, err := New(s, startedInformers(t, client), Options{Workers: 1, Grace: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	<-s.started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(s.causes) != 1 || !errors.Is(s.causes[0], ErrShutdown) {
		t.Fatalf("in-flight sync ended with %v, want ErrShutdown after the grace period", s.causes)
	}
}

func TestTransform(t *testing.T) {
	t.Parallel()
	in := pod("p", map[string]string{"podcopy/collect": "/x", corev1.LastAppliedConfigAnnotation: "{huge}", "tenant/blob": strings.Repeat("x", 200<<10),
		"kubectl.kubernetes.io/default-container": "c"})
	always := corev1.ContainerRestartPolicyAlways
	in.Spec = corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "A"}}}},
		InitContainers: []corev1.Container{{Name: "init"}, {Name: "podcopy", RestartPolicy: &always}}}
	out, err := Transform(in)
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	if p.ManagedFields != nil || p.Annotations[corev1.LastAppliedConfigAnnotation] != "" || p.Annotations["tenant/blob"] != "" || p.Spec.Containers[0].Env != nil {
		t.Fatalf("transform kept %+v", p)
	}
	if p.Annotations["podcopy/collect"] != "/x" || p.Annotations["kubectl.kubernetes.io/default-container"] != "c" || p.Spec.NodeName != "n" || p.Spec.Containers[0].Image != "i" || p.UID != "uid-p" ||
		len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].Name != "podcopy" {
		t.Fatalf("transform lost %+v", p)
	}
}
