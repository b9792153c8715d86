package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Archive writes the tar stream the agent reads from a container's own tar: for each
// canonical absolute path, its entry named "./<path without the leading />" and, for a
// directory, everything below it (depth first, sorted). Symbolic links are entries of
// their own, never followed; a second name of a file already written is a hard link entry,
// as GNU tar writes them; sockets are left out, as tar does.
//
// Problems with single paths (missing, unreadable, a link swapped in during the walk) do not
// stop the archive: each is written to Problems, like tar's messages on stderr, and the
// archive still ends properly; Err then says the archive is incomplete (tar's exit 2). A file
// that shrinks while read is padded with zeros to the size its header announced and
// reported (tar's exit 1).
type Archive struct {
	Root *Root
	// Problems receives one line per path that could not be archived.
	Problems io.Writer
	// NoRecursion writes directories without what is below them (tar --no-recursion): the
	// agent reads from such an archive which directories are symbolic links.
	NoRecursion bool
	// Skip, when set, leaves out regular files it reports true for (their absolute name):
	// they are never opened (the path policy's deny list, applied in the container too).
	Skip func(name string) bool

	tw      *tar.Writer
	links   map[fileID]string
	failed  bool
	shrunk  bool
	copyBuf []byte
}

type fileID struct{ dev, ino uint64 }

// ErrIncomplete is what Write returns when some paths could not be archived (exit 2).
var ErrIncomplete = errors.New("some paths could not be archived")

// ErrShrunk is what Write returns when a file shrank while it was read (exit 1).
var ErrShrunk = errors.New("a file shrank while it was read; padded with zeros")

// Write archives paths to w and ends the archive.
func (a *Archive) Write(ctx context.Context, w io.Writer, paths []string) error {
	a.tw = tar.NewWriter(w)
	a.links = map[fileID]string{}
	a.copyBuf = make([]byte, 256<<10)
	for _, p := range paths {
		if err := a.path(ctx, p); err != nil {
			return err
		}
	}
	if err := a.tw.Close(); err != nil {
		return err
	}
	switch {
	case a.failed:
		return ErrIncomplete
	case a.shrunk:
		return ErrShrunk
	}
	return nil
}

func (a *Archive) problem(name string, err error) {
	a.failed = true
	fmt.Fprintf(a.Problems, "%s: %v\n", name, unwrapPath(err))
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// path archives one requested path (and what is below it).
func (a *Archive) path(ctx context.Context, name string) error {
	info, err := a.Root.Lstat(name)
	if err != nil {
		a.problem(name, err)
		return nil
	}
	return a.entry(ctx, name, info)
}

// entry writes name, whose lstat is info, and recurses into directories. Only a failure to
// write the stream is returned; problems with the source are reported and skipped.
func (a *Archive) entry(ctx context.Context, name string, info fs.FileInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	hdr := &tar.Header{Name: "." + name, Mode: int64(info.Mode().Perm()), ModTime: info.ModTime(), Format: tar.FormatPAX}
	if st, ok := info.Sys().(*unix.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	}
	switch t := info.Mode().Type(); {
	case t == 0:
		if a.Skip != nil && a.Skip(name) {
			return nil
		}
		return a.file(name, hdr)
	case t == fs.ModeDir:
		return a.dir(ctx, name, hdr)
	case t == fs.ModeSymlink:
		target, err := a.readlink(name)
		if err != nil {
			a.problem(name, err)
			return nil
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case t == fs.ModeNamedPipe:
		hdr.Typeflag = tar.TypeFifo
	case t&fs.ModeCharDevice != 0:
		hdr.Typeflag = tar.TypeChar
	case t == fs.ModeDevice:
		hdr.Typeflag = tar.TypeBlock
	default: // sockets: tar leaves them out
		return nil
	}
	return a.tw.WriteHeader(hdr)
}

func (a *Archive) dir(ctx context.Context, name string, hdr *tar.Header) error {
	var entries []fs.DirEntry
	if !a.NoRecursion {
		var err error
		if entries, err = a.Root.ReadDir(name); err != nil {
			a.problem(name, err)
			return nil
		}
	}
	hdr.Typeflag = tar.TypeDir
	if name != "/" {
		hdr.Name += "/"
	} else {
		hdr.Name = "./"
	}
	if err := a.tw.WriteHeader(hdr); err != nil || a.NoRecursion {
		return err
	}
	for _, e := range entries {
		child := Join(name, e.Name())
		info, err := a.Root.Lstat(child)
		if err != nil {
			a.problem(child, err)
			continue
		}
		if err := a.entry(ctx, child, info); err != nil {
			return err
		}
	}
	return nil
}

// file opens name (refusing a link swapped in since the listing) and writes it, its size
// and identity taken from the open descriptor.
func (a *Archive) file(name string, hdr *tar.Header) error {
	f, err := a.Root.Open(name)
	if err != nil {
		a.problem(name, err)
		return nil
	}
	defer func() { _ = f.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		a.problem(name, err)
		return nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		a.problem(name, errors.New("changed from a regular file while it was archived"))
		return nil
	}
	hdr.Mode, hdr.Uid, hdr.Gid = int64(st.Mode&0o7777), int(st.Uid), int(st.Gid)
	hdr.ModTime = timespec(st.Mtim)
	if st.Nlink > 1 {
		id := fileID{dev: st.Dev, ino: st.Ino}
		if first, ok := a.links[id]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return a.tw.WriteHeader(hdr)
		}
		a.links[id] = hdr.Name
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	if err := a.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(a.tw, io.LimitReader(f, st.Size), a.copyBuf)
	if err != nil && !errors.Is(err, tar.ErrWriteTooLong) {
		var pe *os.PathError
		if !errors.As(err, &pe) {
			return err // the stream, not the file
		}
		a.problem(name, err)
	}
	if n < st.Size {
		a.shrunk = true
		fmt.Fprintf(a.Problems, "%s: file shrank by %d bytes; padding with zeros\n", name, st.Size-n)
		if _, err := io.CopyBuffer(a.tw, io.LimitReader(zeros{}, st.Size-n), a.copyBuf); err != nil {
			return err
		}
	}
	return nil
}

func (a *Archive) readlink(name string) (string, error) {
	dir, base := splitName(name)
	d, err := a.Root.openat2(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return "", err
	}
	defer func() { _ = d.Close() }()
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(int(d.Fd()), base, buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: name, Err: err}
	}
	return string(buf[:n]), nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
