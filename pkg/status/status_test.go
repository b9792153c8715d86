package status

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestWriteAndGet(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1",
		Annotations: map[string]string{"podcopy/collect": "/tmp/x"}}}
	client := fake.NewClientset(pod)
	want := Status{Request: "abc", Phase: Succeeded, Files: 2, Bytes: 10}
	if err := (PatchWriter{Client: client}).Write(t.Context(), pod, want); err != nil {
		t.Fatal(err)
	}
	got, err := client.CoreV1().Pods("ns").Get(t.Context(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, ok := Get(got)
	if !ok || s != want {
		t.Fatalf("got %+v %v", s, ok)
	}
	if got.Annotations["podcopy/collect"] != "/tmp/x" {
		t.Fatal("patch dropped other annotations")
	}
	if !s.Done("abc") || s.Done("other") {
		t.Fatal("Done")
	}
	if (Status{Request: "abc", Phase: Running}).Done("abc") {
		t.Fatal("running is not done")
	}
}

func TestGetGarbage(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Annotation: "{not json"}}}
	if _, ok := Get(pod); ok {
		t.Fatal("garbage status accepted")
	}
}

func TestPrintable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"plain text: /var/log/a.log", "plain text: /var/log/a.log"},
		{"ünïcode ✓", "ünïcode ✓"},
		{"tar: \x1b[2J\x1b]0;pwned\x07 boom", `tar: \x1b[2J\x1b]0;pwned\x07 boom`},
		{"new\nline\ttab", `new\x0aline\x09tab`},
		{"c1 \u009b31m", `c1 \x9b31m`},
		{"bidi \u202eevil", `bidi \u202eevil`},
		{"bad \xff utf8", `bad \xff utf8`},
	} {
		if got := Printable(tt.in); got != tt.want {
			t.Errorf("Printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
