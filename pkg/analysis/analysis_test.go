package analysis

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/layout"
)

// local returns a Pod whose commands run as local processes with GNU tools or busybox.
func local(t *testing.T, flavor string) (Pod, *exectest.Local) {
	t.Helper()
	l := &exectest.Local{}
	if flavor == "busybox" {
		if l.Path = exectest.BusyboxPath(t.TempDir()); l.Path == "" {
			t.Skip("busybox not installed")
		}
	}
	return Pod{Exec: l, Target: exec.Target{Namespace: "podcopy", Pod: "analysis-0"}}, l
}

func archive(t *testing.T, files map[string]string) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &b
}

// TestPod runs every command of the owner against a real directory, with GNU tools and with
// busybox (the analysis pod's usual image).
func TestPod(t *testing.T) {
	t.Parallel()
	for _, flavor := range []string{"gnu", "busybox"} {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			p, _ := local(t, flavor)
			ctx := t.Context()
			dir := t.TempDir()
			id := "20261206T120000Z-0123abcd"
			l, err := layout.New(dir, "ns", "web")
			if err != nil {
				t.Fatal(err)
			}
			final, _ := l.Collection(id)
			staging, _ := l.Staging(id)

			// Published only with the record when signed; the marker is the last line.
			var out bytes.Buffer
			pub := Publish{StagingRoot: l.StagingRoot(), ID: id, Final: final, Signed: true}
			err = p.Publish(ctx, pub, archive(t, map[string]string{id + "/" + layout.ManifestName: "{}", id + "/a.log": "a"}), &out)
			if err == nil || !strings.HasPrefix(out.String(), FailedPrefix) || !strings.Contains(out.String(), layout.CustodyName) {
				t.Fatalf("unsigned archive published: %v %q", err, out.String())
			}
			if err := p.Discard(ctx, staging); err != nil {
				t.Fatal(err)
			}
			out.Reset()
			files := map[string]string{id + "/" + layout.ManifestName: "{}", id + "/a.log": "hello", id + "/" + layout.CustodyName: "rec"}
			if err := p.Publish(ctx, pub, archive(t, files), &out); err != nil || out.String() != CompleteMarker(id) {
				t.Fatalf("publish: %v %q", err, out.String())
			}
			if _, err := os.Stat(staging); err == nil {
				t.Fatal("staging left behind")
			}
			out.Reset()
			if err := p.Publish(ctx, pub, archive(t, files), &out); err == nil || !strings.Contains(out.String(), "already exists") {
				t.Fatalf("a second publication overwrote the first: %v %q", err, out.String())
			}
			if err := p.Discard(ctx, staging); err != nil { // as the shipper does after a failure
				t.Fatal(err)
			}

			// Reading back.
			var b bytes.Buffer
			if found, err := p.ReadFile(ctx, final+"/"+layout.CustodyName, &b); !found || err != nil || b.String() != "rec" {
				t.Fatalf("read: %v %v %q", found, err, b.String())
			}
			b.Reset()
			if found, err := p.ReadFile(ctx, final+"/missing", &b); found || err != nil {
				t.Fatalf("a missing file: %v %v", found, err)
			}
			if found, err := p.ReadFile(ctx, final, &b); found || err != nil {
				t.Fatalf("a directory is not a file: %v %v", found, err)
			}
			b.Reset()
			if err := p.Head(ctx, final+"/a.log", 3, &b); err != nil || b.String() != "hel" {
				t.Fatalf("head: %v %q", err, b.String())
			}
			b.Reset()
			if err := p.Cat(ctx, final+"/"+layout.ManifestName, &b); err != nil || b.String() != "{}" {
				t.Fatalf("cat: %v %q", err, b.String())
			}
			b.Reset()
			if err := p.List(ctx, l.Root(), &b); err != nil || !strings.Contains(b.String(), id+"\n") {
				t.Fatalf("list: %v %q", err, b.String())
			}
			b.Reset()
			if err := p.Archive(ctx, final, &b); err != nil {
				t.Fatal(err)
			}
			var names []string
			tr := tar.NewReader(&b)
			for h, err := tr.Next(); err == nil; h, err = tr.Next() {
				names = append(names, h.Name)
			}
			if !slices.Contains(names, "./a.log") {
				t.Fatalf("archive members: %v", names)
			}

			// The janitor.
			u, err := p.Usage(ctx, filepath.Dir(l.Root()))
			if err != nil || u.Collections != 1 || u.Bytes <= 0 {
				t.Fatalf("usage: %+v %v", u, err)
			}
			if u, err := p.Usage(ctx, dir+"/none"); err != nil || u != (Usage{}) {
				t.Fatalf("usage of a missing directory: %+v %v", u, err)
			}
			b.Reset()
			if err := p.Collections(ctx, dir, &b); err != nil || strings.TrimSpace(b.String()) != final+"/"+layout.ManifestName {
				t.Fatalf("collections: %v %q", err, b.String())
			}
			if err := p.Heartbeat(ctx, staging); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(staging); err == nil {
				t.Fatal("the heartbeat created a staging directory")
			}
			b.Reset()
			if err := p.SweepStale(ctx, dir, 60, &b); err != nil || b.Len() != 0 {
				t.Fatalf("stale: %v %q", err, b.String())
			}
			if err := p.Remove(ctx, []string{final}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(final); err == nil {
				t.Fatal("not removed")
			}
		})
	}
}

