package follow

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/source"
)

// maxSegments bounds the segments one Tick ships (an old generation, then the new file).
const maxSegments = 4

// File follows one source file into one destination file.
type File struct {
	Source Source
	Sink   Sink
	// Path is the file in the source; UID identifies the source pod's incarnation.
	Path string
	UID  string
	// Dest and State are the destination file and its checkpoint (see Paths).
	Dest, State string
	// MaxSegment bounds the bytes one segment ships (0: no bound), so a large backlog is
	// shipped over several ticks instead of in one unbounded stream (policy.maxBytes).
	MaxSegment int64
	// Budget, when positive, bounds what the next Tick ships over all its segments (Set's
	// Budget left for this file); 0: no bound.
	Budget int64
	// Retired names where an earlier pod's (uid) Dest and State are set aside when this pod
	// (another UID, the same name) starts following (layout.Layout.Retired). Nil: they are
	// not set aside (tests of other behaviour).
	Retired func(uid string) (file, state string, err error)

	cp       source.Checkpoint
	dst      exec.Target // where cp was read from; a new destination is probed again
	known    bool
	lastSize int64 // size of file cp.Inode when last seen
	destSize int64
}

// Report is what one Tick did.
type Report struct {
	// Shipped bytes in this tick, and the destination file's size after it.
	Shipped, DestSize int64
	// Pending is what the source had beyond the checkpoint when the tick began.
	Pending int64
	// Rotations and Truncations seen; Lost counts bytes known to be unreadable because of
	// them (written after the checkpoint but gone before they could be read).
	Rotations, Truncations int
	Lost                   int64
	// Missing is set when the path names no regular file now.
	Missing string
}

// Tick ships what was appended since the checkpoint to dst.
func (f *File) Tick(ctx context.Context, dst exec.Target) (Report, error) {
	var rep Report
	if !f.known || f.dst != dst {
		cp, size, ok, err := f.Sink.Probe(ctx, dst, f.Dest, f.State)
		if err != nil {
			return rep, err
		}
		if ok && cp.UID != "" && cp.UID != f.UID && f.Retired != nil {
			// An earlier pod with this name harvested here: its file is set aside under
			// its UID, and this pod's file starts empty (SPEC §4, §9).
			toFile, toState, err := f.Retired(cp.UID)
			if err != nil {
				return rep, err
			}
			if err := f.Sink.Retire(ctx, dst, f.Dest, f.State, toFile, toState); err != nil {
				return rep, err
			}
			size = 0
		}
		if !ok || cp.UID != f.UID {
			cp = source.Checkpoint{UID: f.UID} // a new destination, or a new pod with this name
		}
		f.cp, f.dst, f.known, f.destSize, f.lastSize = cp, dst, true, size, cp.Offset
	}
	rep.DestSize = f.destSize
	for i := range maxSegments {
		if f.Budget > 0 && rep.Shipped >= f.Budget {
			break
		}
		seg, short, err := f.segment(ctx, dst, &rep, i == 0)
		if err != nil {
			f.known = false // the destination says where we are; ask it next time
			return rep, err
		}
		if short {
			continue // the rest of the segment again, from what landed
		}
		if seg.Status == source.StatusMissing || seg.Status == source.StatusNotFile || seg.Status == source.StatusLinked || seg.Inode == seg.PathInode {
			break
		}
	}
	return rep, nil
}

// segment ships one segment; short says fewer bytes landed than were sent.
func (f *File) segment(ctx context.Context, dst exec.Target, rep *Report, first bool) (source.Segment, bool, error) {
	var seg source.Segment
	var short bool
	err := f.Source.Read(ctx, f.Path, f.cp, func(s source.Segment, r io.Reader) error {
		seg = s
		switch s.Status {
		case source.StatusMissing:
			rep.Missing = fmt.Sprintf("%s does not exist", f.Path)
			return nil
		case source.StatusNotFile:
			rep.Missing = fmt.Sprintf("%s is not a regular file (symlinks are not followed)", f.Path)
		case source.StatusLinked:
			rep.Missing = fmt.Sprintf("%s is below a symbolic link; podcopy does not read through symlinked directories", f.Path)
			return nil
		case source.StatusRotated, source.StatusGone:
			rep.Rotations++
			if s.Status == source.StatusGone && f.lastSize > f.cp.Offset {
				rep.Lost += f.lastSize - f.cp.Offset
			}
		case source.StatusTruncated:
			rep.Truncations++
			if f.lastSize > f.cp.Offset {
				rep.Lost += f.lastSize - f.cp.Offset
			}
		}
		if first {
			rep.Pending = pending(f.cp, s)
		}
		f.cp, f.lastSize = source.Checkpoint{UID: f.UID, Inode: s.Inode, Offset: s.Start, Prefix: s.Prefix}, s.Size
		br := bufio.NewReaderSize(r, 32<<10)
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			return nil // nothing new
		}
		var body io.Reader = br
		limit := f.MaxSegment
		if f.Budget > 0 && (limit == 0 || f.Budget-rep.Shipped < limit) {
			limit = f.Budget - rep.Shipped
		}
		if limit > 0 {
			body = io.LimitReader(br, limit)
		}
		sent := &countingReader{r: body}
		n, err := f.Sink.Append(ctx, dst, f.Dest, f.State, f.cp, sent)
		short = err == nil && n < sent.n
		if err == nil && limit > 0 && sent.n == limit {
			err = ErrSegmentFull // the rest waits for the next segment or tick
		}
		f.cp.Offset += n
		f.destSize += n
		rep.Shipped += n
		rep.DestSize = f.destSize
		f.lastSize = max(f.lastSize, f.cp.Offset)
		return err
	})
	if errors.Is(err, ErrSegmentFull) {
		return seg, short, nil
	}
	return seg, short, err
}

// ErrSegmentFull stops a source once a segment has shipped MaxSegment bytes; it is not a
// failure (Source implementations end the read early and return it).
var ErrSegmentFull = errors.New("follow: segment bound reached")

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// pending is what the source holds beyond cp, as the segment's header tells.
func pending(cp source.Checkpoint, s source.Segment) int64 {
	switch {
	case s.Inode == cp.Inode && s.Inode == s.PathInode:
		return max(0, s.Size-cp.Offset)
	case s.Inode == cp.Inode: // an old generation, then the whole new file
		return max(0, s.Size-cp.Offset) + s.PathSize
	default:
		return s.PathSize
	}
}
