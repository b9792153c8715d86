package follow

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/rootfs"
	"github.com/podcopy/podcopy/pkg/source"
)

// TestMain doubles as the podcopy binary's source mode ("podcopy-source follow|glob ..."),
// so the helper flavour runs the real protocol server as a separate process.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "podcopy-source" {
		os.Exit(source.Main(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

var dstTarget = exec.Target{Namespace: "podcopy", Pod: "analysis-0", Container: "store"}

// fixture follows <src>/app.log into <dst> with real shells running the scripts.
type fixture struct {
	src, dst string
	path     string
	source   Source
	exec     exec.Executor
}

type flavour struct {
	name   string
	source func(t *testing.T, ex exec.Executor) Source
	shell  func(t *testing.T) string // PATH for the scripts ("" = this machine's)
}

func flavours() []flavour {
	execSource := func(t *testing.T, ex exec.Executor) Source {
		return source.Remote{Exec: ex, Target: exec.Target{Pod: "src"}}
	}
	return []flavour{
		{name: "exec-gnu", source: execSource, shell: func(t *testing.T) string { return "" }},
		{name: "exec-busybox", source: execSource, shell: func(t *testing.T) string {
			p := exectest.BusyboxPath(t.TempDir())
			if p == "" {
				t.Skip("busybox not installed")
			}
			return p
		}},
		{name: "exec-helper", source: func(t *testing.T, ex exec.Executor) Source {
			return source.Remote{Exec: ex, Target: exec.Target{Pod: "src"}, Reader: source.Helper{Command: []string{os.Args[0], "podcopy-source"}}}
		}, shell: func(t *testing.T) string { return "" }},
		{name: "local", source: func(t *testing.T, ex exec.Executor) Source {
			root, err := rootfs.Open("/")
			if err != nil {
				t.Fatal(err)
			}
			l := &source.Local{Root: root}
			t.Cleanup(func() { _ = l.Close(); _ = root.Close() })
			return l
		}, shell: func(t *testing.T) string { return "" }},
	}
}

func newFixture(t *testing.T, fl flavour) *fixture {
	t.Helper()
	f := &fixture{src: t.TempDir(), dst: t.TempDir()}
	f.path = filepath.Join(f.src, "app.log")
	f.exec = &exectest.Local{Path: fl.shell(t)}
	f.source = fl.source(t, f.exec)
	return f
}

// file returns a follower as a fresh agent process would build it.
func (f *fixture) file(sink Sink) *File {
	dest, state := testPaths(f.dst, "ns", "pod", "app", f.path)
	if sink == nil {
		sink = ExecSink{Exec: f.exec}
	}
	return &File{Source: f.source, Sink: sink, Path: f.path, UID: "uid-1", Dest: dest, State: state}
}

func (f *fixture) dest(t *testing.T) string {
	t.Helper()
	dest, _ := testPaths(f.dst, "ns", "pod", "app", f.path)
	b, err := os.ReadFile(dest)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

func tick(t *testing.T, fl *File) Report {
	t.Helper()
	rep, err := fl.Tick(t.Context(), dstTarget)
	if err != nil {
		t.Fatalf("tick: %v", err)
	}
	return rep
}

func TestFollow(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			t.Run("appends", func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, fl)
				w := f.file(nil)
				if rep := tick(t, w); rep.Missing == "" {
					t.Fatalf("missing file not reported: %+v", rep)
				}
				appendTo(t, f.path, "one\n")
				if rep := tick(t, w); rep.Shipped != 4 || rep.Pending != 4 {
					t.Fatalf("report %+v", rep)
				}
				appendTo(t, f.path, "two\n")
				tick(t, w)
				if rep := tick(t, w); rep.Shipped != 0 {
					t.Fatalf("nothing new, shipped %d", rep.Shipped)
				}
				if got := f.dest(t); got != "one\ntwo\n" {
					t.Fatalf("dest %q", got)
				}
			})
			t.Run("rename rotation finishes the old file", func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, fl)
				w := f.file(nil)
				appendTo(t, f.path, "a1\n")
				tick(t, w)
				appendTo(t, f.path, "a2\n")
				if err := os.Rename(f.path, f.path+".1"); err != nil {
					t.Fatal(err)
				}
				appendTo(t, f.path+".1", "a3\n") // the writer had not reopened yet
				appendTo(t, f.path, "b1\n")
				rep := tick(t, w)
				if got := f.dest(t); got != "a1\na2\na3\nb1\n" {
					t.Fatalf("dest %q", got)
				}
				if rep.Rotations != 1 || rep.Lost != 0 {
					t.Fatalf("report %+v", rep)
				}
				appendTo(t, f.path, "b2\n")
				tick(t, w)
				if got := f.dest(t); got != "a1\na2\na3\nb1\nb2\n" {
					t.Fatalf("dest %q", got)
				}
			})
			t.Run("truncation reads from the start and counts the loss", func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, fl)
				w := f.file(nil)
				appendTo(t, f.path, "0123456789\n")
				tick(t, w)
				if err := os.WriteFile(f.path, []byte("new\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				rep := tick(t, w)
				if rep.Truncations != 1 || f.dest(t) != "0123456789\nnew\n" {
					t.Fatalf("report %+v dest %q", rep, f.dest(t))
				}
			})
			t.Run("old file deleted before it was finished", func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, fl)
				w := f.file(nil)
				appendTo(t, f.path, "a1\n")
				tick(t, w)
				if err := os.Remove(f.path); err != nil {
					t.Fatal(err)
				}
				appendTo(t, f.path, "b1\n")
				rep := tick(t, w) // a new inode, or the old number reused: a rotation or a "truncation"
				if rep.Rotations+rep.Truncations != 1 || f.dest(t) != "a1\nb1\n" {
					t.Fatalf("report %+v dest %q", rep, f.dest(t))
				}
			})
			t.Run("symlink is not followed", func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, fl)
				secret := filepath.Join(f.src, "secret")
				appendTo(t, secret, "token\n")
				if err := os.Symlink(secret, f.path); err != nil {
					t.Fatal(err)
				}
				rep := tick(t, f.file(nil))
				if !strings.Contains(rep.Missing, "not a regular file") || f.dest(t) != "" {
					t.Fatalf("report %+v dest %q", rep, f.dest(t))
				}
			})
		})
	}
}

