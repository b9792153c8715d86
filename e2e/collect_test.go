//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/status"
)

// workload writes the files every collection test reads.
const workload = `mkdir -p /var/log/mysql /var/log/app /var/log/dir/sub
head -c 3000007 /dev/urandom > /var/log/mysql/slow.log
echo a > /var/log/app/a.log
: > /var/log/app/b.log
echo not-matched > /var/log/app/c.txt
head -c 1000 /dev/urandom > /var/log/dir/sub/deep.txt
ln -s /etc/passwd /var/log/dir/link
echo hostile > '/tmp/x;touch pwned $(id)'`

const workloadRequest = "/var/log/mysql/slow.log, /var/log/app/*.log,/var/log/dir,/tmp/x;touch pwned $(id)"

var workloadFiles = []string{"/tmp/x;touch pwned $(id)", "/var/log/app/a.log", "/var/log/app/b.log", "/var/log/dir/sub/deep.txt", "/var/log/mysql/slow.log"}

func TestCollect(t *testing.T) {
	t.Parallel()
	for _, image := range []string{imageBusybox, imageGNUTar} {
		t.Run(strings.Split(strings.TrimPrefix(image, "podcopy.local/"), ":")[0], func(t *testing.T) {
			t.Parallel()
			ns := namespace(t)
			sourcePod(t, ns, "mysql", image, workload)
			src := exec.Target{Namespace: ns, Pod: "mysql", Container: "app"}
			annotate(t, ns, "mysql", map[string]string{"podcopy/collect": workloadRequest})
			st := waitFinal(t, ns, "mysql", "")
			if st.Phase != status.Succeeded {
				t.Fatalf("status %+v\nevents %q", st, events(t, ns, "mysql"))
			}
			if st.Files != len(workloadFiles) || st.Skipped != 1 || st.Bytes != 3000007+2+1000+8 {
				t.Errorf("status totals %+v", st)
			}
			wantDir := fmt.Sprintf("/collect/%s/mysql/%s", ns, st.Collection)
			if st.Destination != analysis(t).String()+":"+wantDir || !strings.HasSuffix(st.Collection, "-"+st.Request[:8]) {
				t.Errorf("destination %q collection %q", st.Destination, st.Collection)
			}
			m := readManifest(t, st)
			if len(m.Files) != len(workloadFiles) || m.Totals.Files != st.Files || m.Source.Pod != "mysql" || m.Source.Image != image ||
				m.Source.ImageID == "" || m.Source.Node != "localhost" || m.Destination.Pod != analysis(t).Pod ||
				m.Totals.Compression != "none" || m.Totals.SourceBytes != m.Totals.ArchiveBytes || m.Totals.ArchiveBytes < st.Bytes {
				t.Fatalf("manifest %+v", m)
			}
			for i, f := range m.Files {
				if f.Path != workloadFiles[i] {
					t.Errorf("file %d is %q, want %q", i, f.Path, workloadFiles[i])
				}
				inSource := sha256In(t, src, f.Path)
				inDest := sha256In(t, analysis(t), wantDir+"/app"+f.Path)
				if f.SHA256 != inSource || f.SHA256 != inDest {
					t.Errorf("%s: manifest %s, source %s, destination %s", f.Path, f.SHA256, inSource, inDest)
				}
			}
			if len(m.Skipped) != 1 || m.Skipped[0].Path != "/var/log/dir/link" || m.Skipped[0].Type != "symlink" {
				t.Errorf("skipped %+v", m.Skipped)
			}
			if _, err := run(t, analysis(t), "test", "-e", wantDir+"/app/var/log/app/c.txt"); err == nil {
				t.Error("c.txt does not match the glob but was collected")
			}
			for _, p := range []string{"/pwned", "/tmp/pwned"} {
				if _, err := run(t, src, "test", "-e", p); err == nil {
					t.Errorf("%s exists: an annotation was run as shell code", p)
				}
			}
			waitEvent(t, ns, "mysql", "CollectionStarted")
			ev := waitEvent(t, ns, "mysql", "CollectionSucceeded")
			if !strings.Contains(ev, st.Collection) {
				t.Errorf("event %q does not name the collection", ev)
			}

			// The same request again is a no-op, even when the pod changes otherwise.
			annotate(t, ns, "mysql", map[string]string{"unrelated": "change"})
			time.Sleep(3 * time.Second)
			if again, _ := getStatus(t, ns, "mysql"); again.Collection != st.Collection || countEvents(t, ns, "mysql", "CollectionStarted") != 1 {
				t.Fatalf("same request ran again: %+v", again)
			}
			// A new trigger runs it again.
			annotate(t, ns, "mysql", map[string]string{"podcopy/trigger": "incident-42"})
			st2 := waitFinal(t, ns, "mysql", st.Request)
			if st2.Phase != status.Succeeded || st2.Collection == st.Collection || st2.Files != st.Files {
				t.Fatalf("after new trigger: %+v", st2)
			}
		})
	}
}

