package destination

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/podcopy/podcopy/pkg/failure"
)

func analysisPod(name string, ready bool, labels map[string]string) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "store"}, {Name: "other"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func TestChoose(t *testing.T) {
	t.Parallel()
	match := map[string]string{"app.kubernetes.io/component": "analysis"}
	client := fake.NewClientset(
		analysisPod("analysis-2", true, match),
		analysisPod("analysis-1", true, match),
		analysisPod("analysis-0", false, match),
		analysisPod("impostor", true, map[string]string{"app": "x"}),
	)
	c := Chooser{Client: client, Config: Config{Namespace: "podcopy", Selector: "app.kubernetes.io/component=analysis", Dir: "/collect"}}
	tests := []struct {
		name, requested, want string
		wantInvalid, wantWait bool
	}{
		{name: "first ready by name", want: "analysis-1"},
		{name: "requested", requested: "analysis-2", want: "analysis-2"},
		{name: "requested not ready", requested: "analysis-0", wantWait: true},
		{name: "requested outside selector", requested: "impostor", wantInvalid: true},
		{name: "requested unknown", requested: "nope", wantInvalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := c.Choose(t.Context(), tt.requested)
			var inv *failure.Invalid
			var wait *NotReadyError
			switch {
			case tt.wantInvalid:
				if !errors.As(err, &inv) {
					t.Fatalf("err = %v, want InvalidError", err)
				}
			case tt.wantWait:
				if !errors.As(err, &wait) {
					t.Fatalf("err = %v, want NotReadyError", err)
				}
			case err != nil:
				t.Fatal(err)
			case got.Pod != tt.want || got.Container != "store" || got.Namespace != "podcopy":
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{Namespace: "p", Selector: "a=b", Dir: "/collect"}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Selector: "a=b", Dir: "/c"}, {Namespace: "p", Selector: "a=(", Dir: "/c"}, {Namespace: "p", Dir: "c"}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestChooseNamedPod(t *testing.T) {
	t.Parallel()
	match := map[string]string{"app.kubernetes.io/component": "analysis"}
	c := Chooser{Client: fake.NewClientset(analysisPod("analysis-1", true, match), analysisPod("analysis-0", true, match),
		analysisPod("impostor", true, map[string]string{"app": "x"})), Config: Config{Namespace: "podcopy", Selector: "app.kubernetes.io/component=analysis", Dir: "/collect", Pod: "analysis-1"}}
	got, err := c.Choose(t.Context(), "")
	if err != nil || got.Pod != "analysis-1" {
		t.Fatalf("%v %v", got, err)
	}
	var invalid *failure.Invalid
	if _, err := c.Choose(t.Context(), "analysis-0"); !errors.As(err, &invalid) {
		t.Fatalf("another pod: %v", err)
	}
	c.Config.Pod = "impostor"
	if _, err := c.Choose(t.Context(), ""); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("impostor: %v", err)
	}
	c.Config.Pod = "missing"
	var notReady *NotReadyError
	if _, err := c.Choose(t.Context(), ""); !errors.As(err, &notReady) {
		t.Fatalf("missing pod: %v", err)
	}
}

// TestChooseFromLister: with a lister (the informer cache main builds), the chooser reads
// no pods from the API server.
func TestChooseFromLister(t *testing.T) {
	t.Parallel()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, name := range []string{"analysis-1", "analysis-0"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: name, Labels: map[string]string{"app.kubernetes.io/component": "analysis"}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "store"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	client := fake.NewClientset()
	c := Chooser{Client: client, Lister: listersv1.NewPodLister(idx).Pods("podcopy"),
		Config: Config{Namespace: "podcopy", Selector: "app.kubernetes.io/component=analysis", Dir: "/collect"}}
	got, err := c.Choose(t.Context(), "")
	if err != nil || got.Pod != "analysis-0" || got.Container != "store" {
		t.Fatalf("%+v %v", got, err)
	}
	all, err := c.All(t.Context())
	if err != nil || len(all) != 2 {
		t.Fatalf("%+v %v", all, err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Fatalf("%d API calls, want none", n)
	}
}

// Where collections go: the mode, its default with a bucket, a namespace's own mode, and
// modes that need a bucket without one.
func TestModes(t *testing.T) {
	t.Parallel()
	base := Config{Namespace: "podcopy", Selector: "a=b", Dir: "/collect"}
	withBucket := base
	withBucket.S3.Bucket = "evidence"
	withBucket.NamespaceModes = map[string]string{"payments": ModeBucket}
	if base.ModeFor("x") != ModePod || withBucket.ModeFor("x") != ModeBoth || withBucket.ModeFor("payments") != ModeBucket || withBucket.UsesPod("payments") {
		t.Fatalf("modes: %s %s %s", base.ModeFor("x"), withBucket.ModeFor("x"), withBucket.ModeFor("payments"))
	}
	if err := withBucket.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"bucket mode without a bucket":   {Namespace: "p", Dir: "/c", Mode: ModeBucket},
		"namespace mode without bucket":  {Namespace: "p", Dir: "/c", NamespaceModes: map[string]string{"x": ModeBoth}},
		"unknown mode":                   {Namespace: "p", Dir: "/c", Mode: "tape"},
		"lock days without a lock mode":  func() Config { c := withBucket; c.S3.ObjectLock.Days = 3; return c }(),
		"lock mode without days":         func() Config { c := withBucket; c.S3.ObjectLock.Mode = "COMPLIANCE"; return c }(),
		"a part smaller than S3 accepts": func() Config { c := withBucket; c.S3.PartSize = "1Mi"; return c }(),
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