// cutSink appends at most limit bytes of a segment, then fails like a killed agent.
type cutSink struct {
	Sink
	limit int64
}

func (c cutSink) Append(ctx context.Context, dst exec.Target, file, state string, start source.Checkpoint, r io.Reader) (int64, error) {
	n, _ := c.Sink.Append(ctx, dst, file, state, start, io.LimitReader(r, c.limit))
	return n, errors.New("agent killed")
}

func TestCrashResumesFromTheDestination(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		for _, limit := range []int64{0, 1, 7, 12} {
			t.Run(fl.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, fl)
				appendTo(t, f.path, "l1\nl2\n")
				tick(t, f.file(nil))
				appendTo(t, f.path, "l3\nl4\nl5\nl6\n")
				if _, err := f.file(cutSink{Sink: ExecSink{Exec: f.exec}, limit: limit}).Tick(t.Context(), dstTarget); err == nil {
					t.Fatal("cut append did not fail")
				}
				appendTo(t, f.path, "l7\n")
				tick(t, f.file(nil)) // a new agent: knows only what the destination holds
				want, _ := os.ReadFile(f.path)
				if got := f.dest(t); got != string(want) {
					t.Fatalf("after a cut at %d bytes: dest %q, want %q", limit, got, want)
				}
			})
		}
	}
}

func TestNewPodIncarnationStartsOver(t *testing.T) {
	t.Parallel()
	f := newFixture(t, flavours()[0])
	appendTo(t, f.path, "old pod\n")
	tick(t, f.file(nil))
	w := f.file(nil)
	w.UID = "uid-2"
	tick(t, w)
	if got := f.dest(t); got != "old pod\nold pod\n" {
		t.Fatalf("dest %q", got)
	}
}

func TestHostilePathIsData(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours()[:2] {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			pwned := filepath.Join(f.src, "pwned")
			for _, name := range []string{"$(touch pwned)", "`touch pwned`", "a;touch pwned", "-n", "*", "x' 'y"} {
				f.path = filepath.Join(f.src, name)
				appendTo(t, f.path, "data:"+name)
				w := f.file(nil)
				tick(t, w)
				if got := f.dest(t); got != "data:"+name {
					t.Fatalf("%q: dest %q", name, got)
				}
			}
			if _, err := os.Stat("pwned"); err == nil {
				t.Fatal("a path was run as code")
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Fatal("a path was run as code")
			}
		})
	}
}