func TestRejected(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	tests := []struct{ name, collect, container, want string }{
		{"relative", "var/log/x.log", "", "is not an absolute path"},
		{"denied", "/var/run/secrets/kubernetes.io/serviceaccount/token", "", "denied by policy.denyPaths"},
		{"outside", "/etc/passwd", "", "outside policy.allowPaths"},
		{"container", "/var/log/x.log", "sidecar", `container "sidecar" is not in pod`},
		{"dotdot", "/var/log/../../etc/shadow", "", `contains ".."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sourcePod(t, ns, tt.name, imageBusybox, "mkdir -p /var/log && echo x > /var/log/x.log")
			ann := map[string]string{"podcopy/collect": tt.collect}
			if tt.container != "" {
				ann["podcopy/container"] = tt.container
			}
			annotate(t, ns, tt.name, ann)
			st := waitFinal(t, ns, tt.name, "")
			if st.Phase != status.Rejected || !strings.Contains(st.Message, tt.want) {
				t.Fatalf("status %+v, want Rejected with %q", st, tt.want)
			}
			if ev := waitEvent(t, ns, tt.name, "RequestRejected"); !strings.Contains(ev, tt.want) {
				t.Errorf("event %q", ev)
			}
			if _, err := run(t, analysis(t), "test", "-e", "/collect/"+ns+"/"+tt.name); err == nil {
				t.Error("a rejected request touched the analysis pod")
			}
		})
	}
}

func TestMissingFileFails(t *testing.T) {
	t.Parallel()
	for _, image := range []string{imageBusybox, imageGNUTar} {
		t.Run(strings.Split(strings.TrimPrefix(image, "podcopy.local/"), ":")[0], func(t *testing.T) {
			t.Parallel()
			ns := namespace(t)
			sourcePod(t, ns, "app", image, "mkdir -p /var/log && echo x > /var/log/there.log")
			annotate(t, ns, "app", map[string]string{"podcopy/collect": "/var/log/there.log,/var/log/not-there.log"})
			st := waitFinal(t, ns, "app", "")
			if st.Phase != status.Failed || !strings.Contains(st.Message, "not-there.log") {
				t.Fatalf("status %+v", st)
			}
			if ev := waitEvent(t, ns, "app", "CollectionFailed"); !strings.Contains(ev, "not-there.log") {
				t.Errorf("event %q", ev)
			}
			if _, err := run(t, analysis(t), "test", "-e", "/collect/"+ns+"/app/"+st.Collection); err == nil {
				t.Error("a failed collection left a partial directory")
			}
		})
	}
}

// TestMetrics runs alone (not parallel) so the counters it reads move only because of it.
func TestMetrics(t *testing.T) {
	ns := namespace(t)
	sourcePod(t, ns, "app", imageBusybox, "mkdir -p /var/log && head -c 12345 /dev/urandom > /var/log/m.log && ln -s /x /var/log/l")
	before := scrape(t)
	annotate(t, ns, "app", map[string]string{"podcopy/collect": "/var/log/m.log,/var/log/l"})
	if st := waitFinal(t, ns, "app", ""); st.Phase != status.Succeeded {
		t.Fatalf("status %+v", st)
	}
	after := scrape(t)
	for name, delta := range map[string]float64{
		`podcopy_collections_total{result="succeeded"}`: 1,
		`podcopy_shipped_bytes_total`:                   12345,
		`podcopy_shipped_files_total`:                   1,
		`podcopy_skipped_entries_total{type="symlink"}`: 1,
		`podcopy_collection_duration_seconds_count`:     1,
	} {
		if got := after[name] - before[name]; got != delta {
			t.Errorf("%s moved by %v, want %v", name, got, delta)
		}
	}
	if after["podcopy_inflight_collections"] != 0 {
		t.Errorf("inflight %v after the collection", after["podcopy_inflight_collections"])
	}
	if _, ok := after["process_resident_memory_bytes"]; !ok {
		t.Error("process collector missing")
	}
	// Every metric the chart's alert rules and dashboard query is served by the running agent
	// (the receiver's, and series that exist only while a follow runs or once the console was
	// used, are checked against the registries by charts' unit test).
	later := map[string]bool{"podcopy_follow_lag_bytes": true, "podcopy_console_requests_total": true, "podcopy_receiver_alerts_total": true}
	// An agent publishes its key (no signer) or holds a certificate (the signer): it serves
	// the gauge of the one it does.
	either := map[string]string{"podcopy_signing_key_published": "podcopy_signing_certificate_expiry_timestamp_seconds",
		"podcopy_signing_certificate_expiry_timestamp_seconds": "podcopy_signing_key_published"}
	served := func(name string) bool {
		for series := range after {
			if series == name || strings.HasPrefix(series, name+"{") {
				return true
			}
		}
		return false
	}
	for _, name := range monitoringMetrics(t) {
		if later[name] {
			continue
		}
		found := served(name) || either[name] != "" && served(either[name])
		if !found {
			t.Errorf("the rules or the dashboard query %s, which the agent does not serve", name)
		}
	}
}

// monitoringMetrics are the metric names the chart's PrometheusRule and dashboard query.
func monitoringMetrics(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, f := range []string{"../charts/podcopy/templates/prometheusrule.yaml", "../charts/podcopy/dashboards/podcopy.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range regexp.MustCompile(`\b(podcopy_[a-z0-9_]+|process_[a-z0-9_]+)\b`).FindAllString(string(b), -1) {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %v", names)
	}
	return names
}

// TestLargeFile reports the time from annotation to CollectionSucceeded for 200 MB.
func TestLargeFile(t *testing.T) {
	ns := namespace(t)
	sourcePod(t, ns, "big", imageBusybox, "mkdir -p /var/log && head -c 209715200 /dev/urandom > /var/log/big.bin")
	src := exec.Target{Namespace: ns, Pod: "big", Container: "app"}
	start := time.Now()
	annotate(t, ns, "big", map[string]string{"podcopy/collect": "/var/log/big.bin"})
	st := waitFinal(t, ns, "big", "")
	elapsed := time.Since(start)
	if st.Phase != status.Succeeded || st.Bytes != 209715200 {
		t.Fatalf("status %+v", st)
	}
	m := readManifest(t, st)
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	if got := sha256In(t, analysis(t), dir+"/app/var/log/big.bin"); got != m.Files[0].SHA256 || got != sha256In(t, src, "/var/log/big.bin") {
		t.Fatalf("sha mismatch")
	}
	t.Logf("200 MiB: annotation to Succeeded status %.2fs (%.0f MB/s); agent pipeline: %s", elapsed.Seconds(),
		209.7152/elapsed.Seconds(), st.Message)
	_ = mustRun(t, analysis(t), "rm", "-rf", "/collect/"+ns)
}
