package sweep

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
)

func TestExpired(t *testing.T) {
	t.Parallel()
	cs := []collection{
		{"ns", "a", "20261120T100000Z-00000001"}, {"ns", "a", "20261121T100000Z-00000002"},
		{"ns", "a", "20261122T100000Z-00000003"}, {"ns", "b", "20261119T100000Z-00000004"},
	}
	ids := func(cs []collection) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.pod+"/"+c.id[:8])
		}
		return strings.Join(s, ",")
	}
	cutoff := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		keep   int
		cutoff time.Time
		want   string
	}{
		{name: "nothing set", want: ""},
		{name: "keep 1 per pod", keep: 1, want: "a/20261120,a/20261121"},
		{name: "keep 2 per pod", keep: 2, want: "a/20261120"},
		{name: "older than the cutoff", cutoff: cutoff, want: "a/20261120,b/20261119"},
		{name: "both", keep: 1, cutoff: cutoff, want: "a/20261120,a/20261121,b/20261119"},
	} {
		if got := ids(expired(cs, tc.keep, tc.cutoff)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRetentionAndUsageInARealShell runs the scripts against a tree on disk (GNU tools and
// busybox): retention removes the oldest published collections and nothing else (staging in
// flight, follow files, names the layout would not build), and usage counts what is there.
func TestRetentionAndUsageInARealShell(t *testing.T) {
	t.Parallel()
	for _, flavor := range []string{"gnu", "busybox"} {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mk := func(p string, data string) string {
				full := filepath.Join(dir, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
				return full
			}
			oldest := mk("ns/pod/20261120T100000Z-00000001/manifest.json", "{}")
			mk("ns/pod/20261120T100000Z-00000001/app/var/log/a", strings.Repeat("a", 8192))
			middle := mk("ns/pod/20261121T100000Z-00000002/manifest.json", "{}")
			newest := mk("ns/pod/20261122T100000Z-00000003/manifest.json", "{}")
			staging := mk("ns/pod/.partial/20261101T100000Z-00000004/manifest.json", "{}")
			follow := mk("ns/pod/follow/app/var/log/a", "followed")
			odd := mk("ns/pod/not-an-id/manifest.json", "{}")
			local := &exectest.Local{}
			if flavor == "busybox" {
				if local.Path = exectest.BusyboxPath(t.TempDir()); local.Path == "" {
					t.Skip("busybox not installed")
				}
			}
			dst := exec.Target{Namespace: "podcopy", Pod: "analysis", Container: "c"}
			u, err := Measure(t.Context(), local, dst, dir, "ns")
			if err != nil || u.Collections != 4 || u.Bytes < 8192 {
				t.Fatalf("usage %+v, %v", u, err)
			}
			removed := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			s := Sweeper{Exec: local, Dir: dir, Retention: destination.Retention{KeepLast: 2}, RetentionRemoved: removed}
			if n := s.retain(t.Context(), discard(), dst); n != 1 {
				t.Fatalf("removed %d, want 1", n)
			}
			for p, want := range map[string]bool{oldest: false, middle: true, newest: true, staging: true, follow: true, odd: true} {
				if _, err := os.Stat(p); (err == nil) != want {
					t.Errorf("%s: present %v, want %v", p, err == nil, want)
				}
			}
			if testutil.ToFloat64(removed) != 1 {
				t.Fatal("metric")
			}
			s.Retention = destination.Retention{MaxAge: time.Hour}
			s.Now = func() time.Time { return time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC) }
			if n := s.retain(t.Context(), discard(), dst); n != 1 {
				t.Fatalf("max age: removed %d, want 1 (the 21st's)", n)
			}
			if _, err := os.Stat(newest); err != nil {
				t.Fatal("the newest went")
			}
		})
	}
}

func discard() logr.Logger { return logr.Discard() }
