// Package rootfs reads a container's filesystem from a directory that stands for its root
// ("/" in the container itself, /proc/<pid>/root from a helper container aimed at it),
// with the kernel confining every lookup: each path is opened relative to the root's
// descriptor with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so neither a symbolic link
// (at any depth, however it is swapped in) nor ".." leads outside it. Nothing is checked
// first and opened later: there is no window to race.
package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podcopy/podcopy/pkg/pathname"
)

// ErrLinked is a path with a symbolic link on the way (a directory above it, or the path
// itself when a file was asked for): podcopy never reads through one.
var ErrLinked = errors.New("a symbolic link on the way (podcopy does not read through symbolic links)")

// Root is an open root directory.
type Root struct {
	fd   int
	name string
}

// Open opens dir as the root. dir itself is resolved normally (it may be the magic link
// /proc/<pid>/root); everything below it is confined.
func Open(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open root", Path: dir, Err: err}
	}
	return &Root{fd: fd, name: dir}, nil
}

// Close releases the root's descriptor.
func (r *Root) Close() error { return unix.Close(r.fd) }

// Name is the directory the root was opened from.
func (r *Root) Name() string { return r.name }

// rel turns a canonical absolute name into the relative name openat2 resolves below the
// root ("." for "/").
func rel(name string) (string, error) {
	if name == "/" {
		return ".", nil
	}
	if err := pathname.Canonical(name); err != nil {
		return "", err
	}
	return strings.TrimPrefix(name, "/"), nil
}

const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openat2 opens name (canonical, absolute in the container) with flags, confined below
// the root. A symbolic link anywhere on the way, or as the last component, is ErrLinked
// (RESOLVE_NO_SYMLINKS covers the last component too, as long as flags hold no O_NOFOLLOW).
func (r *Root) openat2(name string, flags uint64) (*os.File, error) {
	p, err := rel(name)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	for {
		fd, err := unix.Openat2(r.fd, p, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve})
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), name), nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue // EAGAIN: a concurrent rename in the tree; the kernel asks to retry
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return nil, &os.PathError{Op: "open", Path: name, Err: ErrLinked}
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
}

// Open opens a regular file or directory for reading. A symbolic link at name is
// ErrLinked; a special file (fifo, device, socket) is refused without opening it in a way
// that could block.
func (r *Root) Open(name string) (*os.File, error) {
	f, err := r.openat2(name, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	if !info.Mode().IsRegular() && !info.IsDir() {
		_ = f.Close()
		return nil, &os.PathError{Op: "open", Path: name, Err: fmt.Errorf("not a regular file or directory (%s)", info.Mode().Type())}
	}
	return f, nil
}

// Lstat describes name without following it: a symbolic link at name is reported as one.
// A symbolic link above it is ErrLinked.
func (r *Root) Lstat(name string) (fs.FileInfo, error) {
	if name == "/" {
		f, err := r.openat2(name, unix.O_PATH)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		return f.Stat()
	}
	dir, base := splitName(name)
	d, err := r.openat2(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer func() { _ = d.Close() }()
	var st unix.Stat_t
	if err := unix.Fstatat(int(d.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return fileInfo(base, &st), nil
}

// ReadDir lists the directory name (sorted by name), without following a link at name or
// above it.
func (r *Root) ReadDir(name string) ([]fs.DirEntry, error) {
	d, err := r.openat2(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer func() { _ = d.Close() }()
	entries, err := d.ReadDir(-1)
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, err
}

// splitName splits a canonical absolute name into its directory and last segment.
func splitName(name string) (string, string) {
	i := strings.LastIndexByte(name, '/')
	dir := name[:i]
	if dir == "" {
		dir = "/"
	}
	return dir, name[i+1:]
}

// Join is name/child for a canonical directory name and one directory entry.
func Join(name, child string) string {
	if name == "/" {
		return "/" + child
	}
	return name + "/" + child
}