func TestParseProbe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		out  string
		cp   source.Checkpoint
		ok   bool
		fail bool
	}{
		{out: "0\nnone\n"},
		{out: "100\n1 uid 7 100 ab 100\n", cp: source.Checkpoint{UID: "uid", Inode: 7, Offset: 100, Prefix: "ab"}, ok: true},
		{out: "150\n1 uid 7 100 - 100\n", cp: source.Checkpoint{UID: "uid", Inode: 7, Offset: 150, Prefix: "-"}, ok: true},
		{out: "150\n1 - 7 0 - 140\n", cp: source.Checkpoint{Inode: 7, Offset: 10, Prefix: "-"}, ok: true},
		{out: "150\n1 - 7 0 \\$(x) 140\n", fail: true},
		{out: "garbage", fail: true},
		{out: "1\n1 uid x 1 1\n", fail: true},
	} {
		cp, _, ok, err := parseProbe(tc.out)
		if (err != nil) != tc.fail || ok != tc.ok || cp != tc.cp {
			t.Errorf("%q: %+v %v %v", tc.out, cp, ok, err)
		}
	}
}

func TestBigSegmentStreams(t *testing.T) {
	t.Parallel()
	f := newFixture(t, flavours()[0])
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for range 8 {
		appendTo(t, f.path, string(chunk))
	}
	w := f.file(nil)
	if rep := tick(t, w); rep.Shipped != 8<<20 {
		t.Fatalf("shipped %d", rep.Shipped)
	}
}

func TestReusedInodeIsANewFile(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			appendTo(t, f.path, "first generation\n")
			w := f.file(nil)
			tick(t, w)
			// Same inode, rewritten in place with as many bytes and more: only the prefix tells.
			if err := os.WriteFile(f.path, []byte("SECOND generation\nmore\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			rep := tick(t, w)
			if rep.Truncations != 1 || f.dest(t) != "first generation\nSECOND generation\nmore\n" {
				t.Fatalf("report %+v dest %q", rep, f.dest(t))
			}
		})
	}
}

// tailDroppingSink reads the whole segment but lets only its first limit bytes land, the
// way a container runtime can drop the tail of a short stdin that is closed at once.
type tailDroppingSink struct {
	Sink
	limit int64
	drops *int
}

func (d tailDroppingSink) Append(ctx context.Context, dst exec.Target, file, state string, start source.Checkpoint, r io.Reader) (int64, error) {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return 0, err
	}
	if int64(buf.Len()) > d.limit {
		*d.drops++
		buf.Truncate(int(d.limit))
	}
	return d.Sink.Append(ctx, dst, file, state, start, &buf)
}

func TestDroppedTailIsShippedAgain(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			drops := 0
			w := f.file(tailDroppingSink{Sink: ExecSink{Exec: f.exec}, limit: 5, drops: &drops})
			appendTo(t, f.path, "0123456789ab\n")
			rep := tick(t, w)
			if got := f.dest(t); got != "0123456789ab\n" || rep.Shipped != 13 || drops == 0 {
				t.Fatalf("dest %q, report %+v, drops %d", got, rep, drops)
			}
		})
	}
}

func TestSetFollowsGlobMatchesAsTheyComeAndGo(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			gs, ok := f.source.(GlobSource)
			if !ok {
				t.Fatal("source cannot glob")
			}
			set := &Set{Paths: []string{filepath.Join(f.src, "*.log")}, Source: gs, Sink: ExecSink{Exec: f.exec}, UID: "u",
				Layout: testLayout(f.dst, "ns", "pod", "app"),
				Allow: func(p string) error {
					if strings.HasSuffix(p, "secret.log") {
						return errors.New("denied by policy")
					}
					return nil
				}}
			destOf := func(name string) string {
				d, _ := testPaths(f.dst, "ns", "pod", "app", filepath.Join(f.src, name))
				b, _ := os.ReadFile(d)
				return string(b)
			}
			appendTo(t, filepath.Join(f.src, "a.log"), "a1\n")
			appendTo(t, filepath.Join(f.src, "secret.log"), "s\n")
			appendTo(t, filepath.Join(f.src, "x.txt"), "x\n")
			if err := os.Symlink(filepath.Join(f.src, "x.txt"), filepath.Join(f.src, "link.log")); err != nil {
				t.Fatal(err)
			}
			reports, err := set.Tick(t.Context(), dstTarget)
			if err == nil || !strings.Contains(err.Error(), "denied by policy") || len(reports) != 1 || destOf("a.log") != "a1\n" {
				t.Fatalf("reports %+v err %v", reports, err)
			}
			appendTo(t, filepath.Join(f.src, "b.log"), "b1\n") // a new match
			appendTo(t, filepath.Join(f.src, "a.log"), "a2\n")
			if err := os.Rename(filepath.Join(f.src, "a.log"), filepath.Join(f.src, "a.old")); err != nil {
				t.Fatal(err)
			}
			reports, _ = set.Tick(t.Context(), dstTarget)
			if destOf("a.log") != "a1\na2\n" || destOf("b.log") != "b1\n" || destOf("link.log") != "" || destOf("secret.log") != "" {
				t.Fatalf("a %q b %q", destOf("a.log"), destOf("b.log"))
			}
			dropped := 0
			for _, r := range reports {
				if r.Dropped {
					dropped++
				}
			}
			if dropped != 1 || len(set.files) != 1 {
				t.Fatalf("reports %+v, following %d", reports, len(set.files))
			}
		})
	}
}

