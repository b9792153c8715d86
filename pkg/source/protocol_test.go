package source

import (
	"strings"
	"testing"
)

func TestParseHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"podcopy-follow 1 ok 12 0 100 12 100 6162", true},
		{"podcopy-follow 1 rotated 13 0 5 13 5 -", true},
		{"podcopy-follow 1 ok 12 0 100 12 100", false},
		{"podcopy-follow 1 ok 12 0 100 12 100 xyz", false},
		{"podcopy-follow 2 ok 12 0 100 12 100 -", false},
		{"podcopy-follow 1 weird 12 0 100 12 100 -", false},
		{"podcopy-follow 1 ok x 0 100 12 100 -", false},
		{"podcopy-follow 1 ok 12 0 100 12 100 " + strings.Repeat("ab", prefixLen+1), false},
		{"stat: not found", false},
	} {
		_, err := parseHeader(tc.line)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.line, err)
		}
	}
}

// TestProtocolRoundTrip: what the server writes the agent reads back unchanged, and the
// follow verb's arguments survive the trip through argv (a path with spaces and shell
// syntax is one argument, data).
func TestProtocolRoundTrip(t *testing.T) {
	t.Parallel()
	seg := Segment{Status: StatusRotated, Inode: 1 << 40, Start: 7, Size: 1 << 33, PathInode: 9, PathSize: 3, Prefix: "00ff"}
	line := formatHeader(seg)
	if !strings.HasSuffix(line, "\n") || len(line) > maxHeader {
		t.Fatalf("header %q", line)
	}
	got, err := parseHeader(strings.TrimSuffix(line, "\n"))
	if err != nil || got != seg {
		t.Fatalf("read back %+v, %v; wrote %+v", got, err, seg)
	}
	if got, _ := parseHeader(strings.TrimSuffix(formatHeader(Segment{Status: StatusMissing}), "\n")); got.Prefix != "-" {
		t.Fatalf("an empty prefix is carried as %q", got.Prefix)
	}
	for _, cp := range []Checkpoint{{}, {Inode: 12, Offset: 34, Prefix: "6162"}, {Inode: 1, Offset: 2, Prefix: "not hex"}} {
		path := "/var/log/a b;$(id)"
		for _, r := range []Reader{Shell{}, Helper{Command: HelperCommand(1)}} {
			cmd := r.FollowCommand(path, cp)
			p, back, err := parseFollowArgs(cmd[len(cmd)-4:])
			want := cp
			if !ValidPrefix(want.Prefix) {
				want.Prefix = ""
			}
			if err != nil || p != path || back != want {
				t.Errorf("%s: %q read back as %q %+v (%v), want %+v", r.Kind(), cmd, p, back, err, want)
			}
		}
	}
	for _, bad := range [][]string{{"/a", "x", "0", "-"}, {"/a", "1", "-1", "-"}, {"/a", "1", "0", "zz"}, {"/a", "1", "0"}} {
		if _, _, err := parseFollowArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
