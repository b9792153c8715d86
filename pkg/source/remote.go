package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/podcopy/podcopy/pkg/exec"
)

// Remote reads followed files in a container over exec, with Reader's follow verbs (the
// container's shell scripts, or the podcopy helper: they print the same), and parses what
// they print as hostile input: a bounded header line, then exactly the segment's bytes.
// It is what package follow reads through.
type Remote struct {
	Exec   exec.Executor
	Target exec.Target
	// Reader is the flavour; nil means Shell.
	Reader Reader
}

func (s Remote) reader() Reader {
	if s.Reader == nil {
		return Shell{}
	}
	return s.Reader
}

// Read calls fn once with the segment after cp and its bytes (to their end) and returns
// when the read is over; fn may stop early.
func (s Remote) Read(ctx context.Context, path string, cp Checkpoint, fn func(Segment, io.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := s.Exec.Exec(ctx, exec.Request{Target: s.Target, Command: s.reader().FollowCommand(path, cp), Stdout: pw})
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

var errStopped = errors.New("source: reader stopped")

// maxGlobOutput bounds what a glob may print.
const maxGlobOutput = 1 << 20

func (s Remote) consume(r io.Reader, fn func(Segment, io.Reader) error) error {
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

// Glob lists the regular files (not symlinks) pattern matches now, NUL-terminated output
// of at most maxGlobOutput bytes.
func (s Remote) Glob(ctx context.Context, pattern string) ([]string, error) {
	out := &exec.Output{Max: maxGlobOutput}
	err := s.Exec.Exec(ctx, exec.Request{Target: s.Target, Command: s.reader().GlobCommand(pattern), Stdout: out})
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
