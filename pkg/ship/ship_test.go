package ship

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/source"
)

// TestMain doubles as the podcopy binary's source mode ("podcopy-source ..."), so the
// helper flavour runs the real helper as a separate process, as in a container.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "podcopy-source" {
		os.Exit(source.Main(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// flavors are the ways a source container is read: GNU tar, busybox tar, the podcopy helper.
var flavors = []string{"gnu", "busybox", "helper"}

// fixture is a source "container" root and a destination dir on local disk.
type fixture struct {
	root, dest string
	shipper    *Shipper
	local      *exectest.Local
	reader     source.Reader // nil: the container's tar
}

func newFixture(t *testing.T, flavor string) *fixture {
	t.Helper()
	f := &fixture{root: t.TempDir(), dest: t.TempDir(), local: &exectest.Local{}}
	if flavor == "busybox" {
		f.local.Path = exectest.BusyboxPath(t.TempDir())
		if f.local.Path == "" {
			t.Skip("busybox is not installed (make deps installs busybox-static)")
		}
	}
	if flavor == "helper" {
		f.reader = source.Helper{Command: []string{os.Args[0], "podcopy-source", "--root=" + f.root}}
	}
	f.shipper = &Shipper{Exec: f.local, SourceRoot: f.root, SpoolDir: t.TempDir(),
		Clock: testclock.NewFakeClock(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))}
	return f
}

func (f *fixture) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(f.root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func (f *fixture) job(paths ...string) Job {
	l, err := layout.New(f.dest, "ns", "src")
	if err != nil {
		panic(err)
	}
	return Job{
		Header:      manifest.Header{Collection: "20261122T100000Z-abcdef12", Request: manifest.Request{ID: "abcdef12", Paths: paths, Mode: "once"}, Source: manifest.Source{Container: "app"}},
		Paths:       paths,
		Source:      exec.Target{Namespace: "ns", Pod: "src", Container: "app"},
		Destination: exec.Target{Namespace: "podcopy", Pod: "analysis-0", Container: "store"},
		Layout:      l,
		Policy:      policy.Policy{AllowPaths: []string{"/**"}, DenyPaths: []string{"/var/log/secret/**"}},
		Reader:      f.reader,
	}
}

func (f *fixture) collected(j Job) string {
	return filepath.Join(f.dest, "ns", "src", j.Header.Collection)
}

func (f *fixture) manifest(t *testing.T, j Job) manifest.Manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.collected(j), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func random(n int) []byte {
	b := make([]byte, n)
	x := uint32(n) | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func TestRunRealTar(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		for _, gz := range []bool{false, true} {
			name := flavor
			if gz {
				name += "-gzip"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, flavor)
				sums := map[string]string{
					"/var/log/mysql/slow.log":          f.write(t, "var/log/mysql/slow.log", random(3<<20+7)),
					"/var/log/app/a.log":               f.write(t, "var/log/app/a.log", []byte("a\n")),
					"/var/log/app/b.log":               f.write(t, "var/log/app/b.log", nil),
					"/var/log/dir/sub/deep.txt":        f.write(t, "var/log/dir/sub/deep.txt", random(100)),
					"/var/log/app/x;touch pwned $(id)": f.write(t, "var/log/app/x;touch pwned $(id)", []byte("hostile")),
				}
				f.write(t, "var/log/app/c.txt", []byte("not matched by the glob"))
				f.write(t, "var/log/dir/secret.txt", []byte("x"))
				if err := os.Symlink("/etc/passwd", filepath.Join(f.root, "var/log/dir/link")); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mkfifo(filepath.Join(f.root, "var/log/dir/fifo"), 0o644); err != nil {
					t.Fatal(err)
				}
				sums["/var/log/dir/secret.txt"] = f.write(t, "var/log/dir/secret.txt", []byte("x"))
				sums["/var/log/app/text.log"] = f.write(t, "var/log/app/text.log", bytes.Repeat([]byte("GET /api/v1/orders 200 12ms\n"), 1<<15))
				sent := &publishedBytes{Executor: f.shipper.Exec}
				f.shipper.Exec = sent
				// a.log is named twice (glob and literal) and must be written once.
				j := f.job("/var/log/app/*.log", "/var/log/app/a.log", "/var/log/app/x;touch pwned $(id)", "/var/log/dir", "/var/log/mysql/slow.log")
				j.Gzip = gz
				key, _, err := custody.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				j.Custody = key
				res, err := f.shipper.Run(t.Context(), j)
				if err != nil {
					t.Fatal(err)
				}
				if res.Totals.Files != len(sums) || res.SkippedByType[SkipSymlink] != 1 || res.SkippedByType[SkipFIFO] != 1 {
					t.Fatalf("result %+v", res)
				}
				m := f.manifest(t, j)
				if m.Totals != res.Totals || len(m.Files) != len(sums) {
					t.Fatalf("manifest totals %+v files %d", m.Totals, len(m.Files))
				}
				// Both legs carry the archive compressed with gzip (900 KiB of text among 4 MiB),
				// and the manifest says by how much; without it, as it is.
				tot := m.Totals
				if tot.ArchiveBytes%512 != 0 || tot.ArchiveBytes < tot.Bytes || tot.CompressionRatio != math.Round(float64(tot.ArchiveBytes)/float64(tot.SourceBytes)*100)/100 {
					t.Fatalf("transfer totals %+v", tot)
				}
				switch {
				case !gz && (tot.Compression != "none" || tot.SourceBytes != tot.ArchiveBytes || sent.n.Load() < tot.Bytes):
					t.Fatalf("uncompressed: totals %+v, %d bytes to the analysis pod", tot, sent.n.Load())
				case gz && (tot.Compression != "gzip" || tot.SourceBytes > tot.ArchiveBytes-800<<10 || sent.n.Load() > tot.Bytes-800<<10):
					t.Fatalf("gzip: totals %+v, %d bytes to the analysis pod", tot, sent.n.Load())
				}
				for _, file := range m.Files {
					if sums[file.Path] != file.SHA256 {
						t.Errorf("%s: manifest sha %s, want %s", file.Path, file.SHA256, sums[file.Path])
					}
					data, err := os.ReadFile(filepath.Join(f.collected(j), "app", file.Path))
					if err != nil {
						t.Fatal(err)
					}
					got := sha256.Sum256(data)
					if hex.EncodeToString(got[:]) != sums[file.Path] {
						t.Errorf("%s: destination bytes differ", file.Path)
					}
					if file.Mode != "0640" {
						t.Errorf("%s: mode %s", file.Path, file.Mode)
					}
				}
				for _, e := range []string{"pwned", "var/log/dir/link"} {
					if _, err := os.Lstat(filepath.Join(f.collected(j), "app", e)); !os.IsNotExist(err) {
						t.Errorf("%s exists at the destination", e)
					}
				}
				if m.Collection != j.Header.Collection || m.CompletionTime != "2026-11-22T10:00:00Z" {
					t.Errorf("manifest header %+v", m.Header)
				}
				// The custody record beside the manifest signs every file and the manifest.
				env, err := os.ReadFile(filepath.Join(f.collected(j), custody.FileName))
				if err != nil {
					t.Fatal(err)
				}
				rec, err := custody.Verify(t.Context(), env, custody.Trust{Keys: []*custody.PublicKey{key.Public()}})
				if err != nil {
					t.Fatal(err)
				}
				if len(rec.Subjects) != len(sums)+1 || rec.Subjects[custody.ManifestSubject] != res.ManifestSHA256 || res.CustodyKeyID != key.Public().ID() {
					t.Fatalf("custody subjects %v, manifest %s, key %s", rec.Names(), res.ManifestSHA256, res.CustodyKeyID)
				}
				for p, sum := range sums {
					if rec.Subjects[custody.FileSubject("app", p)] != sum {
						t.Errorf("custody subject %s: %s, want %s", p, rec.Subjects[custody.FileSubject("app", p)], sum)
					}
				}
				// The record says how the files were read: the reader's own kind.
				kind := source.KindTar
				if flavor == "helper" {
					kind = source.KindHelper
				}
				if rec.Predicate.EndTime != m.CompletionTime || rec.Predicate.Totals != m.Totals || rec.Predicate.SourceKind != kind {
					t.Errorf("custody predicate %+v", rec.Predicate)
				}
			})
		}
	}
}

func TestRunPolicyAndLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		limits  Limits
		wantErr string
	}{
		{name: "max files", limits: Limits{MaxFiles: 2}, wantErr: "exceeds policy.maxFiles=2"},
		{name: "max bytes", limits: Limits{MaxBytes: 1000}, wantErr: "exceeds policy.maxBytes=1000"},
		{name: "within limits", limits: Limits{MaxFiles: 3, MaxBytes: 3000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "gnu")
			for _, n := range []string{"a", "b", "c"} {
				f.write(t, "var/log/d/"+n, random(900))
			}
			f.write(t, "var/log/d/secret/key", []byte("k"))
			j := f.job("/var/log/d")
			j.Policy = policy.Policy{AllowPaths: []string{"/var/log/**"}, DenyPaths: []string{"/var/log/d/secret/**"}}
			j.Limits = tt.limits
			res, err := f.shipper.Run(t.Context(), j)
			if tt.wantErr != "" {
				var le *LimitError
				if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want LimitError %q", err, tt.wantErr)
				}
				if _, err := os.Stat(f.collected(j)); !os.IsNotExist(err) {
					t.Fatalf("partial collection left at destination: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Totals.Files != 3 || res.Totals.Skipped != 1 {
				t.Fatalf("totals %+v", res.Totals)
			}
			if _, err := os.Stat(filepath.Join(f.collected(j), "app/var/log/d/secret/key")); !os.IsNotExist(err) {
				t.Fatal("denied file written")
			}
		})
	}
}

