package ship

import (
	"archive/tar"
	"fmt"
	"path"
	"strings"

	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/pathname"
	"github.com/podcopy/podcopy/pkg/policy"
)

// Skip types of SPEC §3.
const (
	SkipSymlink  = "symlink"
	SkipHardlink = "hardlink"
	SkipDevice   = "device"
	SkipFIFO     = "fifo"
	SkipSocket   = "socket"
	SkipOther    = "other"
)

// Kind is what the agent does with an entry.
type Kind int

// Entry kinds.
const (
	KindSkip Kind = iota
	KindFile
	KindDir
)

// Verdict is the sanitizer's decision on one tar entry.
type Verdict struct {
	Kind Kind
	// Path is the entry's absolute path in the source container ("/var/log/x"), or the raw
	// name when it could not be made one.
	Path string
	// Rel is Path without the leading "/", used below the collection directory.
	Rel string
	// SkipType and Reason explain a KindSkip.
	SkipType string
	Reason   string
}

// Sanitizer checks each source entry against the requested paths and the policy, the way
// kubectl cp learned to after four CVEs: names must stay inside the request, links are
// never written, only regular files and directories pass.
type Sanitizer struct {
	requested [][]string // requested paths as segments (globs per segment)
	policy    policy.Policy
}

// NewSanitizer accepts entries below the given absolute requested paths and permitted by pol.
func NewSanitizer(paths []string, pol policy.Policy) *Sanitizer {
	s := &Sanitizer{policy: pol}
	for _, p := range paths {
		s.requested = append(s.requested, strings.Split(strings.TrimPrefix(p, "/"), "/"))
	}
	return s
}

// Check decides what to do with hdr.
func (s *Sanitizer) Check(hdr *tar.Header) Verdict {
	rel, ok := cleanName(hdr.Name)
	if !ok {
		return Verdict{Path: hdr.Name, SkipType: SkipOther, Reason: "name escapes the collection directory (absolute or contains ..)"}
	}
	v := Verdict{Path: "/" + rel, Rel: rel}
	if isSparse(hdr) {
		return v.skip(SkipOther, "sparse entry: not collected (its holes are not bytes of the archive)")
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA is what old tars write
		v.Kind = KindFile
	case tar.TypeDir:
		v.Kind = KindDir
	case tar.TypeSymlink:
		return v.skip(SkipSymlink, fmt.Sprintf("symbolic link to %q is not followed", manifest.Truncate(hdr.Linkname, 256)))
	case tar.TypeLink:
		return v.skip(SkipHardlink, fmt.Sprintf("hard link to %q is not written", manifest.Truncate(hdr.Linkname, 256)))
	case tar.TypeChar, tar.TypeBlock:
		return v.skip(SkipDevice, "device nodes are not collected")
	case tar.TypeFifo:
		return v.skip(SkipFIFO, "named pipes are not collected")
	default:
		return v.skip(SkipOther, fmt.Sprintf("tar entry type %q is not collected", hdr.Typeflag))
	}
	if !s.underRequest(rel) {
		return v.skip(SkipOther, "entry is outside the requested paths")
	}
	if v.Kind == KindFile {
		if err := s.policy.Check(v.Path); err != nil {
			return v.skip(SkipOther, err.Error())
		}
	}
	return v
}

// Allowed applies the request and policy checks of Check to an entry's path (a hard link
// is written only when its own name passes them).
func (s *Sanitizer) Allowed(v Verdict) error {
	if !s.underRequest(v.Rel) {
		return fmt.Errorf("%s is outside the requested paths", v.Path)
	}
	return s.policy.Check(v.Path)
}

func (v Verdict) skip(typ, reason string) Verdict {
	v.Kind, v.SkipType, v.Reason = KindSkip, typ, reason
	return v
}

// cleanName turns a tar name into a clean relative path, refusing absolute names and "..".
func cleanName(name string) (string, bool) {
	if strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", false
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." {
			return "", false
		}
	}
	rel := path.Clean(name)
	if rel == "." || rel == "" {
		return "", false
	}
	return rel, true
}

// underRequest reports whether rel equals or lies below one requested path (segment-wise
// glob match for glob requests).
func (s *Sanitizer) underRequest(rel string) bool {
	segs := strings.Split(rel, "/")
	for _, req := range s.requested {
		if len(segs) < len(req) {
			continue
		}
		ok := true
		for i, pat := range req {
			if m, err := path.Match(pat, segs[i]); err != nil || !m {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// Covers reports which requested literal path rel belongs to ("" when none), so that a
// literal path missing from the archive can be named.
func Covers(paths []string, rel string) string {
	abs := "/" + rel
	for _, p := range paths {
		if !pathname.IsGlob(p) && (abs == p || strings.HasPrefix(abs, p+"/")) {
			return p
		}
	}
	return ""
}
