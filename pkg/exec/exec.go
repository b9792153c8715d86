// Package exec runs commands in containers over the Kubernetes exec API. It is the one
// boundary every other package streams through, so each side can be tested alone.
package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream" //nolint:staticcheck // the error types client-go 0.37 returns on upgrade failure
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/podcopy/podcopy/pkg/failure"
)

// Target names a container.
type Target struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
}

func (t Target) String() string { return t.Namespace + "/" + t.Pod + "/" + t.Container }

// TerminalSize is a terminal's width and height in cells.
type TerminalSize = remotecommand.TerminalSize

// SizeQueue yields terminal sizes; Next returns nil once the session has ended, which is
// what lets the stream's resize goroutine exit.
type SizeQueue = remotecommand.TerminalSizeQueue

// Request is one command to run.
type Request struct {
	Target
	Command []string
	// Stdin, when set, is copied to the command; its EOF half-closes the command's stdin.
	// The caller owns Stdin and must make it return (EOF or error) once Exec returns.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool
	Resize SizeQueue
}

// Executor runs a command in a container and returns when it has exited and its output
// has been delivered. A non-zero exit is an *ExitError.
type Executor interface {
	Exec(ctx context.Context, req Request) error
}

// ExitError is a command that ran and exited non-zero.
type ExitError struct {
	Code int
	// Stderr is the last bytes (at most StderrTail) the command wrote to stderr.
	Stderr string
}

// Transient reports whether the command was killed by a signal from outside (its pod was
// deleted, the runtime went away): running again may help; an exit of its own (a full disk,
// tar's own errors) will happen again (failure.Retrier).
func (e *ExitError) Transient() bool { return e.Code > 128 }

func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("command exited with code %d", e.Code)
	}
	return fmt.Sprintf("command exited with code %d: %s", e.Code, e.Stderr)
}

// StderrTail bounds the stderr kept for an ExitError.
const StderrTail = 4096

// Transport selects the exec protocol.
type Transport string

// Transports of SPEC §5.
const (
	TransportAuto      Transport = "auto"
	TransportWebSocket Transport = "websocket"
	TransportSPDY      Transport = "spdy"
)

// ParseTransport validates a transport name.
func ParseTransport(s string) (Transport, error) {
	switch t := Transport(s); t {
	case TransportAuto, TransportWebSocket, TransportSPDY:
		return t, nil
	}
	return "", fmt.Errorf("exec.transport %q is unknown; use auto, websocket or spdy", s)
}

// Remote is the Executor over a real API server.
type Remote struct {
	config    *rest.Config
	client    rest.Interface
	transport Transport
}

// NewRemote builds an Executor that uses config's credentials. With TransportAuto, SPDY (the
// faster one as measured, see bench/) is tried first and WebSocket v5 is the fallback, the
// way kubectl composes them.
func NewRemote(config *rest.Config, client rest.Interface, transport Transport) *Remote {
	return &Remote{config: config, client: client, transport: transport}
}

// Exec implements Executor.
func (r *Remote) Exec(ctx context.Context, req Request) error {
	u := r.client.Post().Resource("pods").Namespace(req.Namespace).Name(req.Pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: req.Container,
			Command:   req.Command,
			Stdin:     req.Stdin != nil,
			Stdout:    req.Stdout != nil,
			Stderr:    !req.TTY, // always captured: ExitError carries its tail
			TTY:       req.TTY,
		}, scheme.ParameterCodec).URL()
	c := &conns{}
	ex, err := r.executor(u, c)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go c.closeOnCancel(ctx, done)
	return Stream(ctx, ex, req)
}

func (r *Remote) executor(u *url.URL, c *conns) (remotecommand.Executor, error) {
	ws := func() (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(r.config, http.MethodGet, u.String())
	}
	spdy := func() (remotecommand.Executor, error) {
		return spdyExecutor(r.config, u, c)
	}
	switch r.transport {
	case TransportWebSocket:
		return ws()
	case TransportSPDY:
		return spdy()
	}
	primary, err := spdy()
	if err != nil {
		return nil, err
	}
	secondary, err := ws()
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(primary, secondary, shouldFallback)
}

func shouldFallback(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

// Stream runs req on an already built remotecommand executor, translating exit codes and
// keeping a bounded tail of stderr. It is exported for tests that dial their own servers.
func Stream(ctx context.Context, ex remotecommand.Executor, req Request) error {
	tail := &tailBuffer{max: StderrTail}
	opts := remotecommand.StreamOptions{Stdin: req.Stdin, Stdout: req.Stdout, Tty: req.TTY, TerminalSizeQueue: req.Resize}
	if req.Stderr != nil && !req.TTY {
		opts.Stderr = io.MultiWriter(tail, req.Stderr)
	} else if !req.TTY {
		opts.Stderr = tail
	}
	err := ex.StreamWithContext(ctx, opts)
	if out, ok := req.Stdout.(*Output); ok && out.Err() != nil {
		// client-go drops a stdout writer's error: the bound is reported here, whatever the
		// command's own end was.
		return fmt.Errorf("exec in %s: %w", req.Target, out.Err())
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("exec in %s: %w (%v)", req.Target, context.Cause(ctx), err)
	}
	var code utilexec.CodeExitError
	if errors.As(err, &code) {
		return &ExitError{Code: code.Code, Stderr: strings.TrimSpace(tail.String())}
	}
	if m := missingCommand.FindStringSubmatch(err.Error()); m != nil {
		return &MissingCommandError{Command: m[1], Err: fmt.Errorf("exec in %s: %w", req.Target, err)}
	}
	if strings.Contains(err.Error(), backendDialFailed) {
		return failure.New(failure.NodeUnreachable, fmt.Errorf("exec in %s: the API server could not reach the node's kubelet: %w", req.Target, err))
	}
	return fmt.Errorf("exec in %s: %w", req.Target, err)
}

// backendDialFailed is how the API server answers an exec it cannot relay because the pod's
// kubelet does not answer (k8s.io/apiserver's upgrade-aware proxy): the node is unreachable.
const backendDialFailed = "error dialing backend"

// missingCommand is how the runtime reports an executable that is not in the container
// (runc and crun through containerd or CRI-O): it arrives as an API error, not an exit code.
var missingCommand = regexp.MustCompile(`exec: "([^"]+)": (?:executable file not found|stat [^:]*: no such file or directory)`)

// MissingCommandError is a command the container does not have (a distroless image has no
// tar and no sh).
type MissingCommandError struct {
	Command string
	Err     error
}

// Transient is false: the container will not grow the command (failure.Retrier).
func (e *MissingCommandError) Transient() bool { return false }

func (e *MissingCommandError) Error() string {
	return fmt.Sprintf("the container has no %s: %v", e.Command, e.Err)
}

func (e *MissingCommandError) Unwrap() error { return e.Err }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
