package charts

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podcopy/podcopy/internal/alert"
	"github.com/podcopy/podcopy/internal/console"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/internal/shell"
)

// descNames registers nothing: it records the names of what is registered with it.
type descNames map[string]bool

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d descNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d[m[1]] = true
		}
	}
	return nil
}

func (d descNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d descNames) Unregister(prometheus.Collector) bool { return false }

// exported is every metric name the agent and the receiver serve (histograms with their
// _bucket, _sum and _count series).
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := descNames{}
	m := metrics.New()
	m.WatchWork(func() metrics.Work { return metrics.Work{} })
	m.Config.Loaded("0", false)
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if c, ok := v.Field(i).Interface().(prometheus.Collector); ok {
			_ = names.Register(c)
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	shell.NewMetrics(names)
	console.NewMetrics(names)
	alert.NewMetrics(names)
	metrics.NewReloads(names, "profiles")
	for n := range names {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			names[n+suffix] = true
		}
	}
	return names
}

// metricName finds what may be a metric name in a query: podcopy's own, and the process
// collector's the dashboard shows.
var metricName = regexp.MustCompile(`\b(podcopy_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)\b`)

// TestMonitoringNamesExportedMetrics: every metric the alert rules and the dashboard query is
// one the agent or the receiver exports (a renamed metric fails here, not silently in
// Grafana); hack/monitoring/check.sh parses and unit-tests the queries themselves.
func TestMonitoringNamesExportedMetrics(t *testing.T) {
	t.Parallel()
	names := exported(t)
	rules, err := os.ReadFile("podcopy/templates/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("podcopy/dashboards/podcopy.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no uid or no panels")
	}
	var exprs []string
	for _, line := range strings.Split(string(rules), "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(line), "expr: "); ok {
			exprs = append(exprs, e)
		}
	}
	if len(exprs) < 8 {
		t.Fatalf("found %d rule expressions", len(exprs))
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	var used []string
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			if !names[n] {
				t.Errorf("%s (in %s) is not a metric podcopy exports", n, e)
			}
			if !slices.Contains(used, n) {
				used = append(used, n)
			}
		}
	}
	t.Logf("%d queries use %d metrics, all exported", len(exprs), len(used))
}
