package source

// The podcopy binary's source mode ("podcopy-agent source ..."): the container's half of
// the reading side, for containers with no shell and no tar (distroless, scratch). The agent
// execs it in a helper container (an ephemeral container aimed at the target, or the podcopy
// sidecar); it prints exactly what tar and the scripts print for each verb, and every path is
// resolved by the kernel below the target's root with no symbolic link followed (rootfs).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/rootfs"
)

// Exit codes, as tar's: 1 a warning on a complete archive, 2 an incomplete one or an error.
const (
	exitWarning = 1
	exitError   = 2
)

// Main runs the source mode with args (after "source") and returns the exit code. The
// first argument may choose the root: --pid=N (that process's root, read as its user) or
// --root=DIR (a directory; "/" by default).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "wait" {
		// The ephemeral helper container's own process: idle until the pod stops. It holds
		// no credentials and opens nothing; the agent execs the other verbs next to it.
		<-ctx.Done()
		return 0
	}
	pid, dir := 0, "/"
	switch {
	case len(args) > 0 && strings.HasPrefix(args[0], "--pid="):
		n, err := strconv.Atoi(strings.TrimPrefix(args[0], "--pid="))
		if err != nil || n <= 0 {
			fmt.Fprintf(stderr, "podcopy-agent source: bad %s\n", args[0])
			return exitError
		}
		pid, args = n, args[1:]
	case len(args) > 0 && strings.HasPrefix(args[0], "--root="):
		dir, args = strings.TrimPrefix(args[0], "--root="), args[1:]
	}
	root, err := openRoot(pid, dir)
	if err != nil {
		fmt.Fprintf(stderr, "podcopy-agent source: %v\n", err)
		return exitError
	}
	defer func() { _ = root.Close() }()
	out := bufio.NewWriterSize(stdout, 256<<10)
	code, err := serve(ctx, root, args, out, stderr)
	if ferr := out.Flush(); err == nil && ferr != nil {
		err, code = ferr, exitError
	}
	if err != nil {
		fmt.Fprintf(stderr, "podcopy-agent source: %v\n", err)
	}
	return code
}

func openRoot(pid int, dir string) (*rootfs.Root, error) {
	if pid == 0 {
		return rootfs.Open(dir)
	}
	return rootfs.OpenProcessRoot(pid)
}

func serve(ctx context.Context, root *rootfs.Root, args []string, out io.Writer, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		return exitError, errUsage
	}
	switch args[0] {
	case "follow":
		path, cp, err := parseFollowArgs(args[1:])
		if err != nil {
			return exitError, err
		}
		err = serveFollow(ctx, out, root, path, cp)
		return codeOf(err), err
	case "glob":
		if len(args) != 2 {
			return exitError, errUsage
		}
		err := serveGlob(ctx, out, root, args[1])
		return codeOf(err), err
	case "list":
		if len(args) != 2 {
			return exitError, errUsage
		}
		return codeOf(list(root, args[1], out)), nil
	case "ancestors":
		a := &rootfs.Archive{Root: root, Problems: io.Discard, NoRecursion: true}
		err := a.Write(ctx, out, args[1:])
		if errors.Is(err, rootfs.ErrIncomplete) {
			err = nil // a missing directory: the file below it is then reported missing
		}
		return codeOf(err), err
	case "tar":
		return archive(ctx, root, args[1:], out, stderr)
	}
	return exitError, errUsage
}

// errUsage lists the verbs.
var errUsage = errors.New("usage: podcopy-agent source wait | source [--pid=N | --root=DIR] follow PATH INODE OFFSET PREFIX | glob PATTERN | list PATTERN | ancestors DIRS | tar [--gzip] [--deny=GLOB]... PATHS")

func codeOf(err error) int {
	if err != nil {
		return exitError
	}
	return 0
}

// list prints, NUL-terminated, every entry pattern matches (what scripts/list.sh prints).
func list(root *rootfs.Root, pattern string, out io.Writer) error {
	names, err := root.Glob(pattern)
	if err != nil {
		return err
	}
	return writeNames(out, names)
}

// archive writes the tar stream of paths (gzip-compressed with --gzip).
func archive(ctx context.Context, root *rootfs.Root, args []string, out io.Writer, stderr io.Writer) (int, error) {
	var gz *gzip.Writer
	if len(args) > 0 && args[0] == "--gzip" {
		gz, _ = gzip.NewWriterLevel(out, gzip.BestSpeed)
		out, args = gz, args[1:]
	}
	deny := policy.Policy{AllowPaths: []string{"/**"}}
	for len(args) > 0 && strings.HasPrefix(args[0], "--deny=") {
		deny.DenyPaths, args = append(deny.DenyPaths, strings.TrimPrefix(args[0], "--deny=")), args[1:]
	}
	if err := deny.Validate(); err != nil {
		return exitError, err
	}
	a := &rootfs.Archive{Root: root, Problems: prefixed{stderr}}
	if len(deny.DenyPaths) > 0 {
		a.Skip = func(name string) bool { return deny.Check(name) != nil }
	}
	err := a.Write(ctx, out, args)
	if gz != nil {
		if cerr := gz.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	switch {
	case errors.Is(err, rootfs.ErrShrunk):
		return exitWarning, nil
	case errors.Is(err, rootfs.ErrIncomplete):
		return exitError, nil // each problem is on stderr already
	}
	return codeOf(err), err
}

// prefixed writes tar-like messages ("podcopy-agent source: /x: reason").
type prefixed struct{ w io.Writer }

func (p prefixed) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, "podcopy-agent source: "); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}

// serveFollow writes what followScript prints for path after cp (the header line, then the
// segment's bytes), with the kernel refusing symbolic links on the way (openat2).
func serveFollow(ctx context.Context, w io.Writer, root *rootfs.Root, path string, cp Checkpoint) error {
	l := &Local{Root: root}
	defer func() { _ = l.Close() }()
	return l.Read(ctx, path, cp, func(seg Segment, r io.Reader) error {
		if _, err := io.WriteString(w, formatHeader(seg)); err != nil {
			return err
		}
		_, err := io.Copy(w, r)
		return err
	})
}

// serveGlob writes, NUL-terminated, the regular files pattern matches below root.
func serveGlob(ctx context.Context, w io.Writer, root *rootfs.Root, pattern string) error {
	names, err := (&Local{Root: root}).Glob(ctx, pattern)
	if err != nil {
		return err
	}
	return writeNames(w, names)
}

// writeNames writes names NUL-terminated.
func writeNames(w io.Writer, names []string) error {
	for _, n := range names {
		if _, err := fmt.Fprintf(w, "%s\x00", n); err != nil {
			return err
		}
	}
	return nil
}
