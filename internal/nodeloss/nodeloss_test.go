package nodeloss

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

var now = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func node(name string, ready corev1.ConditionStatus, since time.Time) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: ready, Reason: "NodeStatusUnknown", Message: "Kubelet stopped posting node status.",
			LastTransitionTime: metav1.NewTime(since)}}}}
}

func pod(name, nodeName string, st *status.Status) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name),
		Annotations: map[string]string{request.AnnotationCollect: "/var/log/app.log"}}, Spec: corev1.PodSpec{NodeName: nodeName}}
	if st != nil {
		b, _ := json.Marshal(st)
		p.Annotations[status.Annotation] = string(b)
	}
	return p
}

func TestMarker(t *testing.T) {
	t.Parallel()
	lost := node("node2", corev1.ConditionUnknown, now.Add(-3*time.Minute))
	recent := node("node3", corev1.ConditionFalse, now.Add(-30*time.Second))
	ready := node("node1", corev1.ConditionTrue, now.Add(-time.Hour))
	pods := []*corev1.Pod{
		pod("running", "node2", &status.Status{Request: "req", Phase: status.Running, Collection: "c1", Attempt: 1, StartTime: "t0"}),
		pod("unstarted", "node2", nil),
		pod("done", "node2", &status.Status{Request: "req", Phase: status.Succeeded}),
		pod("older", "node2", &status.Status{Request: "old", Phase: status.Succeeded}),
		pod("young", "node3", &status.Status{Request: "req", Phase: status.Running}),
		pod("healthy", "node1", &status.Status{Request: "req", Phase: status.Running}),
	}
	client := fake.NewClientset()
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range []*corev1.Node{lost, recent, ready} {
		_ = indexer.Add(n)
	}
	for _, p := range pods {
		if _, err := client.CoreV1().Pods("ns").Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rec := record.NewFakeRecorder(10)
	m := Marker{Client: client, Nodes: corelisters.NewNodeLister(indexer), Recorder: rec, After: 2 * time.Minute,
		ID: func(*corev1.Pod) string { return "req" }, Now: func() time.Time { return now }}
	if n := m.Once(t.Context()); n != 3 {
		t.Fatalf("marked %d, want 3 (running, unstarted, older)", n)
	}
	want := map[string]bool{"running": true, "unstarted": true, "older": true}
	for _, p := range pods {
		got, _ := client.CoreV1().Pods("ns").Get(t.Context(), p.Name, metav1.GetOptions{})
		st, _ := status.Get(got)
		marked := st.Reason == failure.NodeLost
		if marked != want[p.Name] {
			t.Errorf("%s: marked %v, want %v (status %+v)", p.Name, marked, want[p.Name], st)
		}
		if marked && (st.Phase != status.Failed || st.Request != "req" || !strings.Contains(st.Message, "node node2 is lost")) {
			t.Errorf("%s: status %+v", p.Name, st)
		}
		if p.Name == "running" && (st.Collection != "c1" || st.Attempt != 1 || st.StartTime != "t0") {
			t.Errorf("running: the attempt's collection, start and attempt are kept: %+v", st)
		}
	}
	if len(rec.Events) != 3 {
		t.Errorf("%d events, want 3", len(rec.Events))
	}
	if n := m.Once(t.Context()); n != 0 {
		t.Errorf("second round marked %d, want 0 (already ended)", n)
	}
}

func TestNotReady(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		node *corev1.Node
		want bool
	}{
		{"ready", node("a", corev1.ConditionTrue, now), false},
		{"unknown", node("a", corev1.ConditionUnknown, now), true},
		{"false", node("a", corev1.ConditionFalse, now), true},
		{"registering", &corev1.Node{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, why, got := NotReady(tt.node); got != tt.want || (got && !strings.Contains(why, "Kubelet stopped")) {
				t.Errorf("NotReady = %v (%q), want %v", got, why, tt.want)
			}
		})
	}
}
