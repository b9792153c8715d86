//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/internal/testkit/hostile"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/status"
)

// hostilePod runs busybox whose /bin/tar is replaced by hack/testapp acting as a compromised
// tar (package hostile): whatever the agent asks, it sends the archive named kind. The binary
// comes from the distroless test image through an init container and a shared emptyDir.
func hostilePod(t *testing.T, ns, name, kind string) {
	t.Helper()
	p := clustertest.SourcePod(ns, name, imageBusybox,
		"rm -f /bin/tar && cp /hostile/tar /bin/tar && mkdir -p /var/log/app && echo real > /var/log/app/"+hostile.OK)
	p.Spec.Volumes = []corev1.Volume{{Name: "hostile", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p.Spec.InitContainers = []corev1.Container{{Name: "install", Image: imageDistroless, ImagePullPolicy: corev1.PullNever,
		Args: []string{"install", "/hostile/tar"}, VolumeMounts: []corev1.VolumeMount{{Name: "hostile", MountPath: "/hostile"}}}}
	c := &p.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "hostile", MountPath: "/hostile"}}
	c.Env = []corev1.EnvVar{{Name: "HOSTILE", Value: kind}}
	p.Annotations = nil
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := clustertest.WaitReady(t.Context(), client, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestHostileSources (issue 20): a compromised image's tar cannot stall, flood or fool the
// agent. Each attack ends with its reason in bounded time, nothing of a failed one is
// published, what succeeds agrees with its manifest, the agent's memory stays bounded, and a
// collection of an ordinary pod succeeds right after.
func TestHostileSources(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	// Bounds from the annotation, generous for a suite that runs its tests in parallel on two
	// cores (collections queue behind the fault suite's): each attack's hard bound is the e2e
	// agent's policy.deadline (5m) from the start of its attempt.
	cases := []struct {
		kind   string
		reason string        // the status's reason
		within time.Duration // the attack's bound
	}{
		{kind: hostile.SparseGNU, reason: failure.Succeeded, within: 3 * time.Minute},
		{kind: hostile.SparsePAX, reason: failure.Succeeded, within: 3 * time.Minute},
		{kind: hostile.Crafted, reason: failure.Succeeded, within: 3 * time.Minute},
		{kind: hostile.Endless, reason: failure.LimitExceeded, within: 3 * time.Minute},
		// ~730 MiB of zeros nobody asked for: read to the budget, well before the deadline.
		{kind: hostile.HugeSkipped, reason: failure.SourceBudgetExceeded, within: 6 * time.Minute},
		{kind: hostile.Drip, reason: failure.DeadlineExceeded, within: 8 * time.Minute},
		// A legitimate source that takes 150 s, longer than the e2e agent's staleAfter (1m)
		// plus a sweep period (1m): its staging directory is kept live by the heartbeat.
		{kind: hostile.Slow, reason: failure.Succeeded, within: 8 * time.Minute},
	}
	for _, tc := range cases {
		hostilePod(t, ns, tc.kind, tc.kind)
	}
	start := time.Now()
	for _, tc := range cases {
		annotate(t, ns, tc.kind, map[string]string{"podcopy/collect": "/var/log/app", "podcopy/source": "tar"})
	}
	dst := analysis(t)
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			var st status.Status
			waitFor(t, tc.within+30*time.Second, "final status of "+tc.kind, func(ctx context.Context) (bool, error) {
				s, ok := getStatus(t, ns, tc.kind)
				st = s
				return ok && s.Done(s.Request), nil
			})
			took := time.Since(start)
			t.Logf("%s: %s %s after %s: %s", tc.kind, st.Phase, st.Reason, took.Round(time.Second), st.Message)
			if st.Reason != tc.reason || took > tc.within {
				t.Fatalf("%s: reason %q after %s, want %q within %s (%+v)", tc.kind, st.Reason, took, tc.reason, tc.within, st)
			}
			dir := "/collect/" + ns + "/" + tc.kind
			listing, _ := run(t, dst, "find", dir, "-mindepth", "1", "-maxdepth", "1")
			if st.Phase != status.Succeeded {
				if strings.Contains(listing, st.Collection) && st.Collection != "" {
					t.Fatalf("a failed collection was published: %s", listing)
				}
				return
			}
			m := readManifest(t, st)
			if len(m.Files) < 1 || m.Files[0].Path != "/var/log/app/"+hostile.OK {
				t.Fatalf("manifest files %+v", m.Files)
			}
			// The stored tree equals the manifest: every listed file hashes as listed, and
			// nothing else is stored.
			base := strings.SplitN(st.Destination, ":", 2)[1] + "/" + m.Source.Container
			stored := strings.Fields(mustRun(t, dst, "find", base, "-type", "f"))
			if len(stored) != len(m.Files) {
				t.Fatalf("stored %v, manifest lists %d files", stored, len(m.Files))
			}
			for _, f := range m.Files {
				if got := sha256In(t, dst, base+f.Path); got != f.SHA256 {
					t.Fatalf("%s: stored %s, manifest %s", f.Path, got, f.SHA256)
				}
			}
			if tc.kind == hostile.Slow && (len(m.Files) != 2 || m.Files[1].Size != hostile.SlowBlocks*512) {
				t.Fatalf("slow: files %+v (the sweep removed live staging?)", m.Files)
			}
			if tc.kind == hostile.Crafted && len(m.Skipped) < 8 {
				t.Fatalf("crafted: skipped %+v", m.Skipped)
			}
		})
	}
	rss := scrape(t)["process_resident_memory_bytes"]
	t.Logf("agent RSS after the attacks: %.0f MiB", rss/(1<<20))
	if rss > 256<<20 {
		t.Fatalf("agent RSS %.0f MiB after the attacks", rss/(1<<20))
	}
	// The agent is still whole: an ordinary pod's collection succeeds right after.
	sourcePod(t, ns, "ordinary", imageBusybox, "mkdir -p /var/log && echo fine > /var/log/fine.log")
	annotate(t, ns, "ordinary", map[string]string{"podcopy/collect": "/var/log/fine.log"})
	if st := waitFinal(t, ns, "ordinary", ""); st.Phase != status.Succeeded {
		t.Fatalf("ordinary collection after the attacks: %+v", st)
	}
}