func TestRunMissingFile(t *testing.T) {
	t.Parallel()
	for _, flavor := range flavors {
		for _, p := range []string{"/var/log/missing.log", "/var/log/none-*.log"} {
			t.Run(flavor+p, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, flavor)
				f.write(t, "var/log/ok.log", []byte("ok"))
				j := f.job("/var/log/ok.log", p)
				_, err := f.shipper.Run(t.Context(), j)
				if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(p, "/")) {
					t.Fatalf("err = %v, want one naming %s", err, p)
				}
				if _, err := os.Stat(f.collected(j)); !os.IsNotExist(err) {
					t.Fatal("partial collection left at destination")
				}
			})
		}
	}
}

// craftedSource plays a hand-made archive as the source tar's stdout (and an empty archive
// for the check of the requested paths' directories).
func craftedSource(archive []byte, exitErr error) exec.Executor {
	return exectest.Func(func(ctx context.Context, req exec.Request) error {
		if slices.Contains(req.Command, "--no-recursion") {
			_, err := req.Stdout.Write(make([]byte, 1024))
			return err
		}
		if _, err := req.Stdout.Write(archive); err != nil {
			return err
		}
		return exitErr
	})
}

type entry struct {
	hdr  tar.Header
	data string
}

func buildTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRunCraftedArchives(t *testing.T) {
	t.Parallel()
	reg := func(name, data string) entry {
		return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, data: data}
	}
	good := reg("./var/log/app/ok.log", "ok")
	tests := []struct {
		name        string
		entries     []entry
		truncate    int
		wantSkipped map[string]int
		wantExtra   string // files written besides ok.log, in order, each followed by ","
		raw         func([]byte) []byte
		wantErr     string
	}{
		{name: "absolute name", entries: []entry{good, reg("/etc/cron.d/evil", "x")}, wantSkipped: map[string]int{SkipOther: 1}},
		{name: "dotdot", entries: []entry{good, reg("./var/log/app/../../../../etc/evil", "x")}, wantSkipped: map[string]int{SkipOther: 1}},
		{name: "outside request", entries: []entry{good, reg("./etc/evil", "x")}, wantSkipped: map[string]int{SkipOther: 1}},
		{name: "symlink then file through it", entries: []entry{good,
			{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "./var/log/app/esc", Linkname: "/etc"}},
			reg("./var/log/app/esc/evil", "x")}, wantSkipped: map[string]int{SkipSymlink: 1}, wantExtra: "app/var/log/app/esc/evil,"},
		{name: "hardlink", entries: []entry{good, {hdr: tar.Header{Typeflag: tar.TypeLink, Name: "./var/log/app/h", Linkname: "/etc/shadow"}}},
			wantSkipped: map[string]int{SkipHardlink: 1}},
		{name: "devices", entries: []entry{good, {hdr: tar.Header{Typeflag: tar.TypeChar, Name: "./var/log/app/c"}},
			{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "./var/log/app/b"}}, {hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "./var/log/app/f"}}},
			wantSkipped: map[string]int{SkipDevice: 2, SkipFIFO: 1}},
		{name: "huge pax header", entries: []entry{good, reg("./PaxHeaders/x", strings.Repeat("9", 2<<20))}, raw: paxify, wantErr: "reading source tar stream"},
		{name: "truncated", entries: []entry{good, reg("./var/log/app/big", strings.Repeat("y", 100000))}, truncate: 50000, wantErr: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "gnu")
			archive := buildTar(t, tt.entries)
			if tt.raw != nil {
				archive = tt.raw(archive)
			}
			if tt.truncate > 0 {
				archive = archive[:tt.truncate]
			}
			f.shipper.Exec = exectest.Route{Source: craftedSource(archive, nil), Other: f.local, SourcePod: "src"}
			j := f.job("/var/log/app")
			res, err := f.shipper.Run(t.Context(), j)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for typ, n := range tt.wantSkipped {
				if res.SkippedByType[typ] != n {
					t.Errorf("skipped %s = %d, want %d (%v)", typ, res.SkippedByType[typ], n, res.SkippedByType)
				}
			}
			var names []string
			_ = filepath.Walk(f.dest, func(p string, info os.FileInfo, err error) error {
				if err == nil && !info.IsDir() {
					if !strings.HasPrefix(p, f.collected(j)+"/") {
						t.Errorf("%s written outside the collection directory", p)
					}
					names = append(names, strings.TrimPrefix(p, f.collected(j)+"/"))
				}
				return nil
			})
			if strings.Join(names, ",") != tt.wantExtra+"app/var/log/app/ok.log,manifest.json" {
				t.Fatalf("destination holds %v", names)
			}
		})
	}
}

