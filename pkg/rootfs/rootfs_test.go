package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tree builds, below a temporary directory, a container root and a secret outside it.
// Inside: /var/log/app.log, /var/log/dir/a.txt, and links that lead out of the root in
// every way a link can.
func tree(t *testing.T) (root *Root, dir string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "root")
	for name, data := range map[string]string{
		"root/var/log/app.log":   "app\n",
		"root/var/log/dir/a.txt": "a\n",
		"root/etc/passwd":        "inside:x:0:0\n",
		"secret/shadow":          "outside the root\n",
	} {
		p := filepath.Join(base, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(data), 0o644))
	}
	for link, target := range map[string]string{
		"var/log/abs":      filepath.Join(base, "secret"), // absolute, out of the root
		"var/log/up":       "../../../secret",             // relative, out of the root
		"var/log/etc":      "/etc",                        // absolute, meant for the container's /etc
		"var/log/file":     "app.log",                     // a link to a file next to it
		"var/log/dir/loop": "loop",
	} {
		must(t, os.Symlink(target, filepath.Join(dir, link)))
	}
	r, err := Open(dir)
	must(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r, dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesEveryLinkAndDotDot(t *testing.T) {
	t.Parallel()
	r, _ := tree(t)
	for _, tc := range []struct {
		name string
		want error
	}{
		{"/var/log/abs/shadow", ErrLinked},
		{"/var/log/up/shadow", ErrLinked},
		{"/var/log/etc/passwd", ErrLinked},
		{"/var/log/file", ErrLinked},
		{"/var/log/dir/loop", ErrLinked},
		{"/var/log/../../secret/shadow", nil}, // not canonical: refused before any lookup
		{"/var/log/./app.log", nil},
		{"var/log/app.log", nil},
		{"/var/log/missing", fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := r.Open(tc.name)
			if err == nil {
				_ = f.Close()
				t.Fatal("opened")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	f, err := r.Open("/var/log/app.log")
	must(t, err)
	b, _ := io.ReadAll(f)
	_ = f.Close()
	if string(b) != "app\n" {
		t.Fatalf("read %q", b)
	}
}

func TestLstatSeesLinksWithoutFollowing(t *testing.T) {
	t.Parallel()
	r, _ := tree(t)
	info, err := r.Lstat("/var/log/abs")
	must(t, err)
	if info.Mode().Type() != fs.ModeSymlink {
		t.Fatalf("mode %v", info.Mode())
	}
	if _, err := r.Lstat("/var/log/abs/shadow"); !errors.Is(err, ErrLinked) {
		t.Fatalf("err = %v", err)
	}
}

func TestGlobNeverListsThroughLinks(t *testing.T) {
	t.Parallel()
	r, _ := tree(t)
	got, err := r.Glob("/var/log/*/*")
	must(t, err)
	// dir/a.txt and dir/loop are listed; nothing below abs, up or etc is (their directories
	// are links: the agent never learns the names there).
	if want := []string{"/var/log/dir/a.txt", "/var/log/dir/loop"}; !slices.Equal(got, want) {
		t.Fatalf("Glob = %v, want %v", got, want)
	}
	got, err = r.Glob("/var/log/.*")
	must(t, err)
	if len(got) != 0 {
		t.Fatalf(".* matched %v (never . or ..)", got)
	}
	if _, err := r.Glob("/var/log/../*"); err == nil {
		t.Fatal("a pattern with .. was accepted")
	}
}

func TestArchiveStaysBelowTheRoot(t *testing.T) {
	t.Parallel()
	r, _ := tree(t)
	var out, problems bytes.Buffer
	a := &Archive{Root: r, Problems: &problems}
	err := a.Write(t.Context(), &out, []string{"/var/log", "/var/log/etc/passwd"})
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(problems.String(), "/var/log/etc/passwd: "+ErrLinked.Error()) {
		t.Fatalf("err = %v, problems %q", err, problems.String())
	}
	entries := map[string]byte{}
	tr := tar.NewReader(&out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		entries[hdr.Name] = hdr.Typeflag
		if b, _ := io.ReadAll(tr); strings.Contains(string(b), "outside the root") || strings.Contains(string(b), "inside:x") {
			t.Fatalf("%s carries %q", hdr.Name, b)
		}
	}
	want := map[string]byte{
		"./var/log/": tar.TypeDir, "./var/log/app.log": tar.TypeReg, "./var/log/dir/": tar.TypeDir,
		"./var/log/dir/a.txt": tar.TypeReg, "./var/log/dir/loop": tar.TypeSymlink, "./var/log/abs": tar.TypeSymlink,
		"./var/log/up": tar.TypeSymlink, "./var/log/etc": tar.TypeSymlink, "./var/log/file": tar.TypeSymlink,
	}
	if len(entries) != len(want) {
		t.Fatalf("entries %v, want %v", entries, want)
	}
	for n, typ := range want {
		if entries[n] != typ {
			t.Errorf("%s: type %q, want %q", n, entries[n], typ)
		}
	}
}

// TestArchiveRacingSwaps flips a directory of the requested tree between a real directory
// and a symbolic link out of the root while it is archived, many times over: the archive
// never holds a byte from outside (the kernel resolves each open with no link; there is no
// check to race).
func TestArchiveRacingSwaps(t *testing.T) {
	t.Parallel()
	r, dir := tree(t)
	victim := filepath.Join(dir, "var/log/dir")
	real := filepath.Join(dir, "var/log/real")
	must(t, os.Rename(victim, real))
	outside := filepath.Join(filepath.Dir(dir), "secret")
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			_ = os.Rename(real, victim) // var/log/dir is a real directory...
			_ = os.Rename(victim, real)
			_ = os.Symlink(outside, victim) // ...then a link out of the root
			_ = os.Remove(victim)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	for range 300 {
		var out bytes.Buffer
		a := &Archive{Root: r, Problems: io.Discard}
		_ = a.Write(t.Context(), &out, []string{"/var/log"})
		tr := tar.NewReader(&out)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if b, _ := io.ReadAll(tr); strings.Contains(string(b), "outside the root") {
				t.Fatalf("%s carries a file from outside the root", hdr.Name)
			}
		}
	}
}

func TestArchiveHardLinksAndMissing(t *testing.T) {
	t.Parallel()
	r, dir := tree(t)
	must(t, os.Link(filepath.Join(dir, "var/log/app.log"), filepath.Join(dir, "var/log/dir/b.log")))
	var out, problems bytes.Buffer
	a := &Archive{Root: r, Problems: &problems}
	err := a.Write(t.Context(), &out, []string{"/var/log/app.log", "/var/log/dir", "/var/log/nope"})
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(problems.String(), "/var/log/nope: no such file or directory") {
		t.Fatalf("err = %v, problems %q", err, problems.String())
	}
	tr := tar.NewReader(&out)
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if hdr.Name == "./var/log/dir/b.log" && (hdr.Typeflag != tar.TypeLink || hdr.Linkname != "./var/log/app.log") {
			t.Fatalf("second name: %+v", hdr)
		}
	}
}
