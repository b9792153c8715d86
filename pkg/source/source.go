// Package source is the reading side of a collection: how bytes are read from a source
// container. It owns both halves.
//
// The agent's half is Reader, the argv run in the container for each verb, in two flavours
// that print the same thing: Shell (the container's own tar, and sh with coreutils or
// busybox, running the fixed scripts embedded from scripts/) and Helper (the podcopy
// binary's source mode in a helper container, for containers with neither). Package ship
// consumes the once verbs (list, ancestors, archive); Remote runs the follow verbs (follow,
// glob) and parses their wire protocol for package follow.
//
// The container's half is Main ("podcopy-agent source ..."), which serves every verb from a
// filesystem below a root descriptor (package rootfs: every open by the kernel, beneath the
// root, no symbolic link followed); Local is its follow reader, also usable in process.
//
// Whatever either half prints is hostile input to the agent: a compromised image controls
// its tar and sh. Names and values reach the scripts only as positional parameters.
package source

import (
	_ "embed"
	"strconv"
)

// The shell programs run in source containers are fixed text, embedded from scripts/
// (checked by shellcheck); everything the agent passes reaches them only as positional
// arguments.
var (
	// listScript prints, NUL-terminated, what one pattern matches below a root.
	//
	//go:embed scripts/list.sh
	listScript string

	// followScript streams the bytes of path ($1) after a checkpoint (inode $2, offset $3,
	// prefix $4; inode 0 means none), as a header line (see Segment and formatHeader)
	// followed by the bytes of the segment. The file is opened once and everything is read
	// through that descriptor, so a rotation between the stat and the read cannot mix two
	// files. A renamed-away file is looked up by inode in the same directory and finished
	// first (one segment per run: the agent runs the script again for the next one). It
	// needs a POSIX shell, stat, dd, od, tr and cat (busybox or GNU coreutils).
	//
	//go:embed scripts/follow.sh
	followScript string

	// globScript prints, NUL-terminated, the regular files (not symlinks) glob $1 matches.
	// With IFS empty, the unquoted $1 is expanded as a pattern but never split or run.
	//
	//go:embed scripts/glob.sh
	globScript string
)

const (
	// listArgv0 and followArgv0 name the scripts in process listings.
	listArgv0   = "podcopy-list"
	followArgv0 = "podcopy-follow"
)

// Kinds of Reader, as the custody record names how files were read.
const (
	KindTar    = "tar"
	KindHelper = "helper"
)

// Reader is how a source container is read: the argv the agent runs in it for each verb.
// Both flavours print the same output for a verb, so one pipeline consumes either.
type Reader interface {
	// Kind is KindTar or KindHelper.
	Kind() string
	// ListCommand lists what pattern (absolute) matches, NUL-terminated.
	ListCommand(pattern string) []string
	// AncestorsCommand archives directories without their content (tar --no-recursion), so
	// the agent sees which of them are symbolic links.
	AncestorsCommand(dirs []string) []string
	// ArchiveCommand archives paths (absolute, canonical, vetted) as tar, gzip-compressed
	// with gzip. Globs were expanded before, by ListCommand.
	ArchiveCommand(paths []string, gzip bool) []string
	// FollowCommand prints the segment of path after cp: a header line, then its bytes.
	FollowCommand(path string, cp Checkpoint) []string
	// GlobCommand lists, NUL-terminated, the regular files (not symlinks) pattern matches.
	GlobCommand(pattern string) []string
}

// Shell reads with the container's own tar (and sh for globs and follow). Root is where
// the once verbs read ("/", or "" for it, in production; a directory in tests); the follow
// verbs take paths as the container names them.
type Shell struct{ Root string }

func (s Shell) root() string {
	if s.Root == "" {
		return "/"
	}
	return s.Root
}

// Kind implements Reader.
func (Shell) Kind() string { return KindTar }

// ListCommand implements Reader.
func (s Shell) ListCommand(pattern string) []string {
	return []string{"sh", "-c", listScript, listArgv0, s.root(), "." + pattern}
}

// AncestorsCommand implements Reader. It needs only tar.
func (s Shell) AncestorsCommand(dirs []string) []string {
	cmd := []string{"tar", "-c", "--no-recursion", "-f", "-", "-C", s.root()}
	for _, d := range dirs {
		cmd = append(cmd, "."+d)
	}
	return cmd
}

// ArchiveCommand implements Reader. It needs only tar.
func (s Shell) ArchiveCommand(paths []string, gzip bool) []string {
	cmd := []string{"tar", "-c"}
	if gzip {
		cmd = append(cmd, "-z")
	}
	cmd = append(cmd, "-f", "-", "-C", s.root())
	for _, p := range paths {
		cmd = append(cmd, "."+p) // "./..." can never be taken for an option
	}
	return cmd
}

// FollowCommand implements Reader.
func (Shell) FollowCommand(path string, cp Checkpoint) []string {
	return append([]string{"sh", "-c", followScript, followArgv0}, followArgs(path, cp)...)
}

// GlobCommand implements Reader.
func (Shell) GlobCommand(pattern string) []string {
	return []string{"sh", "-c", globScript, followArgv0, pattern}
}

// Binary is the podcopy binary's path in its image (and so in the helper container).
const Binary = "/podcopy-agent"

// HelperCommand is the argv prefix that runs the source mode. pid > 0 reads the root of
// that process (the target container's main process, seen from an ephemeral container
// sharing its process namespace); pid 0 reads the helper container's own filesystem (the
// sidecar, which shares the application's volume).
func HelperCommand(pid int) []string {
	cmd := []string{Binary, "source"}
	if pid > 0 {
		cmd = append(cmd, "--pid="+strconv.Itoa(pid))
	}
	return cmd
}

// WaitCommand is the ephemeral helper container's own process: idle until the pod stops.
func WaitCommand() []string { return []string{Binary, "source", "wait"} }

// Helper reads with the podcopy binary's source mode whose argv prefix is Command
// (HelperCommand). Deny (policy.denyPaths) is passed to the archive verb, which then never
// opens a denied file: the agent refuses them as well, this is the second line.
type Helper struct {
	Command []string
	Deny    []string
}

func (h Helper) with(args ...string) []string {
	return append(append([]string{}, h.Command...), args...)
}

// Kind implements Reader.
func (Helper) Kind() string { return KindHelper }

// ListCommand implements Reader.
func (h Helper) ListCommand(pattern string) []string { return h.with("list", pattern) }

// AncestorsCommand implements Reader.
func (h Helper) AncestorsCommand(dirs []string) []string {
	return h.with(append([]string{"ancestors"}, dirs...)...)
}

// ArchiveCommand implements Reader.
func (h Helper) ArchiveCommand(paths []string, gz bool) []string {
	args := []string{"tar"}
	if gz {
		args = append(args, "--gzip")
	}
	for _, d := range h.Deny {
		args = append(args, "--deny="+d)
	}
	return h.with(append(args, paths...)...)
}

// FollowCommand implements Reader.
func (h Helper) FollowCommand(path string, cp Checkpoint) []string {
	return h.with(append([]string{"follow"}, followArgs(path, cp)...)...)
}

// GlobCommand implements Reader.
func (h Helper) GlobCommand(pattern string) []string { return h.with("glob", pattern) }
