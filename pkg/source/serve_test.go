package source

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMainExitCodes(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/log/a.log"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args    []string
		code    int
		stdout  string // substring
		stderr  string // substring
		entries int    // tar entries in stdout, -1: not a tar stream
	}{
		{args: []string{"--root=" + root, "tar", "/var/log/a.log"}, code: 0, entries: 1},
		{args: []string{"--root=" + root, "tar", "/var/log/a.log", "/var/log/nope"}, code: 2, entries: 1, stderr: "/var/log/nope: no such file or directory"},
		// Issue 20: the helper applies the deny list itself; a denied file is never opened.
		{args: []string{"--root=" + root, "tar", "--deny=/var/log/*.log", "/var/log"}, code: 0, entries: 1},
		{args: []string{"--root=" + root, "tar", "--deny=/var/log/nomatch", "/var/log"}, code: 0, entries: 2},
		{args: []string{"--root=" + root, "tar", "--deny=relative", "/var/log"}, code: 2, stderr: "must be an absolute path", entries: -1},
		{args: []string{"--root=" + root, "tar", "/var/log/../etc"}, code: 2, entries: 0, stderr: "/var/log/../etc"},
		{args: []string{"--root=" + root, "list", "/var/log/*.log"}, code: 0, stdout: "/var/log/a.log\x00", entries: -1},
		{args: []string{"--root=" + root, "ancestors", "/var", "/var/log", "/nope"}, code: 0, entries: 2},
		{args: []string{"--root=" + root, "frobnicate"}, code: 2, stderr: "usage", entries: -1},
		{args: []string{"--pid=x", "list", "/"}, code: 2, stderr: "bad --pid=x", entries: -1},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := Main(t.Context(), tc.args, &out, &errb); code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
			}
			if tc.entries < 0 {
				return
			}
			n := 0
			tr := tar.NewReader(&out)
			for {
				if _, err := tr.Next(); err != nil {
					break
				}
				n++
			}
			if n != tc.entries {
				t.Fatalf("%d entries, want %d", n, tc.entries)
			}
		})
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if code := Main(ctx, []string{"wait"}, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
