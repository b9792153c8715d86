package ship

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/failure"
)

// TestRunNeverReadsThroughSymlinkedDirectories is issue 11's third defect, with both tars:
// /var/log/etc -> /etc used to carry /var/log/etc/passwd past the policy.
func TestRunNeverReadsThroughSymlinkedDirectories(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		for _, req := range [][]string{{"/var/log/etc/passwd", "/var/log/ok.log"}, {"/var/log/*/passwd", "/var/log/ok.log"}, {"/var/log/etc/passwd"}} {
			t.Run(flavor+strings.Join(req, ","), func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, flavor)
				f.write(t, "etc/passwd", []byte("root:x:0:0"))
				f.write(t, "var/log/ok.log", []byte("ok"))
				if err := os.Symlink("../../etc", filepath.Join(f.root, "var/log/etc")); err != nil {
					t.Fatal(err)
				}
				j := f.job(req...)
				res, err := f.shipper.Run(t.Context(), j)
				if len(req) == 1 {
					if err == nil || !strings.Contains(err.Error(), "directory /var/log/etc is a symbolic link") {
						t.Fatalf("err = %v", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if res.Totals.Files != 1 || res.SkippedByType[SkipSymlink] != 1 {
					t.Fatalf("result %+v", res)
				}
				m := f.manifest(t, j)
				if len(m.Skipped) != 1 || !strings.Contains(m.Skipped[0].Reason, "symbolic link") {
					t.Fatalf("skipped %+v", m.Skipped)
				}
				_ = filepath.Walk(f.dest, func(p string, info os.FileInfo, err error) error {
					if err == nil && strings.HasSuffix(p, "passwd") {
						t.Errorf("read through the symlinked directory: %s", p)
					}
					return nil
				})
			})
		}
	}
}

// TestRunWritesHardLinks: both names of a hard-linked file are in the collection, with the
// same hash (issue 12).
func TestRunWritesHardLinks(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, flavor)
			sum := f.write(t, "var/log/h/a", random(5000))
			if err := os.Link(filepath.Join(f.root, "var/log/h/a"), filepath.Join(f.root, "var/log/h/b")); err != nil {
				t.Fatal(err)
			}
			j := f.job("/var/log/h")
			res, err := f.shipper.Run(t.Context(), j)
			if err != nil {
				t.Fatal(err)
			}
			if res.Totals.Files != 2 || res.Totals.Skipped != 0 {
				t.Fatalf("result %+v", res)
			}
			for _, file := range f.manifest(t, j).Files {
				if file.SHA256 != sum {
					t.Errorf("%s: sha %s", file.Path, file.SHA256)
				}
				data, err := os.ReadFile(filepath.Join(f.collected(j), "app", file.Path))
				if err != nil || len(data) != 5000 {
					t.Errorf("%s at the destination: %d bytes, %v", file.Path, len(data), err)
				}
			}
		})
	}
}

// TestRunCutAtEveryHeaderBoundary: a stream that stops exactly between entries (Go's tar
// reader calls that a clean EOF) is a failure, never a short Succeeded (issue 12).
func TestRunCutAtEveryHeaderBoundary(t *testing.T) {
	t.Parallel()
	var entries []entry
	for _, n := range []string{"a", "b", "c", "d"} {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./var/log/app/" + n, Mode: 0o644}, data: strings.Repeat(n, 700)})
	}
	archive := buildTar(t, entries)
	per := 512 + 1024 // header + 700 bytes padded to two blocks
	for cut := 0; cut <= len(entries)*per+512; cut += 512 {
		if cut%per != 0 && cut != len(entries)*per+512 {
			continue // only boundaries between entries, and the half marker
		}
		f := newFixture(t, "gnu")
		f.shipper.Exec = exectest.Route{Source: craftedSource(archive[:cut], nil), Other: f.local, SourcePod: "src"}
		j := f.job("/var/log/app")
		if _, err := f.shipper.Run(t.Context(), j); err == nil {
			t.Fatalf("cut at %d of %d: succeeded", cut, len(archive))
		} else if cut > 0 && !strings.Contains(err.Error(), "end-of-archive") {
			t.Errorf("cut at %d: %v", cut, err)
		}
		if _, err := os.Stat(f.collected(j)); !os.IsNotExist(err) {
			t.Fatalf("cut at %d: a collection was published", cut)
		}
		if entries, _ := os.ReadDir(filepath.Join(f.dest, "ns", "src", ".partial")); len(entries) != 0 {
			t.Fatalf("cut at %d: staging left behind: %v", cut, entries)
		}
	}
	f := newFixture(t, "gnu")
	f.shipper.Exec = exectest.Route{Source: craftedSource(archive, nil), Other: f.local, SourcePod: "src"}
	if _, err := f.shipper.Run(t.Context(), f.job("/var/log/app")); err != nil {
		t.Fatalf("the whole archive: %v", err)
	}
}

