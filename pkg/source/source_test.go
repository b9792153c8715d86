package source

import (
	"slices"
	"testing"
)

// TestCommands: every value reaches the container as its own argument after fixed text,
// never as code, and a path can never be taken for an option.
func TestCommands(t *testing.T) {
	t.Parallel()
	hostile := "/var/log/c;rm -rf $(id)"
	for _, tc := range []struct {
		name string
		got  []string
		want []string
	}{
		{"shell archive", Shell{}.ArchiveCommand([]string{"/var/log/a", hostile}, false),
			[]string{"tar", "-c", "-f", "-", "-C", "/", "./var/log/a", "." + hostile}},
		{"shell archive gzip below a root", Shell{Root: "/r"}.ArchiveCommand([]string{"/a"}, true),
			[]string{"tar", "-c", "-z", "-f", "-", "-C", "/r", "./a"}},
		{"shell ancestors", Shell{}.AncestorsCommand([]string{"/var", "/var/log"}),
			[]string{"tar", "-c", "--no-recursion", "-f", "-", "-C", "/", "./var", "./var/log"}},
		{"shell list", Shell{}.ListCommand(hostile), []string{"sh", "-c", listScript, listArgv0, "/", "." + hostile}},
		{"shell glob", Shell{}.GlobCommand(hostile), []string{"sh", "-c", globScript, followArgv0, hostile}},
		{"shell follow", Shell{}.FollowCommand(hostile, Checkpoint{Inode: 3, Offset: 4, Prefix: "61"}),
			[]string{"sh", "-c", followScript, followArgv0, hostile, "3", "4", "61"}},
		{"helper archive", Helper{Command: HelperCommand(7), Deny: []string{"/etc/**"}}.ArchiveCommand([]string{hostile}, true),
			[]string{Binary, "source", "--pid=7", "tar", "--gzip", "--deny=/etc/**", hostile}},
		{"helper list", Helper{Command: HelperCommand(0)}.ListCommand(hostile), []string{Binary, "source", "list", hostile}},
		{"helper ancestors", Helper{Command: HelperCommand(0)}.AncestorsCommand([]string{"/var"}), []string{Binary, "source", "ancestors", "/var"}},
		{"helper glob", Helper{Command: HelperCommand(1)}.GlobCommand(hostile), []string{Binary, "source", "--pid=1", "glob", hostile}},
		{"helper follow", Helper{Command: HelperCommand(1)}.FollowCommand(hostile, Checkpoint{}),
			[]string{Binary, "source", "--pid=1", "follow", hostile, "0", "0", "-"}},
		{"wait", WaitCommand(), []string{Binary, "source", "wait"}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if (Shell{}).Kind() != KindTar || (Helper{}).Kind() != KindHelper {
		t.Error("kinds")
	}
	// The helper's argv prefix is never shared between readers (append must copy).
	base := make([]string, 2, 8)
	copy(base, HelperCommand(0))
	h := Helper{Command: base}
	a, b := h.ListCommand("/a"), h.GlobCommand("/b")
	if a[len(a)-1] != "/a" || b[len(b)-1] != "/b" {
		t.Errorf("argv shared: %q %q", a, b)
	}
}