// testLayout is the production layout below dst.
func testLayout(dst, ns, pod, container string) func(string) (string, string, error) {
	l, err := layout.New(dst, ns, pod)
	if err != nil {
		panic(err)
	}
	return func(p string) (string, string, error) { return l.FollowFile(container, p) }
}

func testPaths(dst, ns, pod, container, src string) (string, string) {
	file, state, err := testLayout(dst, ns, pod, container)(src)
	if err != nil {
		panic(err)
	}
	return file, state
}

// TestSetRefusesDotDotMatches is issue 11's first defect: sh expands ".*" to "." and "..",
// and the match used to be joined into the destination path, writing outside the pod's
// directory. A match is now used only when canonical and matching its pattern.
func TestSetRefusesDotDotMatches(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			gs := f.source.(GlobSource)
			outside := filepath.Join(filepath.Dir(f.src), "pwned")
			for _, d := range []string{outside, filepath.Join(f.src, ".cache", "pwned")} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			appendTo(t, filepath.Join(outside, "x"), "planted\n")
			appendTo(t, filepath.Join(f.src, ".cache", "pwned", "x"), "fine\n")
			set := &Set{Paths: []string{filepath.Join(f.src, ".*", "pwned", "x")}, Source: gs, Sink: ExecSink{Exec: f.exec}, UID: "u",
				Layout: testLayout(f.dst, "ns", "pod", "app")}
			reports, err := set.Tick(t.Context(), dstTarget)
			if (fl.name == "exec-gnu" || fl.name == "exec-busybox") && (err == nil || !strings.Contains(err.Error(), "refused")) {
				t.Fatalf("a .. match was not refused: reports %+v err %v", reports, err)
			}
			if len(reports) != 1 || reports[0].Path != filepath.Join(f.src, ".cache", "pwned", "x") {
				t.Fatalf("reports %+v", reports)
			}
			root := filepath.Join(f.dst, "ns", "pod") + "/"
			_ = filepath.Walk(f.dst, func(p string, info os.FileInfo, err error) error {
				if err == nil && !info.IsDir() && !strings.HasPrefix(p, root) {
					t.Errorf("written outside %s: %s", root, p)
				}
				if err == nil && !info.IsDir() && strings.Contains(p, "/pwned/") && !strings.Contains(p, "/.cache/") {
					t.Errorf("the .. match was followed: %s", p)
				}
				return nil
			})
		})
	}
}

// TestFollowNeverReadsThroughSymlinkedDirectories: <src>/etc -> <outside> used to carry a
// follow past the path policy (issue 11); every source refuses it now.
func TestFollowNeverReadsThroughSymlinkedDirectories(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			outside := t.TempDir()
			appendTo(t, filepath.Join(outside, "shadow"), "secret\n")
			if err := os.Symlink(outside, filepath.Join(f.src, "etc")); err != nil {
				t.Fatal(err)
			}
			f.path = filepath.Join(f.src, "etc", "shadow")
			rep := tick(t, f.file(nil))
			if !strings.Contains(rep.Missing, "symbolic link") || rep.Shipped != 0 {
				t.Fatalf("report %+v", rep)
			}
			if got := f.dest(t); got != "" {
				t.Fatalf("read through the link: %q", got)
			}
		})
	}
}

