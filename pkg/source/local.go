package source

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/podcopy/podcopy/pkg/rootfs"
)

// Local reads followed files from a container's filesystem, confined below Root (the
// helper's side of Remote: "/" in the podcopy sidecar, the target's /proc/<pid>/root in
// the ephemeral helper). It keeps the file it follows open, so after a rename rotation the
// old generation is finished from the open descriptor even if it was already deleted.
type Local struct {
	// Root is where every path is resolved, with no symbolic link followed.
	Root *rootfs.Root

	mu   sync.Mutex
	held map[string]*os.File
}

// Close releases the files held open.
func (l *Local) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for p, f := range l.held {
		errs = append(errs, f.Close())
		delete(l.held, p)
	}
	return errors.Join(errs...)
}

// Read is Remote.Read with the semantics of followScript, in process.
func (l *Local) Read(ctx context.Context, path string, cp Checkpoint, fn func(Segment, io.Reader) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		l.held = map[string]*os.File{}
	}
	cur, curIno, curSize, status, err := l.openRegular(path)
	if err != nil {
		return err
	}
	if status != "" {
		return fn(Segment{Status: status}, eofReader{})
	}
	if cur != nil {
		defer func() { l.hold(path, cur) }()
	}
	off, st := cp.Offset, StatusOK
	if cp.Inode != 0 && curIno != cp.Inode {
		st = StatusGone
		if old := l.old(path, cp.Inode); old != nil {
			size, err := fileSize(old)
			if err == nil && size > off {
				if _, err := old.Seek(off, io.SeekStart); err != nil {
					return errors.Join(err, old.Close())
				}
				err := fn(Segment{Status: StatusOK, Inode: cp.Inode, Start: off, Size: size, PathInode: curIno, PathSize: curSize, Prefix: prefix(old, prefixLen)}, old)
				return errors.Join(err, old.Close())
			}
			st = StatusRotated
			_ = old.Close()
		}
		off = 0
	}
	if cur == nil {
		return fn(Segment{Status: StatusMissing}, eofReader{})
	}
	if curSize < off || (curIno == cp.Inode && prefixArg(cp.Prefix) != "-" && prefix(cur, len(cp.Prefix)/2) != cp.Prefix) {
		st, off = StatusTruncated, 0
	}
	if _, err := cur.Seek(off, io.SeekStart); err != nil {
		return err
	}
	return fn(Segment{Status: st, Inode: curIno, Start: off, Size: curSize, PathInode: curIno, PathSize: curSize, Prefix: prefix(cur, prefixLen)}, cur)
}

// prefix is the hex of f's first n bytes (fewer if it is shorter), "-" when empty.
func prefix(f *os.File, n int) string {
	b := make([]byte, n)
	k, _ := f.ReadAt(b, 0)
	if k == 0 {
		return "-"
	}
	return hex.EncodeToString(b[:k])
}

// Glob lists the regular files (not symlinks) pattern matches below the root.
func (l *Local) Glob(_ context.Context, pattern string) ([]string, error) {
	matches, err := l.Root.Glob(pattern)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		if info, err := l.Root.Lstat(m); err == nil && info.Mode().IsRegular() {
			out = append(out, m)
		}
	}
	return out, nil
}

// hold keeps f as path's open generation (the previous one is closed, unless it is f).
func (l *Local) hold(path string, f *os.File) {
	if prev := l.held[path]; prev != nil && prev != f {
		_ = prev.Close()
	}
	l.held[path] = f
}

// old returns an open descriptor of inode: the held one, or a file of the same directory.
// The caller closes it; it is no longer held.
func (l *Local) old(path string, inode uint64) *os.File {
	if f := l.held[path]; f != nil {
		delete(l.held, path)
		if ino, _, err := stat(f); err == nil && ino == inode {
			return f
		}
		_ = f.Close()
	}
	dir := filepath.Dir(path)
	entries, err := l.Root.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		p := rootfs.Join(dir, e.Name())
		info, err := l.Root.Lstat(p)
		if err != nil || info.Sys().(*unix.Stat_t).Ino != inode {
			continue
		}
		f, err := l.Root.Open(p)
		if err != nil {
			return nil
		}
		if ino, _, err := stat(f); err == nil && ino == inode {
			return f
		}
		_ = f.Close()
		return nil
	}
	return nil
}

// openRegular opens path if it is a regular file, with no symbolic link on the way (the
// kernel refuses them: no check-then-open race). A missing path is (nil, "", nil); a
// symlink or special file gives status notfile, a symlinked directory above it status
// linked.
func (l *Local) openRegular(path string) (*os.File, uint64, int64, string, error) {
	info, err := l.Root.Lstat(path)
	if err != nil {
		st, err := openStatus(err)
		return nil, 0, 0, st, err
	}
	if !info.Mode().IsRegular() {
		return nil, 0, 0, StatusNotFile, nil
	}
	f, err := l.Root.Open(path)
	if err != nil { // it changed since the Lstat
		st, err := openStatus(err)
		return nil, 0, 0, st, err
	}
	ino, size, err := stat(f)
	if err != nil {
		return nil, 0, 0, "", errors.Join(err, f.Close())
	}
	return f, ino, size, "", nil
}

// openStatus says what an Lstat or Open error of a followed path means: missing (no
// status, no error), below a symbolic link (StatusLinked), or a failure.
func openStatus(err error) (string, error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	case errors.Is(err, rootfs.ErrLinked):
		return StatusLinked, nil
	}
	return "", err
}

func stat(f *os.File) (uint64, int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if !info.Mode().IsRegular() {
		return 0, 0, errors.New(f.Name() + " is not a regular file")
	}
	return info.Sys().(*syscall.Stat_t).Ino, info.Size(), nil
}

func fileSize(f *os.File) (int64, error) {
	_, size, err := stat(f)
	return size, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
