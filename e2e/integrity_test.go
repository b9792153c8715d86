//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/status"
)

// TestEvidenceIntegrity reproduces issue 11's container-side defects on the real cluster,
// with both tars: a symlinked directory (/var/log/etc -> /etc) must not carry a request to
// /etc/passwd, and a follow glob with ".*" (which sh expands to "..") must not write outside
// the pod's own directory in the analysis pod.
func TestEvidenceIntegrity(t *testing.T) {
	t.Parallel()
	for _, image := range []string{imageBusybox, imageGNUTar} {
		t.Run(strings.Split(strings.TrimPrefix(image, "podcopy.local/"), ":")[0], func(t *testing.T) {
			t.Parallel()
			ns := namespace(t)
			sourcePod(t, ns, "victim", image, `mkdir -p /var/log /collect/pwned /tmp/a/b
ln -s /etc /var/log/etc
echo ok > /var/log/ok.log
echo planted > /collect/pwned/x`)
			// 1. Symlinked directory: the file is skipped with its reason, /etc/passwd is not read.
			annotate(t, ns, "victim", map[string]string{"podcopy/collect": "/var/log/etc/passwd,/var/log/ok.log"})
			st := waitFinal(t, ns, "victim", "")
			if st.Phase != status.Succeeded || st.Files != 1 || st.Skipped != 1 {
				t.Fatalf("status %+v", st)
			}
			m := readManifest(t, st)
			if len(m.Skipped) != 1 || m.Skipped[0].Path != "/var/log/etc/passwd" || !strings.Contains(m.Skipped[0].Reason, "/var/log/etc is a symbolic link") {
				t.Fatalf("skipped %+v", m.Skipped)
			}
			dir := st.Destination[strings.Index(st.Destination, ":")+1:]
			if out, _ := run(t, analysis(t), "find", dir, "-name", "passwd"); strings.TrimSpace(out) != "" {
				t.Fatalf("read through the symlinked directory: %s", out)
			}
			// 2. A follow glob that climbs with "..": nothing lands outside /collect/<ns>/victim/.
			annotate(t, ns, "victim", map[string]string{"podcopy/collect": "/tmp/.*/.*/.*/collect/pwned/x",
				"podcopy/mode": "follow", "podcopy/interval": "5s"})
			waitFor(t, time.Minute, "the follow to run a tick", func(ctx context.Context) (bool, error) {
				s, ok := getStatus(t, ns, "victim")
				return ok && s.Phase == status.Running && s.Collection == "follow" && s.Message != "", nil
			})
			time.Sleep(6 * time.Second) // one more tick
			s, _ := getStatus(t, ns, "victim")
			t.Logf("follow status: %s", s.Message)
			a := analysis(t)
			out, _ := run(t, a, "sh", "-c", fmt.Sprintf("find /collect -path '*/pwned/x' | grep -v '^/collect/%s/victim/' || true", ns))
			if strings.TrimSpace(out) != "" {
				t.Fatalf("written outside the pod's directory: %s", out)
			}
			if !strings.Contains(s.Message, "refused") {
				t.Fatalf("the .. matches were not reported: %q", s.Message)
			}
		})
	}
}