// TestSetStopsWhenThePolicyDenies: a reloaded policy that denies a followed path stops the
// follow at the next tick, before anything more is read (issue 11).
func TestSetStopsWhenThePolicyDenies(t *testing.T) {
	t.Parallel()
	f := newFixture(t, flavours()[0])
	denied := false
	set := &Set{Paths: []string{f.path}, Source: f.source.(GlobSource), Sink: ExecSink{Exec: f.exec}, UID: "u",
		Layout: testLayout(f.dst, "ns", "pod", "app"),
		Allow: func(string) error {
			if denied {
				return errors.New("denied by policy.denyPaths")
			}
			return nil
		}}
	appendTo(t, f.path, "one\n")
	if _, err := set.Tick(t.Context(), dstTarget); err != nil {
		t.Fatal(err)
	}
	denied = true
	appendTo(t, f.path, "two\n")
	reports, _ := set.Tick(t.Context(), dstTarget)
	if len(reports) != 1 || reports[0].Err == nil || !reports[0].Dropped || len(set.Followed()) != 0 {
		t.Fatalf("reports %+v followed %v", reports, set.Followed())
	}
	if got := f.dest(t); got != "one\n" {
		t.Fatalf("read after the policy denied it: %q", got)
	}
}

// TestFileShipsABacklogInBoundedSegments: with MaxSegment, a backlog larger than it ships over
// several ticks, with no gap and no duplicate, and the source is stopped early, not drained.
func TestFileShipsABacklogInBoundedSegments(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			w := f.file(nil)
			w.MaxSegment = 10
			want := "0123456789abcdefghijklmnopqrstuvwxy\n" // 36 bytes: four ticks
			appendTo(t, f.path, want)
			for i, wantLen := range []int{10, 20, 30, 36, 36} {
				tick(t, w)
				if got := f.dest(t); got != want[:wantLen] {
					t.Fatalf("after tick %d: dest %q", i+1, got)
				}
			}
		})
	}
}

// TestNewPodWithTheSameNameNeverExtendsTheOld (issue 20): a pod followed, deleted, and a pod
// with the same name (a new UID) followed: the earlier pod's harvested file and checkpoint
// are set aside under its UID, and the new pod's file holds only its own bytes.
func TestNewPodWithTheSameNameNeverExtendsTheOld(t *testing.T) {
	t.Parallel()
	const oldUID, newUID = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			retired := func(uid string) (string, string, error) {
				l, err := layout.New(f.dst, "ns", "pod")
				if err != nil {
					return "", "", err
				}
				return l.RetiredFollowFile("app", f.path, uid)
			}
			appendTo(t, f.path, "old pod line 1\nold pod line 2\n")
			old := f.file(nil)
			old.UID, old.Retired = oldUID, retired
			tick(t, old)
			// The pod is replaced: its file starts again, shorter than the old checkpoint.
			if err := os.WriteFile(f.path, []byte("new\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			next := f.file(nil)
			next.UID, next.Retired = newUID, retired
			tick(t, next)
			if got := f.dest(t); got != "new\n" {
				t.Fatalf("the new pod's file holds %q", got)
			}
			file, state, err := retired(oldUID)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(file)
			if err != nil || string(b) != "old pod line 1\nold pod line 2\n" {
				t.Fatalf("the old pod's file %s: %q, %v", file, b, err)
			}
			if _, err := os.Stat(state); err != nil {
				t.Fatalf("the old pod's checkpoint: %v", err)
			}
			// The same pod again: nothing is set aside.
			appendTo(t, f.path, "more\n")
			again := f.file(nil)
			again.UID, again.Retired = newUID, retired
			tick(t, again)
			if got := f.dest(t); got != "new\nmore\n" {
				t.Fatalf("the new pod's file after a restart holds %q", got)
			}
		})
	}
}

// TestFileKeepsToItsBudget: a tick with a budget (the namespace's quota left) ships no
// more than it, and the rest follows on a later tick with no gap.
func TestFileKeepsToItsBudget(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours() {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fl)
			w := f.file(nil)
			want := "0123456789abcdefghij\n"
			appendTo(t, f.path, want)
			w.Budget = 7
			tick(t, w)
			if got := f.dest(t); got != want[:7] {
				t.Fatalf("with a budget of 7: dest %q", got)
			}
			w.Budget = 0
			tick(t, w)
			if got := f.dest(t); got != want {
				t.Fatalf("after the budget: dest %q", got)
			}
		})
	}
}