// TestFollowFiles appends to a followed file with its checkpoint and sets it aside.
func TestFollowFiles(t *testing.T) {
	t.Parallel()
	p, _ := local(t, "gnu")
	ctx := t.Context()
	dir := t.TempDir()
	file, state := dir+"/f.log", dir+"/f.state"
	var out bytes.Buffer
	if err := p.Probe(ctx, file, state, &out); err != nil || out.String() != "0\nnone\n" {
		t.Fatalf("probe of nothing: %v %q", err, out.String())
	}
	out.Reset()
	if err := p.Append(ctx, file, state, "uid 1 0 -", strings.NewReader("line\n"), &out); err != nil || out.String() != "0 5\n" {
		t.Fatalf("append: %v %q", err, out.String())
	}
	out.Reset()
	if err := p.Probe(ctx, file, state, &out); err != nil || !strings.HasPrefix(out.String(), "5\nuid 1 0 - 0") {
		t.Fatalf("probe: %v %q", err, out.String())
	}
	var errb bytes.Buffer
	if err := p.Retire(ctx, file, state, dir+"/old.log", dir+"/old.state", &errb); err != nil {
		t.Fatalf("retire: %v %s", err, errb.String())
	}
	if _, err := os.Stat(dir + "/old.log"); err != nil {
		t.Fatal(err)
	}
}

// TestCommandsAreFixed: every command is a fixed binary whose operands follow "--", or
// "sh -c" with an embedded script; a hostile path is only ever an argument.
func TestCommandsAreFixed(t *testing.T) {
	t.Parallel()
	hostile := "/collect/$(touch pwned); rm -rf / #"
	rec := &exectest.Local{}
	p := Pod{Exec: exectest.Func(func(_ context.Context, req exec.Request) error {
		rec.Calls = append(rec.Calls, req.Command)
		return nil
	})}
	ctx := t.Context()
	var b bytes.Buffer
	_ = p.Publish(ctx, Publish{StagingRoot: hostile, ID: hostile, Final: hostile, Gzip: true, Signed: true}, strings.NewReader(""), &b)
	_ = p.Heartbeat(ctx, hostile)
	_ = p.Discard(ctx, hostile)
	_ = p.SweepStale(ctx, hostile, 5, &b)
	_ = p.Collections(ctx, hostile, &b)
	_ = p.Remove(ctx, []string{hostile, hostile})
	_, _ = p.Usage(ctx, hostile)
	_ = p.Probe(ctx, hostile, hostile, &b)
	_ = p.Append(ctx, hostile, hostile, hostile, strings.NewReader(""), &b)
	_ = p.Retire(ctx, hostile, hostile, hostile, hostile, &b)
	_, _ = p.ReadFile(ctx, hostile, &b)
	_ = p.Cat(ctx, hostile, &b)
	_ = p.Head(ctx, hostile, 10, &b)
	_ = p.List(ctx, hostile, &b)
	_ = p.Archive(ctx, hostile, &b)
	_, _ = p.Reserve(ctx, Reservation{NamespaceDir: hostile, Ledger: hostile, Name: hostile})
	_ = p.Release(ctx, hostile, hostile)
	scripts := map[string]bool{}
	for _, s := range []string{publishScript, staleScript, usageScript, collectionsScript, readScript, probeScript, appendScript, retireScript, reserveScript} {
		scripts[s] = true
	}
	embedded := 0
	_ = fs.WalkDir(os.DirFS("scripts"), ".", func(string, fs.DirEntry, error) error { embedded++; return nil })
	if len(scripts) != embedded-1 { // the walk counts the directory itself
		t.Errorf("%d scripts embedded, %d in scripts/", len(scripts), embedded-1)
	}
	for _, cmd := range rec.Calls {
		if cmd[0] == "sh" {
			if len(cmd) < 4 || cmd[1] != "-c" || !scripts[cmd[2]] || !strings.HasPrefix(cmd[3], "podcopy-") {
				t.Errorf("sh runs something that is not an embedded script: %q", cmd)
			}
			continue
		}
		i := slices.IndexFunc(cmd, func(a string) bool { return strings.Contains(a, hostile) })
		if i < 0 {
			t.Errorf("%q: the path is not an operand", cmd)
			continue
		}
		if cmd[0] == "tar" {
			if cmd[i-1] != "-C" {
				t.Errorf("%q: the path is not -C's argument", cmd)
			}
			continue
		}
		if !slices.Contains(cmd[:i], "--") {
			t.Errorf("%q: no -- before the path", cmd)
		}
	}
}