// paxify turns the second header of archive into a PAX extended header (typeflag 'x') with
// the same, oversized, body: archive/tar's Writer refuses to write one.
func paxify(archive []byte) []byte {
	out := bytes.Clone(archive)
	off := 512 + (2+511)/512*512 // after the first entry ("ok", one block of data)
	h := out[off : off+512]
	h[156] = tar.TypeXHeader
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], []byte(fmt.Sprintf("%06o\x00 ", sum)))
	return out
}

func TestRunWarningExit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	archive := buildTar(t, []entry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./var/log/app.log", Mode: 0o644}, data: "growing"}})
	warn := &exec.ExitError{Code: 1, Stderr: "tar: ./var/log/app.log: file changed as we read it"}
	f.shipper.Exec = exectest.Route{Source: craftedSource(archive, warn), Other: f.local, SourcePod: "src"}
	res, err := f.shipper.Run(t.Context(), f.job("/var/log/app.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Warning, "file changed as we read it") || res.Totals.Files != 1 {
		t.Fatalf("result %+v", res)
	}
	fatal := &exec.ExitError{Code: 2, Stderr: "tar: exiting with failure status"}
	f.shipper.Exec = exectest.Route{Source: craftedSource(archive, fatal), Other: f.local, SourcePod: "src"}
	if _, err := f.shipper.Run(t.Context(), f.job("/var/log/app.log")); err == nil || !strings.Contains(err.Error(), "code 2") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunDestinationFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	f.write(t, "var/log/a", random(1<<20))
	j := f.job("/var/log/a")
	// A file where the pod's directory should be: the analysis pod's own error is the reason.
	if err := os.WriteFile(filepath.Join(f.dest, "ns"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := f.shipper.Run(t.Context(), j)
	var de *DestinationError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "writing to analysis pod podcopy/analysis-0/store") || !strings.Contains(err.Error(), "Not a directory") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunCancelled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	f.shipper.Exec = exectest.Route{SourcePod: "src", Other: f.local, Source: exectest.Func(func(ctx context.Context, req exec.Request) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})}
	go func() { <-started; cancel() }()
	if _, err := f.shipper.Run(ctx, f.job("/var/log/a")); err == nil {
		t.Fatal("cancelled run succeeded")
	}
}

// TestRunSpoolFull: a destination that takes nothing while the source's spool is full ends
// the collection with SpoolFull once the source has waited SpoolFullWait (by the shipper's
// clock), not with a cut or a stall.
func TestRunSpoolFull(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "gnu")
	f.write(t, "var/log/a", random(12<<20)) // past the spool's 8 MiB of memory and its 1 KiB of disk
	f.shipper.SourceSpool, f.shipper.SpoolFullWait = 1<<10, 5*time.Second
	f.shipper.Exec = exectest.Route{SourcePod: "src", Source: f.local, Other: exectest.Func(func(ctx context.Context, req exec.Request) error {
		if slices.Contains(req.Command, "podcopy-publish") {
			<-ctx.Done() // the analysis pod takes nothing
			return ctx.Err()
		}
		return f.local.Exec(ctx, req)
	})}
	done := make(chan error, 1)
	go func() {
		_, err := f.shipper.Run(t.Context(), f.job("/var/log/a"))
		done <- err
	}()
	fc := f.shipper.Clock.(*testclock.FakeClock)
	for {
		select {
		case err := <-done:
			if failure.Reason(err) != failure.SpoolFull || !strings.Contains(err.Error(), "took nothing for 5s") {
				t.Fatalf("err = %v (reason %s), want SpoolFull", err, failure.Reason(err))
			}
			return
		case <-time.After(20 * time.Millisecond):
			fc.Step(time.Second) // the watchdog's 60 s stall comes after the spool's 5 s
		}
	}
}

