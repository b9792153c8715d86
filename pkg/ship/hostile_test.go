package ship

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/podcopy/podcopy/internal/testkit/hostile"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/failure"
)

// hostileSource is a source container whose tar is replaced: it sends the hostile archive of
// kind, whatever it is asked.
func hostileSource(kind string) exec.Executor {
	return exectest.Func(func(ctx context.Context, req exec.Request) error {
		if strings.Contains(strings.Join(req.Command, " "), "--no-recursion") {
			_, err := req.Stdout.Write(make([]byte, 1024))
			return err
		}
		return hostile.Write(req.Stdout, kind, "/var/log/app")
	})
}

// TestRunHostileArchives: every hostile archive ends in bounded time (each case has a 30 s
// context; the attacks would hold a worker forever) with the reason it deserves, and what
// is published agrees with its manifest.
func TestRunHostileArchives(t *testing.T) {
	t.Parallel()
	hostile.DripEvery = 10 * time.Millisecond
	tests := []struct {
		kind   string
		flavor string
		limits Limits
		reason string // "" : succeeds
		check  func(t *testing.T, f *fixture, j Job)
	}{
		{kind: hostile.SparseGNU, flavor: "gnu", check: skippedSparse},
		{kind: hostile.SparsePAX, flavor: "gnu", check: skippedSparse},
		{kind: hostile.HugeSkipped, flavor: "gnu", limits: Limits{MaxBytes: 1 << 20, MaxFiles: 10}, reason: failure.SourceBudgetExceeded},
		{kind: hostile.Endless, flavor: "gnu", limits: Limits{MaxBytes: 1 << 20, MaxFiles: 10}, reason: failure.LimitExceeded},
		{kind: hostile.Drip, flavor: "gnu", limits: Limits{MaxBytes: 1 << 30, MaxFiles: 10, Deadline: 500 * time.Millisecond}, reason: failure.DeadlineExceeded},
		{kind: hostile.Crafted, flavor: "gnu", check: treeEqualsManifest},
		{kind: hostile.Crafted, flavor: "busybox", check: treeEqualsManifest},
		// The same attacks after the index of written names moved to its file (issue 35).
		{kind: hostile.CraftedMany, flavor: "gnu", limits: Limits{MaxFiles: 2 * hostile.ManyFiles}, check: treeEqualsManifest},
		{kind: hostile.LongNames, flavor: "gnu", check: boundedManifest},
		{kind: hostile.LongNames, flavor: "gnu", limits: Limits{MaxManifestBytes: 32 << 10}, reason: failure.ManifestTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.flavor+"/"+tt.reason, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.flavor)
			f.shipper.Exec = exectest.Route{Source: hostileSource(tt.kind), Other: f.local, SourcePod: "src"}
			j := f.job("/var/log/app")
			j.Limits = tt.limits
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			_, err := f.shipper.Run(ctx, j)
			if ctx.Err() != nil {
				t.Fatalf("the collection was still running after 30 s (err %v)", err)
			}
			if got := failure.Reason(err); got != tt.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tt.reason)
			}
			if tt.reason != "" {
				if failure.Transient(err) {
					t.Errorf("%v is retried; a hostile source must not get another attempt", err)
				}
				if _, err := os.Stat(f.collected(j)); !os.IsNotExist(err) {
					t.Fatal("a failed collection was published")
				}
				return
			}
			tt.check(t, f, j)
		})
	}
}

func skippedSparse(t *testing.T, f *fixture, j Job) {
	m := f.manifest(t, j)
	if len(m.Files) != 1 || m.Files[0].Path != "/var/log/app/"+hostile.OK {
		t.Fatalf("files %+v", m.Files)
	}
	if len(m.Skipped) != 1 || !strings.Contains(m.Skipped[0].Reason, "sparse") {
		t.Fatalf("skipped %+v", m.Skipped)
	}
}

