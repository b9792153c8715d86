package metrics

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNames(t *testing.T) {
	t.Parallel()
	m := New()
	m.Collections.WithLabelValues(ResultSucceeded).Inc()
	m.SkippedEntries.WithLabelValues("symlink").Inc()
	m.FollowLag.WithLabelValues("ns", "p", "c", "/var/log/x").Set(1)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		seen[f.GetName()] = true
		if strings.HasPrefix(f.GetName(), "podcopy_") && f.GetType().String() == "COUNTER" && !strings.HasSuffix(f.GetName(), "_total") {
			t.Errorf("counter %s does not end in _total", f.GetName())
		}
	}
	for _, n := range []string{"podcopy_collections_total", "podcopy_collection_duration_seconds", "podcopy_shipped_bytes_total",
		"podcopy_shipped_files_total", "podcopy_skipped_entries_total", "podcopy_inflight_collections", "podcopy_follow_lag_bytes", "podcopy_source_spool_bytes", "podcopy_source_spool_waits_total",
		"go_goroutines", "process_resident_memory_bytes"} {
		if !seen[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	if got := testutil.ToFloat64(m.Collections.WithLabelValues(ResultSucceeded)); got != 1 {
		t.Fatalf("succeeded = %v", got)
	}
}

func TestCountRequests(t *testing.T) {
	t.Parallel()
	m := New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c := &http.Client{Transport: m.CountRequests(http.DefaultTransport)}
	for _, method := range []string{http.MethodGet, http.MethodGet, http.MethodPatch} {
		req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	e := m.CountExecs(execFunc(func(context.Context, exec.Request) error { return nil }))
	for range 4 {
		_ = e.Exec(t.Context(), exec.Request{})
	}
	for method, want := range map[string]float64{"get": 2, "patch": 1, "exec": 4} {
		if got := testutil.ToFloat64(m.APIRequests.WithLabelValues(method)); got != want {
			t.Errorf("%s: %v, want %v", method, got, want)
		}
	}
}

type execFunc func(context.Context, exec.Request) error

func (f execFunc) Exec(ctx context.Context, req exec.Request) error { return f(ctx, req) }