// TestRunStalledSourceFails: a source that stops sending without ending fails after the
// watchdog's limit instead of holding the worker.
func TestRunStalledSourceFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	f.shipper.Stall = 300 * time.Millisecond
	f.shipper.Exec = exectest.Route{SourcePod: "src", Other: f.local, Source: exectest.Func(func(ctx context.Context, req exec.Request) error {
		if strings.Contains(strings.Join(req.Command, " "), "--no-recursion") {
			_, err := req.Stdout.Write(make([]byte, 1024))
			return err
		}
		_, _ = req.Stdout.Write(buildTar(t, []entry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./var/log/a", Mode: 0o644}, data: "x"}})[:512])
		<-ctx.Done()
		return ctx.Err()
	})}
	j := f.job("/var/log/a")
	_, err := f.shipper.Run(t.Context(), j)
	if err == nil || !strings.Contains(err.Error(), "no progress for 300ms") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(f.collected(j)); !os.IsNotExist(err) {
		t.Fatal("a stalled collection was published")
	}
}

// TestRunReportsTheAnalysisPodsReason: the destination's tar fails (here: a tar that says
// its disk is full); that reason is the collection's, it is permanent, nothing is published.
func TestRunReportsTheAnalysisPodsReason(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	f.write(t, "var/log/big", random(4<<20))
	bin := t.TempDir()
	fake := "#!/bin/sh\nhead -c 100000 >/dev/null\necho 'tar: write error: No space left on device' >&2\nexit 2\n"
	if err := os.WriteFile(filepath.Join(bin, "tar"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	dst := &exectest.Local{Path: bin + ":" + os.Getenv("PATH")}
	f.shipper.Exec = exectest.Route{SourcePod: "src", Source: f.local, Other: dst}
	j := f.job("/var/log/big")
	_, err := f.shipper.Run(t.Context(), j)
	if err == nil || !strings.Contains(err.Error(), "No space left on device") || failure.Transient(err) {
		t.Fatalf("err = %v (transient %v)", err, failure.Transient(err))
	}
	if _, err := os.Stat(f.collected(j)); !os.IsNotExist(err) {
		t.Fatal("published")
	}
}

// TestRunBoundsEntriesOfEveryKind: a source that sends only skipped entries (symlinks here)
// still hits a limit: the manifest cannot grow without bound (issue 11).
func TestRunBoundsEntriesOfEveryKind(t *testing.T) {
	t.Parallel()
	var entries []entry
	for i := range 50 {
		entries = append(entries, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "./var/log/app/l" + strconv.Itoa(i), Linkname: "/etc"}})
	}
	f := newFixture(t, "gnu")
	f.shipper.Exec = exectest.Route{Source: craftedSource(buildTar(t, entries), nil), Other: f.local, SourcePod: "src"}
	j := f.job("/var/log/app")
	j.Limits = Limits{MaxFiles: 10}
	_, err := f.shipper.Run(t.Context(), j)
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "more than 40 entries") {
		t.Fatalf("err = %v", err)
	}
}
