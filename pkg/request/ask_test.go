package request

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/policy"
)

// apply is a merge patch of annotations applied to existing ones.
func apply(existing map[string]string, patch map[string]*string) map[string]string {
	out := map[string]string{}
	for k, v := range existing {
		out[k] = v
	}
	for k, v := range patch {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	return out
}

// TestAskPatch: what the plugin and the alert receiver ask is what the agent parses, and a
// new request leaves nothing of an earlier one (but the pod's own podcopy/destination).
func TestAskPatch(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	earlier := map[string]string{AnnotationCollect: "/old", AnnotationInclude: "spec", AnnotationCollectOn: "restart", AnnotationSource: "helper",
		AnnotationAlert: `{"source":"falco"}`, AnnotationInterval: "1m", AnnotationFollowUntil: "2026-12-07T09:00:00Z", AnnotationDestination: "analysis-1", "other": "kept"}
	tests := []struct {
		name string
		ask  Ask
		want func(t *testing.T, r Request)
	}{
		{name: "once", ask: Ask{Paths: []string{"/var/log/a", "/var/log/b"}, Container: "app"}, want: func(t *testing.T, r Request) {
			if r.Mode != ModeOnce || !slices.Equal(r.Paths, []string{"/var/log/a", "/var/log/b"}) || r.Container != "app" || len(r.Include) > 0 || len(r.CollectOn) > 0 || r.Source != "" || r.Alert != nil {
				t.Errorf("request %+v", r)
			}
		}},
		{name: "follow for an hour", ask: Ask{Paths: []string{"/var/log/a"}, Container: "app", Mode: "follow", Interval: "10s", For: Duration{time.Hour}}, want: func(t *testing.T, r Request) {
			if r.Mode != ModeFollow || r.Interval != "10s" || !r.Until.Equal(now.Add(time.Hour)) {
				t.Errorf("request %+v", r)
			}
		}},
		{name: "armed with records", ask: Ask{Paths: []string{"/var/log/a"}, Container: "app", Include: []string{"spec", "logs"}, CollectOn: []string{"termination"}, Source: "helper"}, want: func(t *testing.T, r Request) {
			if !slices.Equal(r.Include, []string{"logs", "spec"}) || !slices.Equal(r.CollectOn, []string{"termination"}) || r.Source != SourceHelper {
				t.Errorf("request %+v", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ann := apply(earlier, tt.ask.Patch("t1", now))
			if ann["other"] != "kept" || ann[AnnotationDestination] != "analysis-1" {
				t.Errorf("the patch touched what is not the request: %v", ann)
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Annotations: ann},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
			r, err := Parse(pod, policy.Policy{AllowPaths: []string{"/**"}})
			if err != nil {
				t.Fatal(err)
			}
			tt.want(t, r)
		})
	}
	stopped := apply(earlier, StopPatch())
	if len(stopped) != 2 || stopped["other"] != "kept" || stopped[AnnotationDestination] != "analysis-1" {
		t.Errorf("after a stop: %v", stopped)
	}
}
