package sweep

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
)

func TestOnceRemovesOnlyStaleStaging(t *testing.T) {
	t.Parallel()
	for _, flavor := range []string{"gnu", "busybox"} {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			old := time.Now().Add(-2 * time.Hour)
			mk := func(p string, mtime time.Time) string {
				full := filepath.Join(dir, p)
				if err := os.MkdirAll(full, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(full, mtime, mtime); err != nil {
					t.Fatal(err)
				}
				return full
			}
			stale := mk("ns/pod/.partial/20261123T100000Z-aaaaaaaa", old)
			fresh := mk("ns/pod/.partial/20261123T115900Z-bbbbbbbb", time.Now())
			complete := mk("ns/pod/20261123T090000Z-cccccccc", old)
			follow := mk("ns/pod/follow/app", old)
			local := &exectest.Local{}
			if flavor == "busybox" {
				if local.Path = exectest.BusyboxPath(t.TempDir()); local.Path == "" {
					t.Skip("busybox not installed")
				}
			}
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			s := Sweeper{Exec: local, Dir: dir, After: time.Hour, Removed: c,
				Targets: func(context.Context) ([]exec.Target, error) { return []exec.Target{{Pod: "analysis-0"}}, nil }}
			if n := s.Once(t.Context()); n != 1 || testutil.ToFloat64(c) != 1 {
				t.Fatalf("removed %d", n)
			}
			for p, want := range map[string]bool{stale: false, fresh: true, complete: true, follow: true} {
				if _, err := os.Stat(p); (err == nil) != want {
					t.Errorf("%s exists=%v, want %v", p, err == nil, want)
				}
			}
		})
	}
}
