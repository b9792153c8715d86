package request

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/policy"
)

func pod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "side"}}},
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ann     map[string]string
		want    Request
		wantErr string
	}{
		{name: "single file", ann: map[string]string{AnnotationCollect: "/var/log/mysql/slow.log"},
			want: Request{Paths: []string{"/var/log/mysql/slow.log"}, Container: "app", Mode: ModeOnce}},
		{name: "several sorted deduped", ann: map[string]string{AnnotationCollect: " /var/log/b , /var/log/a,/var/log/b/,"},
			want: Request{Paths: []string{"/var/log/a", "/var/log/b"}, Container: "app", Mode: ModeOnce}},
		{name: "glob", ann: map[string]string{AnnotationCollect: "/var/log/app/*.log"},
			want: Request{Paths: []string{"/var/log/app/*.log"}, Container: "app", Mode: ModeOnce}},
		{name: "shell metacharacters are literal names", ann: map[string]string{AnnotationCollect: "/tmp/a;reboot,/tmp/$(id),/tmp/`id`,/tmp/x|y&z"},
			want: Request{Paths: []string{"/tmp/$(id)", "/tmp/`id`", "/tmp/a;reboot", "/tmp/x|y&z"}, Container: "app", Mode: ModeOnce}},
		{name: "default container annotation", ann: map[string]string{AnnotationCollect: "/tmp/x", DefaultContainerAnnotation: "side"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "side", Mode: ModeOnce}},
		{name: "explicit container wins", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationContainer: "app", DefaultContainerAnnotation: "side"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "app", Mode: ModeOnce}},
		{name: "follow default interval", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "app", Mode: ModeFollow, Interval: "30s"}},
		{name: "follow interval normalized", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationInterval: "60s"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "app", Mode: ModeFollow, Interval: "1m0s"}},
		{name: "trigger and destination", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationTrigger: "t1", AnnotationDestination: "analysis-0"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "app", Mode: ModeOnce, Trigger: "t1", Destination: "analysis-0"}},
		{name: "empty", ann: map[string]string{AnnotationCollect: " , "}, wantErr: "is empty"},
		{name: "relative", ann: map[string]string{AnnotationCollect: "var/log/x"}, wantErr: "not an absolute path"},
		{name: "dotdot", ann: map[string]string{AnnotationCollect: "/var/log/../../etc/shadow"}, wantErr: `contains ".."`},
		{name: "dot", ann: map[string]string{AnnotationCollect: "/var/log/./x"}, wantErr: `contains "."`},
		{name: "newline", ann: map[string]string{AnnotationCollect: "/var/log/x\n/etc/shadow"}, wantErr: "control character"},
		{name: "nul", ann: map[string]string{AnnotationCollect: "/var/log/x\x00"}, wantErr: "control character"},
		{name: "root", ann: map[string]string{AnnotationCollect: "/"}, wantErr: "whole filesystem"},
		{name: "bad glob", ann: map[string]string{AnnotationCollect: "/var/log/[x"}, wantErr: "not a valid glob"},
		{name: "denied", ann: map[string]string{AnnotationCollect: "/var/run/secrets/kubernetes.io/serviceaccount/token"}, wantErr: "denied by policy.denyPaths"},
		{name: "denied shadow", ann: map[string]string{AnnotationCollect: "/etc/shadow"}, wantErr: "denied by policy.denyPaths"},
		{name: "not allowed", ann: map[string]string{AnnotationCollect: "/etc/passwd"}, wantErr: "outside policy.allowPaths"},
		{name: "unknown container", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationContainer: "nope"}, wantErr: `container "nope" is not in pod ns/p`},
		{name: "unknown mode", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "sometimes"}, wantErr: "is unknown"},
		{name: "interval too short", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationInterval: "1s"}, wantErr: "shorter than the minimum 5s"},
		{name: "interval garbage", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationInterval: "$(reboot)"}, wantErr: "not a Go duration"},
		{name: "bad destination", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationDestination: "../x"}, wantErr: "is not a pod name"},
		{name: "collect-on and include sorted", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationCollectOn: "restart, termination,restart", AnnotationInclude: "logs,spec,events"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "app", Mode: ModeOnce, CollectOn: []string{"restart", "termination"}, Include: []string{"events", "logs", "spec"}}},
		{name: "collect-on unknown", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationCollectOn: "reboot"}, wantErr: `"reboot" is unknown`},
		{name: "collect-on with follow", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationCollectOn: "termination"}, wantErr: "applies to once requests"},
		{name: "include unknown", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationInclude: "secrets"}, wantErr: `"secrets" is unknown`},
		{name: "include checkpoint", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationInclude: "spec,checkpoint"}, wantErr: "checkpoint is not supported"},
		{name: "include with follow", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationInclude: "logs"}, wantErr: "applies to once requests"},
		{name: "follow-until", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationFollowUntil: "2026-12-02T15:00:00Z"},
			want: Request{Paths: []string{"/tmp/x"}, Container: "app", Mode: ModeFollow, Interval: "30s"}},
		{name: "follow-until with once", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationFollowUntil: "2026-12-02T15:00:00Z"}, wantErr: "applies to follow requests"},
		{name: "follow-until garbage", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationMode: "follow", AnnotationFollowUntil: "tomorrow"}, wantErr: "not an RFC 3339 time"},
		{name: "alert not json", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationAlert: "{"}, wantErr: "not an alert record"},
		{name: "alert unknown field", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationAlert: `{"rule":"r","x":1}`}, wantErr: "not an alert record"},
		{name: "alert too large", ann: map[string]string{AnnotationCollect: "/tmp/x", AnnotationAlert: `{"rule":"` + strings.Repeat("r", MaxAlertBytes) + `"}`}, wantErr: "more than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(pod(tt.ann), policy.Default())
			if tt.wantErr != "" {
				var inv *failure.Invalid
				if !errors.As(err, &inv) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want InvalidError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID() != tt.want.ID() {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestIDStable(t *testing.T) {
	t.Parallel()
	a, _ := Parse(pod(map[string]string{AnnotationCollect: "/tmp/b,/tmp/a"}), policy.Default())
	b, _ := Parse(pod(map[string]string{AnnotationCollect: "/tmp/a, /tmp/b"}), policy.Default())
	c, _ := Parse(pod(map[string]string{AnnotationCollect: "/tmp/a,/tmp/b", AnnotationTrigger: "2"}), policy.Default())
	if a.ID() != b.ID() {
		t.Fatal("same request, different ids")
	}
	if a.ID() == c.ID() {
		t.Fatal("new trigger, same id")
	}
	// Requests without the newer annotations keep the identity they always had.
	if a.ID() != "f07c162bdcd568b1442d9b0716e4103d5a0bea0c102aff3f34e61a5988fe0bc8" {
		t.Fatalf("the identity of a plain request changed: %s", a.ID())
	}
	d, _ := Parse(pod(map[string]string{AnnotationCollect: "/tmp/a,/tmp/b", AnnotationAlert: `{"source":"falco","rule":"r"}`}), policy.Default())
	if d.ID() != a.ID() || d.Alert == nil || d.Alert.Rule != "r" {
		t.Fatalf("an alert record changed the identity or was not read: %+v", d)
	}
	e, _ := Parse(pod(map[string]string{AnnotationCollect: "/tmp/a,/tmp/b", AnnotationCollectOn: "termination"}), policy.Default())
	f := e
	f.Occasion = "termination"
	if e.ID() == a.ID() || f.ID() == e.ID() {
		t.Fatal("collect-on or the occasion did not change the identity")
	}
	raw := pod(map[string]string{AnnotationCollect: "relative/x"})
	old := sha256.Sum256([]byte(`{"paths":["relative/x"],"container":"","trigger":"","mode":"","interval":"","destination":""}`))
	if RawID(raw) != hex.EncodeToString(old[:]) {
		t.Fatal("the id of a rejected request without the newer annotations changed")
	}
	for _, k := range []string{AnnotationCollectOn, AnnotationInclude, AnnotationFollowUntil} {
		changed := pod(map[string]string{AnnotationCollect: "relative/x", k: "x"})
		if RawID(changed) == RawID(raw) {
			t.Fatalf("%s does not change the id of a rejected request", k)
		}
	}
	if len(a.ID()) != 64 {
		t.Fatalf("id %q is not hex sha256", a.ID())
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if got := CollectionID(start, a.ID()); got != "20260102T030405Z-"+a.ID()[:8] {
		t.Fatalf("collection id %q", got)
	}
}

func TestNativeSidecarAndSource(t *testing.T) {
	t.Parallel()
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Annotations: map[string]string{
			AnnotationCollect: "/var/log/app/app.log", AnnotationMode: "follow", AnnotationContainer: "podcopy", AnnotationSource: "helper"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}, {Name: "podcopy", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app"}},
		},
	}
	r, err := Parse(pod, policy.Default())
	if err != nil || r.Container != "podcopy" || r.Source != SourceHelper {
		t.Fatalf("%+v %v", r, err)
	}
	pod.Annotations[AnnotationContainer] = "init" // a plain init container is not running beside the app
	if _, err := Parse(pod, policy.Default()); err == nil {
		t.Fatal("a plain init container was accepted")
	}
	pod.Annotations[AnnotationContainer] = "podcopy"
	pod.Annotations[AnnotationMode] = "once"
	if r, err := Parse(pod, policy.Default()); err != nil || r.Source != SourceHelper {
		t.Fatalf("once with helper: %+v %v", r, err)
	}
	delete(pod.Annotations, AnnotationSource)
	if r, err := Parse(pod, policy.Default()); err != nil || r.Source != "" {
		t.Fatalf("no source annotation: %+v %v (want the agent's source.mode)", r, err)
	}
	pod.Annotations[AnnotationSource] = "magic"
	if _, err := Parse(pod, policy.Default()); err == nil || !strings.Contains(err.Error(), "unknown") {
		t.Fatalf("unknown source: %v", err)
	}
}
