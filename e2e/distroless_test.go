//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/collect"
	"github.com/podcopy/podcopy/internal/helpercontainer"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/status"
)

// imageDistroless holds one static binary (hack/testapp) and its files: no shell, no tar.
const imageDistroless = "podcopy.local/distroless:1"

// restrictedNamespace is a namespace that enforces Pod Security "restricted".
func restrictedNamespace(t *testing.T) string {
	t.Helper()
	ns := namespace(t)
	n, err := client.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := client.CoreV1().Namespaces().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// distrolessPod runs the test image as a non-root user, as "restricted" demands.
func distrolessPod(t *testing.T, ns, name string, ann map[string]string) exec.Target {
	t.Helper()
	zero, uid := int64(0), int64(65532)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &zero,
			AutomountServiceAccountToken:  new(false),
			Containers: []corev1.Container{{
				Name: "app", Image: imageDistroless, ImagePullPolicy: corev1.PullNever,
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: new(true), AllowPrivilegeEscalation: new(false),
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
		},
	}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "pod "+name+" running", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	src := exec.Target{Namespace: ns, Pod: name, Container: "app"}
	waitFor(t, 30*time.Second, "the test app's files", func(ctx context.Context) (bool, error) {
		_, err := run(t, src, "/app", "test", "-f", "/var/log/data/dir/sub/b.txt")
		return err == nil, nil
	})
	return src
}

func ephemeralContainers(t *testing.T, ns, pod string) []string {
	t.Helper()
	p, err := client.CoreV1().Pods(ns).Get(t.Context(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ec := range p.Spec.EphemeralContainers {
		names = append(names, ec.Name+"->"+ec.TargetContainerName)
	}
	return names
}

// TestDistroless collects from a container with no shell and no tar, in a namespace that
// enforces Pod Security "restricted" (issue 13). podcopy/source is left to auto: the agent
// finds no tar, says so in an Event, adds its helper as an ephemeral container and reads
// through it. A file, a directory and a glob arrive byte-exact; the symlink to /etc inside
// the directory is not followed; a second collection reuses the helper.
func TestDistroless(t *testing.T) {
	t.Parallel()
	ns := restrictedNamespace(t)
	src := distrolessPod(t, ns, "app", nil)
	t.Cleanup(func() {
		if t.Failed() {
			st, _ := getStatus(t, ns, "app")
			t.Logf("status: %+v; events: %v", st, events(t, ns, "app"))
		}
	})
	paths := []string{"/var/log/data/one.bin", "/var/log/data/dir", "/var/log/data/g-*.log"}
	want := map[string]string{}
	for _, p := range []string{"/var/log/data/one.bin", "/var/log/data/dir/a.txt", "/var/log/data/dir/sub/b.txt", "/var/log/data/g-1.log", "/var/log/data/g-2.log"} {
		sum := sha256.Sum256([]byte(mustRun(t, src, "/app", "cat", p)))
		want[p] = hex.EncodeToString(sum[:])
	}
	prev := ""
	for i := range 2 {
		annotate(t, ns, "app", map[string]string{"podcopy/collect": strings.Join(paths, ","), "podcopy/trigger": fmt.Sprint(i)})
		start := time.Now()
		st := waitFinal(t, ns, "app", prev)
		prev = st.Request
		if st.Phase != status.Succeeded {
			t.Fatalf("collection %d: %+v", i+1, st)
		}
		t.Logf("collection %d through the helper: %s (annotation to Succeeded %.1fs)", i+1, st.Message, time.Since(start).Seconds())
		checkCompleteOrAbsent(t, ns, "app", st)
		m := readManifest(t, st)
		if len(m.Files) != len(want) {
			t.Fatalf("manifest files %+v, want %d", m.Files, len(want))
		}
		// compression: auto (charts/podcopy/ci/local-values.yaml) compresses helper reads.
		if tot := m.Totals; tot.Compression != "gzip" || tot.SourceBytes <= 0 || tot.SourceBytes >= tot.ArchiveBytes || tot.CompressionRatio < 1 {
			t.Errorf("manifest totals %+v, want gzip through the helper", tot)
		}
		for _, f := range m.Files {
			if want[f.Path] != f.SHA256 {
				t.Errorf("%s: manifest sha256 %s, source %s", f.Path, f.SHA256, want[f.Path])
			}
		}
		if len(m.Skipped) != 1 || m.Skipped[0].Path != "/var/log/data/dir/etc" || m.Skipped[0].Type != "symlink" {
			t.Fatalf("skipped %+v, want the symlink to /etc", m.Skipped)
		}
		dir := st.Destination[strings.Index(st.Destination, ":")+1:]
		if out, _ := run(t, analysis(t), "ls", dir+"/app/var/log/data/dir"); strings.Contains(out, "etc") {
			t.Fatalf("the symlink was written: %s", out)
		}
	}
	if ecs := ephemeralContainers(t, ns, "app"); len(ecs) != 1 || ecs[0] != helpercontainer.Name+"->app" {
		t.Fatalf("ephemeral containers %v, want one helper reused by both collections", ecs)
	}
	t.Logf("event: %s", waitEvent(t, ns, "app", collect.ReasonHelperFallback))

	// Throughput through the helper, for the README (logged, not asserted).
	mustRun(t, src, "/app", "fill", "/tmp/big.bin", "200")
	annotate(t, ns, "app", map[string]string{"podcopy/collect": "/tmp/big.bin", "podcopy/source": "helper"})
	start := time.Now()
	st := waitFinal(t, ns, "app", prev)
	if st.Phase != status.Succeeded {
		t.Fatalf("200 MiB through the helper: %+v", st)
	}
	t.Logf("200 MiB through the helper: annotation to Succeeded %.2fs (%.0f MB/s); agent: %s",
		time.Since(start).Seconds(), 200*1.048576/time.Since(start).Seconds(), st.Message)
	checkCompleteOrAbsent(t, ns, "app", st)
}

// TestDistrolessFollow follows a log through a rename rotation in a container with no shell
// and no tar (podcopy/source=helper): no gap, no duplicate.
func TestDistrolessFollow(t *testing.T) {
	t.Parallel()
	ns := restrictedNamespace(t)
	src := distrolessPod(t, ns, "writer", map[string]string{
		"podcopy/collect": "/var/log/app/app.log", "podcopy/mode": "follow", "podcopy/interval": "5s", "podcopy/source": "helper"})
	t.Cleanup(func() {
		if t.Failed() {
			st, _ := getStatus(t, ns, "writer")
			t.Logf("status: %+v; events: %v", st, events(t, ns, "writer"))
		}
	})
	followScenario{
		src: src, interval: 5 * time.Second, tool: []string{"/app"},
		dest:    followDest(t, ns, "writer", "app", "/var/log/app/app.log"),
		disrupt: func(t *testing.T) {},
	}.run(t)
	if ecs := ephemeralContainers(t, ns, "writer"); len(ecs) != 1 {
		t.Fatalf("ephemeral containers %v, want one", ecs)
	}
}
