package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// TestCollectSelector: collect -l requests every matching pod (and no other), waits for
// each, prints one line per pod and fails naming the one that failed.
func TestCollectSelector(t *testing.T) {
	t.Parallel()
	mk := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "side"}}}}
	}
	db := map[string]string{"app": "db"}
	cs := fake.NewClientset(mk("db-0", db), mk("db-1", db), mk("db-2", db), mk("web", map[string]string{"app": "web"}))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { // the agent: answer each request once it is there
		defer close(done)
		for ctx.Err() == nil {
			list, err := cs.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
			if err != nil {
				return
			}
			for i := range list.Items {
				p := &list.Items[i]
				req, err := request.Parse(p, testPolicy())
				if err != nil || strings.Contains(p.Annotations[status.Annotation], req.ID()) {
					continue
				}
				st := status.Status{Request: req.ID(), Phase: status.Succeeded, Message: "collected from " + req.Container}
				if p.Name == "db-2" {
					st.Phase, st.Message = status.Failed, "/var/log/db.log: no such file or directory in container "+req.Container
				}
				b, _ := json.Marshal(st)
				p.Annotations[status.Annotation] = string(b)
				_, _ = cs.CoreV1().Pods("ns").Update(ctx, p, metav1.UpdateOptions{})
			}
		}
	}()
	out := &bytes.Buffer{}
	o := NewOptions(out, io.Discard).With(cs, nil, "ns")
	err := o.collectMany(t.Context(), []string{"/var/log/db.log"}, collectFlags{selector: "app=db", allContainers: true}, true)
	cancel()
	<-done
	if err == nil || !strings.Contains(err.Error(), "2 of 6 collections failed") || !strings.Contains(err.Error(), "ns/db-2[app]: Failed") || !strings.Contains(err.Error(), "ns/db-2[side]") {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"ns/db-0[app]: Succeeded: collected from app", "ns/db-0[side]: Succeeded: collected from side", "ns/db-1[app]: Succeeded"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output %q lacks %q", out.String(), want)
		}
	}
	web, _ := cs.CoreV1().Pods("ns").Get(t.Context(), "web", metav1.GetOptions{})
	if _, ok := web.Annotations[request.AnnotationCollect]; ok {
		t.Fatal("a pod outside the selector was requested")
	}
	if err := o.collectMany(t.Context(), []string{"/x"}, collectFlags{selector: "app=none"}, false); err == nil || !strings.Contains(err.Error(), "no pod") {
		t.Fatalf("empty selection: %v", err)
	}
}
