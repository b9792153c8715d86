package podrecord

import (
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestGather: the pod is stored without managedFields, with its events and each
// container's log, a previous log only for a container that restarted.
func TestGather(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "side"}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", RestartCount: 2, ImageID: "sha256:abc", ContainerID: "containerd://1"}, {Name: "side"}}},
	}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e1"}, InvolvedObject: corev1.ObjectReference{UID: "u1"}, Reason: "Killing"}
	g := Gatherer{Client: fake.NewClientset(pod, ev), SpoolDir: t.TempDir()}
	recs, cleanup, err := g.Gather(t.Context(), pod, []string{"events", "logs", "spec"})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	got := map[string]string{}
	for _, r := range recs {
		if r.Error != "" {
			t.Fatalf("%s: %s", r.Name, r.Error)
		}
		body, size, err := r.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(body)
		_ = body.Close()
		if int64(len(b)) != size {
			t.Fatalf("%s: size %d, read %d", r.Name, size, len(b))
		}
		got[r.Name+" "+r.Kind] = string(b)
	}
	want := []string{"_pod/pod.json spec", "_pod/events.json events", "_pod/logs/app.log log", "_pod/logs/app.previous.log previous-log", "_pod/logs/side.log log"}
	if len(got) != len(want) {
		t.Fatalf("records %v", got)
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Fatalf("no record %s in %v", w, got)
		}
	}
	if spec := got["_pod/pod.json spec"]; strings.Contains(spec, "managedFields") || !strings.Contains(spec, "containerd://1") || !strings.Contains(spec, `"kind": "Pod"`) {
		t.Fatalf("pod record %s", spec)
	}
	if !strings.Contains(got["_pod/events.json events"], "Killing") {
		t.Fatalf("events record %s", got["_pod/events.json events"])
	}
}