// TestOneOwner: no product package but this one (and package source, which owns the source
// container's side) names a command for a pod.
func TestOneOwner(t *testing.T) {
	t.Parallel()
	command := regexp.MustCompile(`\[\]string\{"(sh|rm|touch|head|ls|cat|tar|find|du|mv|sha256sum)"|"sh", "-c"`)
	owners := []string{"pkg/analysis/", "pkg/source/", "pkg/exec/exectest/"}
	for _, top := range []string{"cmd", "internal", "pkg"} {
		err := filepath.WalkDir(filepath.Join("..", "..", top), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel := filepath.ToSlash(strings.TrimPrefix(path, filepath.Join("..", "..")+string(filepath.Separator)))
			for _, o := range owners {
				if strings.HasPrefix(rel, o) {
					return nil
				}
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if m := command.Find(src); m != nil {
				t.Errorf("%s builds a command of its own (%s): call analysis.Pod", rel, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestReserve: reservations hold a namespace's quota across concurrent collections (of any
// agent: the lock is in the analysis pod), a released one frees its share, and the bytes
// granted never pass what the quota leaves.
func TestReserve(t *testing.T) {
	t.Parallel()
	for _, flavor := range []string{"gnu", "busybox"} {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			p, _ := local(t, flavor)
			ctx := t.Context()
			dir := t.TempDir()
			l, _ := layout.New(dir, "ns", "web")
			final, _ := l.Collection("20261206T120000Z-0123abcd")
			if err := os.MkdirAll(final, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(final+"/"+layout.ManifestName, []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
			staging, _ := l.Staging("20261206T120001Z-0123abcd")
			if err := os.MkdirAll(staging, 0o755); err != nil {
				t.Fatal(err)
			}
			// Staged bytes count by their reservation, not twice.
			if err := os.WriteFile(staging+"/big", bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			r := func(name string, n int64, maxN int, maxB int64) Reservation {
				return Reservation{NamespaceDir: dir + "/ns", Ledger: l.Ledger(), Name: name, Bytes: n, MaxCollections: maxN, MaxBytes: maxB, Stale: 10 * time.Minute}
			}
			// A reservation whose collection is published (the window between the publish and
			// the release) counts once, by its collection: with room for one more, the next
			// collection is granted.
			if _, err := p.Reserve(ctx, r("web_20261206T120000Z-0123abcd", 1<<20, 0, 0)); err != nil {
				t.Fatal(err)
			}
			if g, err := p.Reserve(ctx, r("web_next", 0, 2, 0)); err != nil || g.Refused != "" || g.Count != 1 {
				t.Fatalf("a published collection's reservation counted twice: %+v %v", g, err)
			}
			for _, name := range []string{"web_20261206T120000Z-0123abcd", "web_next"} {
				if err := p.Release(ctx, l.Ledger(), name); err != nil {
					t.Fatal(err)
				}
			}
			// Eight at once with room for four more collections: exactly four granted.
			var mu sync.Mutex
			granted := 0
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					g, err := p.Reserve(ctx, r(fmt.Sprintf("web_%d", i), 0, 5, 0))
					if err != nil {
						t.Error(err)
						return
					}
					if g.Refused == "" {
						mu.Lock()
						granted++
						mu.Unlock()
					} else if g.Refused != "collections" || g.Count != 5 {
						t.Errorf("refused %+v", g)
					}
				})
			}
			wg.Wait()
			if granted != 4 {
				t.Fatalf("%d of 8 concurrent reservations granted with room for 4", granted)
			}
			entries, _ := os.ReadDir(l.Ledger())
			var held []string
			for _, e := range entries {
				if !strings.HasPrefix(e.Name(), ".") {
					held = append(held, e.Name())
				}
			}
			if len(held) != 4 {
				t.Fatalf("ledger holds %v", held)
			}
			for _, name := range held {
				if err := p.Release(ctx, l.Ledger(), name); err != nil {
					t.Fatal(err)
				}
			}
			// Bytes: what is in use (published, not staged) plus the others' reservations.
			g, err := p.Reserve(ctx, r("web_a", 64<<10, 0, 0))
			if err != nil || g.Refused != "" || g.Bytes != 64<<10 || g.Used >= 1<<20 {
				t.Fatalf("unbounded: %+v %v", g, err)
			}
			limit := g.Used + 64<<10 + 100<<10 // room for a's 64 KiB and 100 KiB more
			g, err = p.Reserve(ctx, r("web_b", 200<<10, 0, limit))
			if err != nil || g.Bytes != 100<<10 {
				t.Fatalf("b is granted what is left, 100 KiB: %+v %v", g, err)
			}
			if g, err := p.Reserve(ctx, r("web_c", 1, 0, limit)); err != nil || g.Refused != "bytes" {
				t.Fatalf("c with the bytes used up: %+v %v", g, err)
			}
			// a grows: nothing is left beyond its own 64 KiB.
			if g, err := p.Reserve(ctx, r("web_a", 128<<10, 0, limit)); err != nil || g.Bytes != 64<<10 {
				t.Fatalf("a grows past the quota: %+v %v", g, err)
			}
			if err := p.Release(ctx, l.Ledger(), "web_b"); err != nil {
				t.Fatal(err)
			}
			if g, err := p.Reserve(ctx, r("web_a", 128<<10, 0, limit)); err != nil || g.Bytes != 128<<10 {
				t.Fatalf("a grows once b is released: %+v %v", g, err)
			}
		})
	}
}
