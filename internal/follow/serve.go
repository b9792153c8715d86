package follow

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/podcopy/podcopy/internal/rootfs"
)

// ServeRead writes what sourceScript prints for path after cp (the header line, then the
// segment's bytes) from the filesystem below root, with the kernel refusing symbolic links
// on the way (openat2). It is the far side of ExecSource with a Helper.
func ServeRead(ctx context.Context, w io.Writer, root *rootfs.Root, path string, cp Checkpoint) error {
	l := &LocalSource{Root: root}
	defer func() { _ = l.Close() }()
	return l.Read(ctx, path, cp, func(seg Segment, r io.Reader) error {
		if _, err := fmt.Fprintf(w, "%s 1 %s %d %d %d %d %d %s\n", argv0, seg.Status, seg.Inode, seg.Start, seg.Size,
			seg.PathInode, seg.PathSize, prefixArg(seg.Prefix)); err != nil {
			return err
		}
		_, err := io.Copy(w, r)
		return err
	})
}

// ServeGlob writes, NUL-terminated, the regular files pattern matches below root.
func ServeGlob(ctx context.Context, w io.Writer, root *rootfs.Root, pattern string) error {
	l := &LocalSource{Root: root}
	names, err := l.Glob(ctx, pattern)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := fmt.Fprintf(w, "%s\x00", n); err != nil {
			return err
		}
	}
	return nil
}

// ParseServeArgs reads "follow PATH INODE OFFSET PREFIX" or "glob PATTERN" (what
// ExecSource passes after HelperCommand).
func ParseServeArgs(args []string) (verb, path string, cp Checkpoint, err error) {
	switch {
	case len(args) == 5 && args[0] == "follow":
		ino, err1 := strconv.ParseUint(args[2], 10, 64)
		off, err2 := strconv.ParseInt(args[3], 10, 64)
		if err1 != nil || err2 != nil || off < 0 || !validPrefix(args[4]) {
			return "", "", cp, fmt.Errorf("source follow: bad checkpoint %q", args[2:])
		}
		cp = Checkpoint{Inode: ino, Offset: off}
		if args[4] != "-" {
			cp.Prefix = args[4]
		}
		return "follow", args[1], cp, nil
	case len(args) == 2 && args[0] == "glob":
		return "glob", args[1], cp, nil
	}
	return "", "", cp, fmt.Errorf("usage: follow PATH INODE OFFSET PREFIX | glob PATTERN")
}
