package pathname

import "testing"

func TestCanonical(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p  string
		ok bool
	}{
		{"/var/log/x.log", true},
		{"/var/log/.hidden", true},
		{"/var/log/..x", true},
		{"/", false},
		{"", false},
		{"var/log", false},
		{"/var/log/", false},
		{"/var//log", false},
		{"/var/./log", false},
		{"/var/../etc/shadow", false},
		{"/tmp/.", false},
		{"/tmp/..", false},
		{"/tmp/a\nb", true}, // legal on Linux, collected byte-exact (issue 20)
		{"/tmp/a\x1b[2Jb", true},
		{"/tmp/a\x00b", false},
		{"/tmp/\xff", false},
	} {
		if err := Canonical(tc.p); (err == nil) != tc.ok {
			t.Errorf("Canonical(%q) = %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, name string
		ok            bool
	}{
		{"/var/log/*.log", "/var/log/a.log", true},
		{"/tmp/.*/x", "/tmp/.cache/x", true},
		{"/tmp/.*/x", "/tmp/../x", false},
		{"/tmp/.*/x", "/tmp/./x", false},
		{"/tmp/.*/.*/collect/x", "/tmp/../../collect/x", false},
		{"/var/log/*.log", "/var/log/a/b.log", false},
		{"/var/log/*.log", "/etc/shadow", false},
	} {
		if err := Matches(tc.pattern, tc.name); (err == nil) != tc.ok {
			t.Errorf("Matches(%q, %q) = %v, want ok=%v", tc.pattern, tc.name, err, tc.ok)
		}
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"/a", "/a/../b", "//", "/./", "/a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if Canonical(p) != nil {
			return
		}
		for _, a := range Ancestors(p) {
			if Canonical(a) != nil {
				t.Fatalf("ancestor %q of canonical %q is not canonical", a, p)
			}
		}
	})
}

// TestGlob: the one definition of a glob (a request path) and of a pattern segment (as sh
// matches it); a backslash alone makes a path no glob, but in a glob's segment it escapes.
func TestGlob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p              string
		glob, segMatch bool
	}{
		{"/var/log/app.log", false, false},
		{"/var/log/*.log", true, true},
		{"/var/log/a?", true, true},
		{"/var/log/[ab]", true, true},
		{`/var/log/a\b`, false, true},
	} {
		if got := IsGlob(tc.p); got != tc.glob {
			t.Errorf("IsGlob(%q) = %v", tc.p, got)
		}
		if got := SegmentIsPattern(tc.p[len("/var/log/"):]); got != tc.segMatch {
			t.Errorf("SegmentIsPattern(%q) = %v", tc.p, got)
		}
	}
}
