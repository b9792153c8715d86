// Package pathname decides whether a name that crossed a boundary (an annotation, a glob
// match printed by a container, a tar entry, a follow match) is canonical, before any
// other code uses it. Canonical means: absolute, equal to its cleaned form, no "." or ".."
// segment, no empty segment, no NUL, valid UTF-8. Other control characters (a newline, an
// escape) are legal in Linux names and tar carries them: such a file is collected byte-exact
// (an attacker must not hide a file by naming it so) and escaped only where it is shown.
package pathname

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen bounds a path (Linux PATH_MAX).
const MaxLen = 4096

// Canonical returns nil when p is a canonical absolute path, or an error that says why not.
func Canonical(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case len(p) > MaxLen:
		return fmt.Errorf("path of %d bytes is longer than %d", len(p), MaxLen)
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is not absolute", p)
	case p == "/":
		return fmt.Errorf("%q is the root directory", p)
	}
	if err := bytesOK(p); err != nil {
		return err
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if err := checkSegment(seg); err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("%q is not clean (it would be read as %q)", p, path.Clean(p))
	}
	return nil
}

// Segment returns nil when s can be one path segment: non-empty, not "." or "..", no "/",
// NUL or control character, at most 255 bytes.
func Segment(s string) error {
	if strings.Contains(s, "/") {
		return fmt.Errorf("%q contains /", s)
	}
	if err := bytesOK(s); err != nil {
		return err
	}
	return checkSegment(s)
}

func checkSegment(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty segment (//)")
	case s == "." || s == "..":
		return fmt.Errorf("%q segment", s)
	case len(s) > 255:
		return fmt.Errorf("segment of %d bytes is longer than 255", len(s))
	}
	return nil
}

// bytesOK refuses what cannot be confined or recorded exactly: NUL (it ends a name in every
// system call and in NUL-delimited listings) and invalid UTF-8 (JSON would replace it, so the
// manifest could not name the file byte-exact).
func bytesOK(s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("%q contains NUL at byte %d", s, i)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	return nil
}

// HasControl reports whether s holds a control character: legal in a name that is collected,
// refused in an annotation (request.Parse), where a newline would split a list.
func HasControl(s string) bool { return strings.IndexFunc(s, unicode.IsControl) >= 0 }

// Matches returns nil when name is canonical and matches pattern segment by segment
// (path.Match per segment, the same number of segments), the test every glob match
// printed by a container must pass before it is used.
func Matches(pattern, name string) error {
	if err := Canonical(name); err != nil {
		return err
	}
	ps, ns := strings.Split(pattern[1:], "/"), strings.Split(name[1:], "/")
	if len(ps) != len(ns) {
		return fmt.Errorf("%q does not match %q (%d segments, the pattern has %d)", name, pattern, len(ns), len(ps))
	}
	for i := range ps {
		if ok, err := path.Match(ps[i], ns[i]); err != nil || !ok {
			return fmt.Errorf("%q does not match %q (segment %q against %q)", name, pattern, ns[i], ps[i])
		}
	}
	return nil
}

// Ancestors returns the proper ancestor directories of the canonical path p, outermost
// first ("/a/b/c" gives "/a", "/a/b").
func Ancestors(p string) []string {
	var out []string
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[:i])
		}
	}
	return out
}

// IsGlob reports whether a requested path is a glob: it has *, ? or [ (SPEC §1). A backslash
// alone is a character of a name. This is the one definition; ship, follow, request and the
// helper's glob all ask here.
func IsGlob(p string) bool { return strings.ContainsAny(p, "*?[") }

// SegmentIsPattern reports whether one segment of a glob is matched as a pattern rather than
// taken as a name, the way the container's sh matches it: a *, ?, [, or the backslash that
// escapes one of them.
func SegmentIsPattern(seg string) bool { return strings.ContainsAny(seg, `*?[\`) }
