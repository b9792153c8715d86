// Package exectest provides Executors for tests: Local runs the command as a real local
// process (so tests stream real tar output), Func runs a Go function in its place.
package exectest

import (
	"context"
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/podcopy/podcopy/pkg/exec"
)

// Local runs every command as a local process. Env PATH is set to Path when non-empty, which
// is how a test picks busybox or GNU tools.
type Local struct {
	Path string
	mu   sync.Mutex
	// Calls records the argv of every command run.
	Calls [][]string
}

// Exec implements exec.Executor.
func (l *Local) Exec(ctx context.Context, req exec.Request) error {
	l.mu.Lock()
	l.Calls = append(l.Calls, req.Command)
	l.mu.Unlock()
	cmd := osexec.CommandContext(ctx, req.Command[0], req.Command[1:]...)
	if l.Path != "" {
		cmd.Env = append(os.Environ(), "PATH="+l.Path)
		if p, err := lookPath(l.Path, req.Command[0]); err == nil {
			cmd.Path = p
			cmd.Err = nil
		}
	}
	// A cancelled command is killed with its children (the tar of a shell pipeline), as the
	// container runtime kills an exec session's processes: an orphan still writing would
	// race the test's cleanup of its directories.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Stdin, cmd.Stdout = req.Stdin, req.Stdout
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if req.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, req.Stderr)
	}
	err := cmd.Run()
	var exitErr *osexec.ExitError
	if errors.As(err, &exitErr) && ctx.Err() == nil {
		tail := stderr.String()
		if len(tail) > exec.StderrTail {
			tail = tail[len(tail)-exec.StderrTail:]
		}
		return &exec.ExitError{Code: exitErr.ExitCode(), Stderr: strings.TrimSpace(tail)}
	}
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// Commands returns a copy of the recorded argvs.
func (l *Local) Commands() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]string(nil), l.Calls...)
}

func lookPath(dirs, name string) (string, error) {
	for _, d := range filepath.SplitList(dirs) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// BusyboxPath makes a directory of busybox applet links (tar, sh, rm, ...) and returns it
// for Local.Path, or "" when busybox is not installed.
func BusyboxPath(dir string) string {
	bb, err := osexec.LookPath("busybox")
	if err != nil {
		return ""
	}
	for _, applet := range []string{"tar", "sh", "rm", "cat", "test", "[", "gzip", "gunzip", "stat", "dd", "mkdir", "mv", "printf", "od", "tr", "touch", "head", "tail", "ls", "find", "du", "cut", "wc", "rmdir", "sleep"} {
		if err := os.Symlink(bb, filepath.Join(dir, applet)); err != nil {
			return ""
		}
	}
	return dir
}

// Func is an Executor backed by a function.
type Func func(ctx context.Context, req exec.Request) error

// Exec implements exec.Executor.
func (f Func) Exec(ctx context.Context, req exec.Request) error { return f(ctx, req) }

// Route sends source commands (tar -c / sh) to one executor and the rest to another.
type Route struct {
	Source, Other exec.Executor
	SourcePod     string
}

// Exec implements exec.Executor.
func (r Route) Exec(ctx context.Context, req exec.Request) error {
	if req.Pod == r.SourcePod {
		return r.Source.Exec(ctx, req)
	}
	return r.Other.Exec(ctx, req)
}
