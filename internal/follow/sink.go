package follow

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/source"
)

// ExecSink keeps followed files and their checkpoints in the analysis pod over exec
// (analysis.Pod's Probe, Append and Retire), reading what they print within small bounds.
type ExecSink struct {
	Exec exec.Executor
}

// Probe implements Sink.
func (s ExecSink) Probe(ctx context.Context, dst exec.Target, file, state string) (source.Checkpoint, int64, bool, error) {
	out := &exec.Output{Max: 4096}
	err := analysis.Pod{Exec: s.Exec, Target: dst}.Probe(ctx, file, state, out)
	if err != nil {
		return source.Checkpoint{}, 0, false, fmt.Errorf("reading the checkpoint of %s in %s: %w", file, dst, err)
	}
	return parseProbe(out.String())
}

// Retire implements Sink.
func (s ExecSink) Retire(ctx context.Context, dst exec.Target, file, state, toFile, toState string) error {
	errb := &exec.Output{Max: 4096}
	err := analysis.Pod{Exec: s.Exec, Target: dst}.Retire(ctx, file, state, toFile, toState, errb)
	if err != nil {
		return fmt.Errorf("setting aside the earlier pod's %s in %s: %w (%s)", file, dst, err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// Append implements Sink.
func (s ExecSink) Append(ctx context.Context, dst exec.Target, file, state string, start source.Checkpoint, r io.Reader) (int64, error) {
	out := &exec.Output{Max: 256}
	err := analysis.Pod{Exec: s.Exec, Target: dst}.Append(ctx, file, state, stateLine(start), r, out)
	if err != nil {
		return 0, fmt.Errorf("appending to %s in %s: %w", file, dst, err)
	}
	var before, after int64
	if _, err := fmt.Sscanf(out.String(), "%d %d\n", &before, &after); err != nil || after < before {
		return 0, fmt.Errorf("appending to %s in %s: unexpected output %q", file, dst, out.String())
	}
	return after - before, nil
}
