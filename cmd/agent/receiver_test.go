package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podcopy/podcopy/internal/metrics"
)

// TestProfileReloads: the receiver says when its profiles change: a reload is logged with
// the new contents' hash and counted, a broken file is refused once (logged, counted, the
// previous profiles kept), and the profiles carry what was loaded for no-match answers.
func TestProfileReloads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "profiles.yaml")
	write := func(s string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, at, at); err != nil {
			t.Fatal(err)
		}
	}
	var logged []string
	log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})
	reg := prometheus.NewRegistry()
	p := &profileFile{path: file, log: log, reloads: metrics.NewReloads(reg, "profiles"), now: func() time.Time { return time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC) }}
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	write("profiles: [{name: a, collect: {paths: [/tmp]}}]", t0)
	prof, err := p.Load()
	if err != nil || len(prof.Profiles) != 1 || !strings.Contains(prof.Loaded, "sha256") {
		t.Fatalf("load: %+v %v", prof, err)
	}
	write("profiles: [{name: a, collect: {paths: [/tmp]}}, {name: b, collect: {paths: [/var/log]}}]", t0.Add(time.Minute))
	if prof, _ := p.Load(); len(prof.Profiles) != 2 {
		t.Fatalf("reload: %+v", prof)
	}
	write("profiles: [{name: broken", t0.Add(2*time.Minute))
	for range 3 {
		if prof, _ := p.Load(); len(prof.Profiles) != 2 {
			t.Fatalf("a broken file replaced the profiles: %+v", prof)
		}
	}
	joined := strings.Join(logged, "\n")
	if strings.Count(joined, `"msg"="profiles reloaded"`) != 1 || strings.Count(joined, "invalid; keeping the previous profiles") != 1 {
		t.Errorf("log:\n%s", joined)
	}
	expect := `
# HELP podcopy_config_last_reload_successful 1 when the file's last reload (or first load) succeeded, 0 when its current contents were refused.
# TYPE podcopy_config_last_reload_successful gauge
podcopy_config_last_reload_successful{file="profiles"} 0
# HELP podcopy_config_reloads_total Reloads of a hot-reloaded file by result (success: the new contents are in use; error: they were refused and the previous ones stay).
# TYPE podcopy_config_reloads_total counter
podcopy_config_reloads_total{file="profiles",result="error"} 1
podcopy_config_reloads_total{file="profiles",result="success"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expect), "podcopy_config_reloads_total", "podcopy_config_last_reload_successful"); err != nil {
		t.Error(err)
	}
}
