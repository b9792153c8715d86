package shell

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/podcopy/podcopy/pkg/exec"
)

// WebSocket close codes the page understands (4000-4999 is the application range).
const (
	CloseEnded           = websocket.CloseNormalClosure
	CloseUnauthenticated = 4401
	CloseForbidden       = 4403
	CloseBadRequest      = 4400
	CloseTooMany         = 4429
	CloseIdle            = 4408
	CloseShutdown        = 4503
	CloseFailed          = 4500
)

// RefusedError is a session refused before it started.
type RefusedError struct {
	Code   int
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

// Reasons a session ends, as context causes.
var (
	errClientGone = errors.New("the browser closed the session")
	errIdle       = errors.New("session idle for too long")
	errShutdown   = errors.New("the agent is shutting down")
)

// message is a control message, sent as a text frame in both directions.
type message struct {
	Type    string `json:"type"`
	Cols    uint16 `json:"cols,omitempty"`
	Rows    uint16 `json:"rows,omitempty"`
	Message string `json:"message,omitempty"`
	Code    int    `json:"code,omitempty"`
}

// sizeQueue is the terminal's resize queue. Next returns nil once the session is over,
// which is what lets client-go's resize goroutine end (the leak in other web shells).
type sizeQueue struct {
	ch   chan exec.TerminalSize
	done <-chan struct{}
}

func newSizeQueue(done <-chan struct{}) *sizeQueue {
	return &sizeQueue{ch: make(chan exec.TerminalSize, 1), done: done}
}

// Next implements exec.SizeQueue.
func (q *sizeQueue) Next() *exec.TerminalSize {
	select {
	case s := <-q.ch:
		return &s
	case <-q.done:
		return nil
	}
}

// push keeps only the newest size when the consumer is behind.
func (q *sizeQueue) push(s exec.TerminalSize) {
	for {
		select {
		case q.ch <- s:
			return
		default:
			select {
			case <-q.ch:
			default:
			}
		}
	}
}

// conn serializes writes to a WebSocket and counts bytes.
type conn struct {
	ws       *websocket.Conn
	mu       sync.Mutex
	in, out  atomic.Int64
	activity func()
}

// writeTimeout bounds one write to the browser: a client that stops reading ends its
// session instead of pinning it (and the lock every writer shares, and shutdown).
const writeTimeout = 10 * time.Second

func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	c.out.Add(int64(len(p)))
	c.activity()
	return len(p), nil
}

func (c *conn) send(m message) {
	b, _ := json.Marshal(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *conn) close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(reason) > 120 { // close frames carry at most 123 bytes of reason
		reason = reason[:120]
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = c.ws.Close()
}

// run bridges the WebSocket to an exec stream until either side ends. Every goroutine it
// starts has ended when it returns.
func (c *conn) run(ctx context.Context, ex exec.Executor, target exec.Target, command []string, idle time.Duration) (code int, reason string) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(idle, func() { cancel(errIdle) })
	defer timer.Stop()
	c.activity = func() { timer.Reset(idle) }
	stdinR, stdinW := io.Pipe()
	sizes := newSizeQueue(ctx.Done())

	var wg sync.WaitGroup
	wg.Go(func() { // browser -> container
		defer cancel(errClientGone)
		defer stdinW.Close()
		for {
			typ, data, err := c.ws.ReadMessage()
			if err != nil {
				return
			}
			c.activity()
			switch typ {
			case websocket.BinaryMessage:
				c.in.Add(int64(len(data)))
				if _, err := stdinW.Write(data); err != nil {
					return
				}
			case websocket.TextMessage:
				var m message
				if json.Unmarshal(data, &m) == nil && m.Type == "resize" && m.Cols > 0 && m.Rows > 0 {
					sizes.push(exec.TerminalSize{Width: m.Cols, Height: m.Rows})
				}
			}
		}
	})
	wg.Go(func() { // keep-alive through proxies that drop quiet connections
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
			}
		}
	})

	err := ex.Exec(ctx, exec.Request{Target: target, Command: command, Stdin: stdinR, Stdout: c, TTY: true, Resize: sizes})
	cause := context.Cause(ctx)
	code, reason = outcome(err, cause)
	if !errors.Is(cause, errClientGone) {
		c.send(message{Type: "exit", Code: code, Message: reason})
	}
	cancel(errors.New("session over"))
	stdinR.CloseWithError(io.EOF) // unblocks the reader's pending write
	c.close(code, reason)         // unblocks the reader's ReadMessage
	wg.Wait()
	return code, reason
}

func outcome(err, cause error) (int, string) {
	switch {
	case errors.Is(cause, errClientGone):
		return CloseEnded, cause.Error()
	case errors.Is(cause, errIdle):
		return CloseIdle, cause.Error()
	case errors.Is(cause, errShutdown):
		return CloseShutdown, cause.Error()
	case err == nil:
		return CloseEnded, "the shell exited"
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return CloseEnded, "the shell exited with code " + itoa(exit.Code)
	}
	return CloseFailed, explain(err)
}
