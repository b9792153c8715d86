package follow

import _ "embed"

// The scripts below run in the analysis pod (the reading side's are package source's);
// they are fixed text, and a followed path and everything else the agent passes reach them
// only as positional arguments ("$1", ...), never as code. They need a POSIX shell, stat
// and cat (busybox or GNU coreutils).

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

// argv0 names the scripts in process listings.
const argv0 = "podcopy-follow"
