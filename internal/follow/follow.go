// Package follow ships the bytes appended to files since a checkpoint (SPEC §4), for the
// agent's follow mode and for sidecar mode.
//
// The checkpoint is what reached the analysis pod: before appending a segment, the
// destination records which source file (pod UID, inode) and offset the segment starts at,
// next to the destination file's size at that moment. The destination file's size later
// says exactly how much of the segment arrived, so a crash at any point neither skips nor
// repeats data, and a replacement agent resumes from the destination alone.
package follow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/source"
)

// Source reads a followed file after a checkpoint. Read calls fn once with the segment and
// its bytes (to their end) and returns when the read is over; fn may stop early.
type Source interface {
	Read(ctx context.Context, path string, cp source.Checkpoint, fn func(source.Segment, io.Reader) error) error
}

// Sink is the destination side: it tells the checkpoint and appends segments.
type Sink interface {
	// Probe returns the checkpoint recorded with the destination file and the file's size;
	// ok is false when there is no checkpoint.
	Probe(ctx context.Context, dst exec.Target, file, state string) (cp source.Checkpoint, size int64, ok bool, err error)
	// Append records that a segment starting at start follows, then appends r to file. It
	// returns the bytes that landed in file, which can be fewer than it read from r.
	Append(ctx context.Context, dst exec.Target, file, state string, start source.Checkpoint, r io.Reader) (int64, error)
	// Retire renames file and state (an earlier pod's, with the same name) to toFile and
	// toState, so the new pod's bytes never extend them.
	Retire(ctx context.Context, dst exec.Target, file, state, toFile, toState string) error
}

// stateLine is what analysis.Pod.Append records before the destination size.
func stateLine(cp source.Checkpoint) string {
	uid := cp.UID
	if uid == "" {
		uid = "-"
	}
	return fmt.Sprintf("1 %s %d %d %s", uid, cp.Inode, cp.Offset, cp.PrefixArg())
}

// parseProbe turns analysis.Pod.Probe's output into the checkpoint the destination holds.
func parseProbe(out string) (cp source.Checkpoint, size int64, ok bool, err error) {
	lines := strings.SplitN(strings.TrimRight(out, "\n"), "\n", 2)
	if len(lines) != 2 {
		return cp, 0, false, fmt.Errorf("unexpected probe output %q", out)
	}
	if size, err = strconv.ParseInt(strings.TrimSpace(lines[0]), 10, 64); err != nil {
		return cp, 0, false, fmt.Errorf("unexpected destination size %q", lines[0])
	}
	if strings.TrimSpace(lines[1]) == "none" {
		return cp, size, false, nil
	}
	f := strings.Fields(lines[1])
	if len(f) != 6 || f[0] != "1" || !source.ValidPrefix(f[4]) {
		return cp, size, false, fmt.Errorf("unreadable checkpoint %q", lines[1])
	}
	ino, err1 := strconv.ParseUint(f[2], 10, 64)
	srcStart, err2 := strconv.ParseInt(f[3], 10, 64)
	dstStart, err3 := strconv.ParseInt(f[5], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return cp, size, false, fmt.Errorf("unreadable checkpoint %q: %w", lines[1], err)
	}
	cp = source.Checkpoint{UID: f[1], Inode: ino, Offset: srcStart, Prefix: f[4]}
	if cp.UID == "-" {
		cp.UID = ""
	}
	if size >= dstStart {
		cp.Offset += size - dstStart // the part of the last segment that arrived
	}
	return cp, size, true, nil
}

// Record adds a tick's report to the metrics; labels are namespace, pod, container, path.
func (r Report) Record(m *metrics.Metrics, labels ...string) {
	m.ShippedBytes.Add(float64(r.Shipped))
	m.FollowLag.WithLabelValues(labels...).Set(float64(r.Pending))
	m.FollowLostBytes.Add(float64(r.Lost))
	m.FollowRotations.WithLabelValues(metrics.RotationRename).Add(float64(r.Rotations))
	m.FollowRotations.WithLabelValues(metrics.RotationTruncate).Add(float64(r.Truncations))
}

// Events says what a report should tell the pod's owner: rotations (normal) and lost data
// (warning), "" when there is nothing to say.
func (r Report) Events(path string) (normal, warning string) {
	if r.Rotations > 0 {
		normal = fmt.Sprintf("%s was rotated (%d new file(s)); the previous file was finished and the new one is followed from its start", path, r.Rotations)
	}
	switch {
	case r.Lost > 0:
		warning = fmt.Sprintf("%s: %d bytes written after the last checkpoint were gone (file truncated, rewritten or deleted) before they could be read", path, r.Lost)
	case r.Truncations > 0:
		warning = fmt.Sprintf("%s was truncated or rewritten; it is followed again from its start", path)
	}
	return normal, warning
}
