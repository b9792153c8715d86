package rootfs

import (
	"errors"
	"io/fs"
	"path"
	"strings"

	"github.com/podcopy/podcopy/pkg/pathname"
)

// Glob returns the names below the root that pattern (canonical, absolute) matches,
// segment by segment as sh expands it: "*" and "?" never match a leading "." unless the
// pattern segment starts with one, "." and ".." are never produced, and no directory is
// listed through a symbolic link (a literal name below one is kept: see enterable). The
// last segment's matches may be of any type.
func (r *Root) Glob(pattern string) ([]string, error) {
	if _, err := rel(pattern); err != nil {
		return nil, err
	}
	names := []string{"/"}
	segs := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	for i, seg := range segs {
		last := i == len(segs)-1
		var next []string
		for _, dir := range names {
			if !pathname.SegmentIsPattern(seg) {
				name := Join(dir, seg)
				if info, err := r.Lstat(name); errors.Is(err, ErrLinked) || (err == nil && (last || enterable(info.Mode()))) {
					next = append(next, name)
				}
				continue
			}
			entries, err := r.ReadDir(dir)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrLinked) || errors.Is(err, fs.ErrPermission) {
					continue
				}
				return nil, err
			}
			for _, e := range entries {
				n := e.Name()
				if strings.HasPrefix(n, ".") && !strings.HasPrefix(seg, ".") {
					continue
				}
				if ok, err := path.Match(seg, n); err != nil {
					return nil, err
				} else if ok && (last || enterable(e.Type())) {
					next = append(next, Join(dir, n))
				}
			}
		}
		names = next
	}
	return names, nil
}

// enterable: a directory, or a symbolic link where sh would enter a directory. Nothing is
// ever read through the link (openat2 refuses it): a name below it is kept so that the
// agent reports it as skipped with its reason (a symlinked directory), as it does for the
// matches of the container's own sh.
func enterable(m fs.FileMode) bool { return m.IsDir() || m.Type() == fs.ModeSymlink }
