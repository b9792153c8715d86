package follow

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/podcopy/podcopy/internal/exec"
)

// ExecSource reads files in a container over exec: through sourceScript and globScript
// (a shell and coreutils or busybox in the container), or, with Helper, through the podcopy
// binary in the container (the podcopy sidecar), which speaks the same protocol.
type ExecSource struct {
	Exec   exec.Executor
	Target exec.Target
	// Helper is the argv prefix of the podcopy binary's source mode (HelperCommand); empty
	// means the shell scripts.
	Helper []string
}

func (s ExecSource) readCommand(path string, cp Checkpoint) []string {
	args := []string{path, strconv.FormatUint(cp.Inode, 10), strconv.FormatInt(cp.Offset, 10), prefixArg(cp.Prefix)}
	if len(s.Helper) > 0 {
		return append(append(append([]string{}, s.Helper...), "follow"), args...)
	}
	return append([]string{"sh", "-c", sourceScript, argv0}, args...)
}

func (s ExecSource) globCommand(pattern string) []string {
	if len(s.Helper) > 0 {
		return append(append([]string{}, s.Helper...), "glob", pattern)
	}
	return []string{"sh", "-c", globScript, argv0, pattern}
}

// maxHeader bounds the header line.
const maxHeader = 256

// Read implements Source.
func (s ExecSource) Read(ctx context.Context, path string, cp Checkpoint, fn func(Segment, io.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := s.Exec.Exec(ctx, exec.Request{Target: s.Target, Command: s.readCommand(path, cp), Stdout: pw})
		pw.CloseWithError(err) // nil: the reader sees io.EOF
		done <- err
	}()
	ferr := s.consume(pr, fn)
	if ferr != nil {
		cancel() // stop the source early: fn gave up
	}
	pr.CloseWithError(errStopped)
	eerr := <-done
	if ferr != nil {
		return ferr
	}
	if eerr != nil {
		return fmt.Errorf("reading %s in %s: %w", path, s.Target, eerr)
	}
	return nil
}

var errStopped = errors.New("follow: reader stopped")

func (s ExecSource) consume(r io.Reader, fn func(Segment, io.Reader) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return errors.New("the source container printed nothing (does it have sh, stat, dd and cat?)")
		}
		return fmt.Errorf("reading the header from the source container: %w", err)
	}
	if len(line) > maxHeader {
		return errors.New("header from the source container too long")
	}
	seg, err := parseHeader(string(bytes.TrimSuffix(line, []byte("\n"))))
	if err != nil {
		return err
	}
	if err := fn(seg, br); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, br) // nothing normally: fn read to the end
	return err
}

// Glob implements Globber in the container.
func (s ExecSource) Glob(ctx context.Context, pattern string) ([]string, error) {
	var out bytes.Buffer
	err := s.Exec.Exec(ctx, exec.Request{Target: s.Target, Command: s.globCommand(pattern),
		Stdout: &limitedBuffer{b: &out, n: 1 << 20}})
	if err != nil {
		return nil, fmt.Errorf("listing %s in %s: %w", pattern, s.Target, err)
	}
	var names []string
	for _, n := range bytes.Split(out.Bytes(), []byte{0}) {
		if len(n) > 0 {
			names = append(names, string(n))
		}
	}
	return names, nil
}

// ExecSink keeps followed files and their checkpoints in the analysis pod over exec.
type ExecSink struct {
	Exec exec.Executor
}

// Probe implements Sink.
func (s ExecSink) Probe(ctx context.Context, dst exec.Target, file, state string) (Checkpoint, int64, bool, error) {
	var out bytes.Buffer
	err := s.Exec.Exec(ctx, exec.Request{Target: dst, Command: []string{"sh", "-c", probeScript, argv0, file, state},
		Stdout: &limitedBuffer{b: &out, n: 4096}})
	if err != nil {
		return Checkpoint{}, 0, false, fmt.Errorf("reading the checkpoint of %s in %s: %w", file, dst, err)
	}
	return parseProbe(out.String())
}

// Retire implements Sink.
func (s ExecSink) Retire(ctx context.Context, dst exec.Target, file, state, toFile, toState string) error {
	var errb bytes.Buffer
	err := s.Exec.Exec(ctx, exec.Request{Target: dst, Command: []string{"sh", "-c", retireScript, argv0, file, state, toFile, toState},
		Stderr: &limitedBuffer{b: &errb, n: 4096}})
	if err != nil {
		return fmt.Errorf("setting aside the earlier pod's %s in %s: %w (%s)", file, dst, err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// Append implements Sink.
func (s ExecSink) Append(ctx context.Context, dst exec.Target, file, state string, start Checkpoint, r io.Reader) (int64, error) {
	var out bytes.Buffer
	err := s.Exec.Exec(ctx, exec.Request{Target: dst, Command: []string{"sh", "-c", appendScript, argv0, file, state, stateLine(start)},
		Stdin: r, Stdout: &limitedBuffer{b: &out, n: 256}})
	if err != nil {
		return 0, fmt.Errorf("appending to %s in %s: %w", file, dst, err)
	}
	var before, after int64
	if _, err := fmt.Sscanf(out.String(), "%d %d\n", &before, &after); err != nil || after < before {
		return 0, fmt.Errorf("appending to %s in %s: unexpected output %q", file, dst, out.String())
	}
	return after - before, nil
}

// limitedBuffer keeps at most n bytes and fails past them.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.n {
		return 0, errors.New("output too long")
	}
	return l.b.Write(p)
}