func testLayout(t testing.TB) layout.Layout {
	l, err := layout.New("/collect", "ns", "p")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// publishedBytes counts the bytes the agent sends to the analysis pod's extraction.
type publishedBytes struct {
	exec.Executor
	n atomic.Int64
}

func (p *publishedBytes) Exec(ctx context.Context, req exec.Request) error {
	if slices.Contains(req.Command, "podcopy-publish") {
		req.Stdin = io.TeeReader(req.Stdin, writerFunc(func(b []byte) (int, error) { p.n.Add(int64(len(b))); return len(b), nil }))
	}
	return p.Executor.Exec(ctx, req)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestDestinationCodec: with compression, the analysis pod's leg is gzip only when the
// archive compresses (its busybox gunzip is slower than the link on incompressible data);
// either way the bytes arrive intact.
func TestDestinationCodec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		data       []byte
		gzip, want bool // compression on; the analysis pod's leg compressed
	}{
		{"text", bytes.Repeat([]byte("GET /api/v1/orders 200 12ms\n"), 1<<16), true, true},
		{"random", random(3 << 20), true, false},
		{"text without compression", bytes.Repeat([]byte("GET /api/v1/orders 200 12ms\n"), 1<<16), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "busybox")
			sum := f.write(t, "var/log/app.log", tt.data)
			sent := &publishedBytes{Executor: f.shipper.Exec}
			f.shipper.Exec = sent
			j := f.job("/var/log/app.log")
			j.Gzip = tt.gzip
			res, err := f.shipper.Run(t.Context(), j)
			if err != nil {
				t.Fatal(err)
			}
			if m := f.manifest(t, j); len(m.Files) != 1 || m.Files[0].SHA256 != sum {
				t.Fatalf("manifest %+v", m)
			}
			if compressed := sent.n.Load() < res.Totals.Bytes/2; compressed != tt.want {
				t.Fatalf("%d bytes of %d sent to the analysis pod; compressed %v, want %v", sent.n.Load(), res.Totals.Bytes, compressed, tt.want)
			}
		})
	}
}
