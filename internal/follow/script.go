package follow

import _ "embed"

// The scripts below are fixed text; a followed path and everything else the agent passes
// reach them only as positional arguments ("$1", ...), never as code. They need a POSIX
// shell, stat, dd, od, tr and cat (busybox or GNU coreutils).

// sourceScript streams the bytes of path ($1) after a checkpoint (inode $2, offset $3;
// inode 0 means none). Its first output line is a header
//
//	podcopy-follow 1 <status> <inode> <start> <size> <path inode> <path size> <prefix>
//
// followed by the bytes of file <inode> from offset <start> to its end. <prefix> is the hex
// of that file's first (up to 32) bytes, "-" when empty; the checkpoint carries it ($4) to
// tell a new file that reused the inode number of a deleted one. Status is ok (same file,
// or the first read), rotated (the checkpoint's file was renamed away and is finished; the
// path's new file follows from its start), gone (the checkpoint's file is no longer in the
// directory), truncated (the file shrank below the checkpoint, or its first bytes changed,
// and is read from its start), missing (no file at path), notfile (a symlink or not a
// regular file) or linked (a directory above path is a symbolic link: never read through).
//
// The file is opened once and everything is read through that descriptor, so a rotation
// between the stat and the read cannot mix two files. A renamed-away file is looked up by
// inode in the same directory and finished first (one segment per run: the agent runs the
// script again for the next one).
//
//go:embed scripts/source.sh
var sourceScript string

// probeScript prints the size of the destination file $1 (0 when absent) on one line and
// the checkpoint file $2 (or "none") on the next.
//
//go:embed scripts/probe.sh
var probeScript string

// appendScript appends its stdin to the destination file $1. First it records in the
// checkpoint file $2 the segment about to be appended: the state line $3 (uid, inode, source
// offset and prefix) followed by the destination file's current size. Whatever part of the
// segment then reaches the file, its size says exactly how far the source was shipped. It
// prints the file's size before and after the append: the bytes that landed, which is not
// always what was sent (the container runtime can drop the tail of a short stdin that is
// closed at once: measured with containerd 2.4.2).
//
//go:embed scripts/append.sh
var appendScript string

// retireScript renames an earlier pod's harvested file $1 and checkpoint $2 to $3 and $4
// (names the layout computed for that pod's UID), refusing to overwrite.
//
//go:embed scripts/retire.sh
var retireScript string

// globScript prints, NUL-terminated, the regular files (not symlinks) glob $1 matches. With
// IFS empty, the unquoted $1 is expanded as a pattern but never split or run.
//
//go:embed scripts/glob.sh
var globScript string

// argv0 names the scripts in process listings.
const argv0 = "podcopy-follow"
