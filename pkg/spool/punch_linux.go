package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// punchHole frees the disk of f's bytes [off, off+n) (they read as zeros after): what the
// spool's reader has read no longer takes room while the writer appends after it.
func punchHole(f *os.File, off, n int64) error {
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}