// treeEqualsManifest: every stored file is in the manifest with its bytes' hash, and every
// manifest file is stored; nothing is stored as a kind the manifest does not say.
func treeEqualsManifest(t *testing.T, f *fixture, j Job) {
	m := f.manifest(t, j)
	want := map[string]string{}
	for _, file := range m.Files {
		if _, dup := want[file.Path]; dup {
			t.Errorf("%s is listed twice", file.Path)
		}
		want[file.Path] = file.SHA256
	}
	root := filepath.Join(f.collected(j), "app")
	got := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		got[strings.TrimPrefix(p, root)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, sum := range want {
		if got[p] != sum {
			t.Errorf("%s: manifest %s, stored %q", p, sum, got[p])
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s is stored but not in the manifest", p)
		}
	}
	for _, p := range []string{"/var/log/app/a", "/var/log/app/b", "/var/log/app/" + hostile.OK} {
		if _, ok := want[p]; !ok {
			t.Errorf("%s missing from the manifest (%v)", p, want)
		}
	}
	reasons := map[string]string{}
	for _, s := range m.Skipped {
		reasons[s.Path] += s.Reason + ";"
	}
	for p, r := range map[string]string{"/var/log/app/a": "file of this name", "/var/log/app/a/b": "written as a file", "/var/log/app/b": "hard link"} {
		if !strings.Contains(reasons[p], r) {
			t.Errorf("skipped %s: %q, want %q", p, reasons[p], r)
		}
	}
}

func boundedManifest(t *testing.T, f *fixture, j Job) {
	info, err := os.Stat(filepath.Join(f.collected(j), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	// 64 entries with 64 KiB names (8 MiB of names, twice with the link targets).
	if info.Size() > 200<<10 {
		t.Fatalf("manifest of %d bytes for 64 skipped entries", info.Size())
	}
	for _, s := range f.manifest(t, j).Skipped {
		if len(s.Path) > 1100 || !strings.Contains(s.Path, "…(+") {
			t.Fatalf("skipped path of %d bytes, not marked as cut", len(s.Path))
		}
	}
}

func TestSourceBudgetCountsSkippedData(t *testing.T) {
	t.Parallel()
	l := Limits{MaxBytes: 1 << 20, MaxFiles: 10}
	if got, want := l.SourceBudget(), int64(1<<20+16<<20+40*6<<10); got != want {
		t.Fatalf("budget %d, want %d", got, want)
	}
	if (Limits{}).SourceBudget() != 0 {
		t.Fatal("an unbounded maxBytes has a budget")
	}
	if d := DeadlineFor(1 << 30); d != 2*time.Minute+512*time.Second {
		t.Fatalf("deadline for 1 GiB %s", d)
	}
	var le *LimitError
	_ = errors.As(nil, &le)
}

// countingExec counts the heartbeats sent to the destination.
type countingExec struct {
	exec.Executor
	touches atomic.Int64
}

func (c *countingExec) Exec(ctx context.Context, req exec.Request) error {
	if len(req.Command) > 0 && req.Command[0] == "touch" {
		c.touches.Add(1)
	}
	return c.Executor.Exec(ctx, req)
}

// TestRunHeartbeatKeepsStagingLive (issue 20): while a slow source trickles, the staging
// directory's modification time is refreshed, so the stale sweep (which decides by it)
// never removes a collection in flight; the heartbeat stops with the collection.
func TestRunHeartbeatKeepsStagingLive(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	ce := &countingExec{Executor: f.local}
	clock := f.shipper.Clock.(*testclock.FakeClock)
	f.shipper.Heartbeat = 10 * time.Second
	f.shipper.Stall = time.Hour // the watchdog runs on the wall clock
	f.shipper.Exec = exectest.Route{Source: exectest.Func(func(ctx context.Context, req exec.Request) error {
		if strings.Contains(strings.Join(req.Command, " "), "--no-recursion") {
			_, err := req.Stdout.Write(make([]byte, 1024))
			return err
		}
		archive := buildTar(t, []entry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./var/log/app/slow", Mode: 0o644}, data: strings.Repeat("x", 2048)}})
		for i := 0; i < len(archive); i += 512 { // a block every heartbeat: each one lands
			if _, err := req.Stdout.Write(archive[i : i+512]); err != nil {
				return err
			}
			before := ce.touches.Load()
			for ce.touches.Load() == before {
				if clock.HasWaiters() {
					clock.Step(f.shipper.Heartbeat)
				}
				runtime.Gosched()
			}
		}
		return nil
	}), Other: ce, SourcePod: "src"}
	j := f.job("/var/log/app")
	if _, err := f.shipper.Run(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	n := ce.touches.Load()
	if n < 3 {
		t.Fatalf("%d heartbeats over a collection of %d heartbeat periods", n, n)
	}
	clock.Step(time.Hour)
	if after := ce.touches.Load(); after != n {
		t.Fatalf("heartbeats went on after the collection: %d then %d", n, after)
	}
	if HeartbeatFor(time.Hour) != 15*time.Minute || HeartbeatFor(time.Second) != 10*time.Second {
		t.Fatal("HeartbeatFor")
	}
}

// TestRunCollectsEveryLegalName (issue 20): a file whose name holds a newline or an escape
// sequence is collected byte-exact by every reader (GNU tar, busybox tar, the helper), not
// skipped: an attacker must not hide a dropped file by naming it so.
func TestRunCollectsEveryLegalName(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, flavor)
			names := []string{"var/log/n/new\nline.log", "var/log/n/esc\x1b[2J.log", "var/log/n/tab\there.log"}
			sums := map[string]string{}
			for i, n := range names {
				sums["/"+n] = f.write(t, n, []byte(fmt.Sprintf("hidden %d\n", i)))
			}
			j := f.job("/var/log/n")
			res, err := f.shipper.Run(t.Context(), j)
			if err != nil {
				t.Fatal(err)
			}
			if res.Totals.Files != len(names) || res.Totals.Skipped != 0 {
				t.Fatalf("totals %+v", res.Totals)
			}
			m := f.manifest(t, j)
			for _, file := range m.Files {
				if sums[file.Path] != file.SHA256 {
					t.Errorf("%q: manifest %s, want %s", file.Path, file.SHA256, sums[file.Path])
				}
				data, err := os.ReadFile(filepath.Join(f.collected(j), "app", file.Path))
				if err != nil {
					t.Fatalf("stored %q: %v", file.Path, err)
				}
				if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != file.SHA256 {
					t.Errorf("stored %q differs", file.Path)
				}
				delete(sums, file.Path)
			}
			if len(sums) != 0 {
				t.Fatalf("not collected: %q", sums)
			}
		})
	}
}
