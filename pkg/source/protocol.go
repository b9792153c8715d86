package source

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The follow verbs' wire protocol. FollowCommand's output is a header line
//
//	podcopy-follow 1 <status> <inode> <start> <size> <path inode> <path size> <prefix>
//
// followed by the bytes of file <inode> from offset <start> to its end. <prefix> is the
// hex of that file's first (up to 32) bytes, "-" when empty; the checkpoint carries it to
// tell a new file that reused the inode number of a deleted one.

// Status of a segment, as the source reports it.
const (
	// StatusOK is the same file as the checkpoint's, or the first read.
	StatusOK = "ok"
	// StatusRotated: the checkpoint's file was renamed away and is finished; the path's new
	// file follows from its start.
	StatusRotated = "rotated"
	// StatusGone: the checkpoint's file is no longer in the directory.
	StatusGone = "gone"
	// StatusTruncated: the file shrank below the checkpoint, or its first bytes changed; it
	// is read from its start.
	StatusTruncated = "truncated"
	// StatusMissing: no file at the path.
	StatusMissing = "missing"
	// StatusNotFile: a symbolic link or not a regular file.
	StatusNotFile = "notfile"
	// StatusLinked: a directory above the path is a symbolic link, never read through.
	StatusLinked = "linked"
)

// Checkpoint is a position in a source file: every byte before Offset of file Inode of pod
// UID has reached the destination. Inode 0 means nothing was shipped yet. Prefix is the
// hex of the file's first (up to 32) bytes, "-" or "" when unknown: a file that reuses the
// inode number of a deleted one is told apart by it. UID is the destination's business; the
// source is given the rest.
type Checkpoint struct {
	UID    string `json:"uid"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
	Prefix string `json:"prefix,omitempty"`
}

// PrefixArg is the checkpoint's prefix as the scripts take it: hex, or "-".
func (cp Checkpoint) PrefixArg() string { return prefixArg(cp.Prefix) }

// Segment is what a source is about to stream: the bytes of file Inode from Start on.
// PathInode and PathSize describe the file the followed path names now (0 if none).
type Segment struct {
	Status    string
	Inode     uint64
	Start     int64
	Size      int64
	PathInode uint64
	PathSize  int64
	// Prefix is the hex of file Inode's first (up to 32) bytes, "-" when it is empty.
	Prefix string
}

// prefixLen is how many leading bytes of a file its Prefix covers.
const prefixLen = 32

// maxHeader bounds the header line.
const maxHeader = 256

// followArgs are the follow verb's arguments: PATH INODE OFFSET PREFIX.
func followArgs(path string, cp Checkpoint) []string {
	return []string{path, strconv.FormatUint(cp.Inode, 10), strconv.FormatInt(cp.Offset, 10), prefixArg(cp.Prefix)}
}

// parseFollowArgs reads what followArgs wrote (the server's side).
func parseFollowArgs(args []string) (string, Checkpoint, error) {
	if len(args) != 4 {
		return "", Checkpoint{}, errors.New("usage: follow PATH INODE OFFSET PREFIX")
	}
	ino, err1 := strconv.ParseUint(args[1], 10, 64)
	off, err2 := strconv.ParseInt(args[2], 10, 64)
	if err1 != nil || err2 != nil || off < 0 || !ValidPrefix(args[3]) {
		return "", Checkpoint{}, fmt.Errorf("source follow: bad checkpoint %q", args[1:])
	}
	cp := Checkpoint{Inode: ino, Offset: off}
	if args[3] != "-" {
		cp.Prefix = args[3]
	}
	return args[0], cp, nil
}

// formatHeader is the header line of seg (with its newline).
func formatHeader(seg Segment) string {
	return fmt.Sprintf("%s 1 %s %d %d %d %d %d %s\n", followArgv0, seg.Status, seg.Inode, seg.Start, seg.Size,
		seg.PathInode, seg.PathSize, prefixArg(seg.Prefix))
}

// parseHeader reads "podcopy-follow 1 status inode start size pathInode pathSize prefix".
func parseHeader(line string) (Segment, error) {
	f := strings.Fields(line)
	if len(f) != 9 || f[0] != followArgv0 || f[1] != "1" || !ValidPrefix(f[8]) {
		return Segment{}, fmt.Errorf("unexpected header from the source container: %q", line)
	}
	s := Segment{Status: f[2], Prefix: f[8]}
	var errs []error
	u := func(v string) uint64 {
		n, err := strconv.ParseUint(v, 10, 64)
		errs = append(errs, err)
		return n
	}
	i := func(v string) int64 {
		n, err := strconv.ParseInt(v, 10, 64)
		errs = append(errs, err)
		return n
	}
	s.Inode, s.Start, s.Size, s.PathInode, s.PathSize = u(f[3]), i(f[4]), i(f[5]), u(f[6]), i(f[7])
	if err := errors.Join(errs...); err != nil {
		return Segment{}, fmt.Errorf("unexpected header from the source container %q: %w", line, err)
	}
	switch s.Status {
	case StatusOK, StatusRotated, StatusGone, StatusTruncated, StatusMissing, StatusNotFile, StatusLinked:
	default:
		return Segment{}, fmt.Errorf("unexpected status in header %q", line)
	}
	return s, nil
}

// prefixArg is a prefix as the scripts take it: hex, or "-".
func prefixArg(p string) string {
	if p == "" || !ValidPrefix(p) {
		return "-"
	}
	return p
}

// ValidPrefix reports whether p is a prefix as the protocol carries it: "-", or the hex of
// 1 to 32 bytes.
func ValidPrefix(p string) bool {
	if p == "-" {
		return true
	}
	if p == "" || len(p)%2 != 0 || len(p) > 2*prefixLen {
		return false
	}
	_, err := hex.DecodeString(p)
	return err == nil
}
