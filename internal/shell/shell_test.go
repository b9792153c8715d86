package shell

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeAuthn struct{}

func (fakeAuthn) Authenticate(ctx context.Context, token string) (User, error) {
	if strings.HasPrefix(token, "token-") {
		return User{Name: strings.TrimPrefix(token, "token-")}, nil
	}
	return User{}, &RefusedError{Code: CloseUnauthenticated, Reason: "authentication failed: the token was not accepted"}
}

type fakeAuthz struct{}

func (fakeAuthz) CanExec(ctx context.Context, u User, ns, pod string) (bool, string, error) {
	return u.Name != "mallory", "no RBAC rule allows it", nil
}

// resizeLoops counts fake exec resize goroutines still running: each must see Next() == nil.
var resizeLoops atomic.Int64

// fakeContainer behaves like client-go's stream: resize and stdin are consumed by goroutines
// of their own; the call returns when the "process" ends.
func fakeContainer(ctx context.Context, req exec.Request) error {
	resizeLoops.Add(1)
	go func() {
		defer resizeLoops.Add(-1)
		for req.Resize.Next() != nil {
		}
	}()
	switch req.Command[0] {
	case "exit3":
		return &exec.ExitError{Code: 3}
	case "noshell":
		return errors.New(`exec: "/bin/sh": stat /bin/sh: no such file or directory`)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(req.Stdout, req.Stdin); done <- err }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-done:
		return err
	}
}

type harness struct {
	srv    *Server
	url    string
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions, cfg.MaxSessionsPerUser, cfg.IdleTimeout = 1000, 1000, time.Minute
	}
	srv := &Server{
		Config: cfg, Authn: fakeAuthn{}, Authz: fakeAuthz{},
		Executors: func(string) (exec.Executor, error) { return exectest.Func(fakeContainer), nil },
		DefaultTarget: func(context.Context) (exec.Target, error) {
			return exec.Target{Namespace: "podcopy", Pod: "analysis-0", Container: "store"}, nil
		},
		Metrics: NewMetrics(prometheus.NewRegistry()),
		Log:     logr.Discard(),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{srv: srv, url: "ws://" + l.Addr().String() + "/api/v1/session", cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- srv.Serve(ctx, l) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done //nolint:errcheck // Serve's error after a cancel is not what these tests check
		h.cancel = nil
	}
}

func (h *harness) dial(t *testing.T, token, query string, origin string) (*websocket.Conn, error) {
	t.Helper()
	u, _ := url.Parse(h.url)
	if origin == "" {
		origin = "http://" + u.Host
	}
	protos := []string{Subprotocol}
	if token != "" {
		protos = append(protos, tokenSubprefix+base64.RawURLEncoding.EncodeToString([]byte(token)))
	}
	d := websocket.Dialer{Subprotocols: protos, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(h.url+"?"+query, http.Header{"Origin": {origin}})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return ws, err
}

// dialStatus tries a session and returns the HTTP status of a refused handshake (101 when
// it was upgraded).
func (h *harness) dialStatus(t *testing.T, token string) int {
	t.Helper()
	protos := []string{Subprotocol}
	if token != "" {
		protos = append(protos, tokenSubprefix+base64.RawURLEncoding.EncodeToString([]byte(token)))
	}
	u, _ := url.Parse(h.url)
	d := websocket.Dialer{Subprotocols: protos, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(h.url, http.Header{"Origin": {"http://" + u.Host}})
	if err == nil {
		ws.Close()
	}
	if resp == nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// readUntilClose returns the close code and the last control message seen.
func readUntilClose(ws *websocket.Conn) (int, string) {
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	last := ""
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, last
			}
			return -1, err.Error()
		}
		if typ == websocket.TextMessage {
			last = string(data)
		}
	}
}

func TestSessionEcho(t *testing.T) {
	h := newHarness(t, Config{})
	ws, err := h.dial(t, "token-alice", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ws.Subprotocol() != Subprotocol {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"resize","cols":100,"rows":30}`))
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("echo hi\n")); err != nil {
		t.Fatal(err)
	}
	_, data, err := ws.ReadMessage()
	if err != nil || string(data) != "echo hi\n" {
		t.Fatalf("read %q %v", data, err)
	}
	if got := testutil.ToFloat64(h.srv.Metrics.Sessions); got != 1 {
		t.Fatalf("sessions gauge %v", got)
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	readUntilClose(ws)
	h.stop()
	if got := testutil.ToFloat64(h.srv.Metrics.Sessions); got != 0 {
		t.Fatalf("sessions gauge %v after close", got)
	}
}

// TestSessionsEndEveryWay opens and ends hundreds of sessions in every way a session can end;
// goleak (TestMain) then proves no goroutine is left, and every resize loop saw Next() == nil.
func TestSessionsEndEveryWay(t *testing.T) {
	ends := []struct {
		name     string
		cfg      Config
		token    string
		query    string
		origin   string
		end      func(ws *websocket.Conn)
		wantCode int
		wantMsg  string
	}{
		{name: "tab closed", token: "token-a", end: func(ws *websocket.Conn) {
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
		}, wantCode: -1},
		{name: "network cut", token: "token-a", end: func(ws *websocket.Conn) { _ = ws.UnderlyingConn().Close() }, wantCode: -2},
		{name: "shell exits", token: "token-a", query: "command=exit3", wantCode: CloseEnded, wantMsg: "exited with code 3"},
		{name: "no shell", token: "token-a", query: "command=noshell", wantCode: CloseFailed, wantMsg: "has no shell"},
		{name: "idle", token: "token-a", cfg: Config{MaxSessions: 1000, MaxSessionsPerUser: 1000, IdleTimeout: 20 * time.Millisecond}, wantCode: CloseIdle},
		{name: "no token", wantCode: http.StatusUnauthorized},
		{name: "bad token", token: "garbage", wantCode: http.StatusUnauthorized},
		{name: "forbidden", token: "token-mallory", wantCode: CloseForbidden, wantMsg: "may not create pods/exec on podcopy/analysis-0"},
		{name: "bad pod name", token: "token-a", query: "namespace=x&pod=..%2Fetc", wantCode: CloseBadRequest},
		{name: "bad dir", token: "token-a", query: "dir=%2Fcollect%2F..%2Fetc", wantCode: CloseBadRequest, wantMsg: "dir:"},
	}
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			h := newHarness(t, e.cfg)
			var wg sync.WaitGroup
			var unauthorized, limited atomic.Int64
			for i := range 60 {
				wg.Go(func() {
					if e.wantCode == http.StatusUnauthorized {
						// Refused before any upgrade; past 10 failures a minute, 429.
						switch code := h.dialStatus(t, e.token); code {
						case http.StatusUnauthorized:
							unauthorized.Add(1)
						case http.StatusTooManyRequests:
							limited.Add(1)
						default:
							t.Errorf("session %d: HTTP %d, want 401 or 429", i, code)
						}
						return
					}
					ws, err := h.dial(t, e.token, e.query, e.origin)
					if err != nil {
						t.Errorf("session %d: %v", i, err)
						return
					}
					defer ws.Close()
					if e.end != nil {
						e.end(ws)
					}
					if e.wantCode < 0 {
						return // the client went away; the server must notice by itself
					}
					code, msg := readUntilClose(ws)
					if code != e.wantCode || !strings.Contains(msg, e.wantMsg) {
						t.Errorf("session %d: close %d %q, want %d %q", i, code, msg, e.wantCode, e.wantMsg)
					}
				})
			}
			wg.Wait()
			if e.wantCode == http.StatusUnauthorized && (unauthorized.Load() < maxFailures || limited.Load() == 0) {
				t.Errorf("%d refused with 401, %d with 429", unauthorized.Load(), limited.Load())
			}
			waitZero(t, h.srv.Metrics.Sessions)
			h.stop()
		})
	}
	if n := resizeLoops.Load(); n != 0 {
		t.Fatalf("%d resize loops still running: Next() did not return nil", n)
	}
}

func waitZero(t *testing.T, g prometheus.Gauge) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(g) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sessions gauge stuck at %v", testutil.ToFloat64(g))
		}
	}
}

func TestShutdownEndsSessions(t *testing.T) {
	h := newHarness(t, Config{})
	var conns []*websocket.Conn
	for range 50 {
		ws, err := h.dial(t, "token-a", "", "")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, ws)
	}
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(h.srv.Metrics.Sessions) != 50; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sessions did not start")
		}
	}
	h.stop() // returns only when every session has ended
	for _, ws := range conns {
		if code, _ := readUntilClose(ws); code != CloseShutdown {
			t.Errorf("close code %d, want %d", code, CloseShutdown)
		}
		ws.Close()
	}
	if got := testutil.ToFloat64(h.srv.Metrics.SessionsTotal.WithLabelValues("shutdown")); got != 50 {
		t.Fatalf("shutdown sessions %v", got)
	}
}

func TestLimitsAndOrigin(t *testing.T) {
	h := newHarness(t, Config{MaxSessions: 3, MaxSessionsPerUser: 2, IdleTimeout: time.Minute})
	var open []*websocket.Conn
	defer func() {
		for _, ws := range open {
			ws.Close()
		}
	}()
	for _, tok := range []string{"token-a", "token-a", "token-b"} {
		ws, err := h.dial(t, tok, "", "")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ws)
	}
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(h.srv.Metrics.Sessions) != 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sessions did not start")
		}
	}
	for tok, want := range map[string]string{"token-a": "too many shell sessions", "token-c": "too many shell sessions"} {
		ws, err := h.dial(t, tok, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if code, msg := readUntilClose(ws); code != CloseTooMany || !strings.Contains(msg, want) {
			t.Errorf("%s: close %d %q", tok, code, msg)
		}
		ws.Close()
	}
	if _, err := h.dial(t, "token-a", "", "http://evil.example"); err == nil {
		t.Fatal("cross-origin session accepted")
	}
	h.stop()
}

func TestSizeQueue(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	q := newSizeQueue(done)
	q.push(exec.TerminalSize{Width: 1, Height: 1})
	q.push(exec.TerminalSize{Width: 2, Height: 2}) // replaces the unread one
	if s := q.Next(); s == nil || s.Width != 2 {
		t.Fatalf("Next = %+v", s)
	}
	close(done)
	if s := q.Next(); s != nil {
		t.Fatalf("Next after the session ended = %+v, want nil", s)
	}
}

func TestCheckTransport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Listen: "127.0.0.1:8080"}, true},
		{Config{Listen: "localhost:8080"}, true},
		{Config{Listen: "[::1]:8080"}, true},
		{Config{Listen: ":8080"}, false},
		{Config{Listen: "0.0.0.0:8080"}, false},
		{Config{Listen: ":8080", AllowPlainHTTP: true}, true},
		{Config{Listen: ":8080", TLSCertFile: "c", TLSKeyFile: "k"}, true},
		{Config{Listen: ":8080", TLSCertFile: "c"}, false},
	} {
		if err := tc.cfg.CheckTransport(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}

func TestFailureLimiter(t *testing.T) {
	t.Parallel()
	var f failureLimiter
	now := time.Unix(1000, 0)
	for i := range maxFailures {
		if f.limited("10.0.0.1", now) {
			t.Fatalf("limited after %d failures", i)
		}
		f.add("10.0.0.1", now)
	}
	if !f.limited("10.0.0.1", now) || f.limited("10.0.0.2", now) {
		t.Fatal("limit not per address")
	}
	if f.limited("10.0.0.1", now.Add(failureWindow+time.Second)) {
		t.Fatal("failures did not age out")
	}
}

// TestOneGuesserLocksNoOneOut (issue 20): behind one address (a port-forward, an ingress),
// a client guessing tokens is limited, but a user whose token already signed in from there
// still gets in; tokens that signed in are not reviewed again.
func TestOneGuesserLocksNoOneOut(t *testing.T) {
	h := newHarness(t, Config{MaxSessions: 100, MaxSessionsPerUser: 100, IdleTimeout: time.Minute})
	defer h.stop()
	ws, err := h.dial(t, "token-a", "", "")
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.Close()
	for range maxFailures + 5 {
		h.dialStatus(t, "garbage")
	}
	if code := h.dialStatus(t, "garbage"); code != http.StatusTooManyRequests {
		t.Fatalf("the guesser: HTTP %d, want 429", code)
	}
	ws, err = h.dial(t, "token-a", "", "")
	if err != nil {
		t.Fatalf("a signed-in user behind the same address was locked out: %v", err)
	}
	_ = ws.Close()
}

// countingAuthn counts TokenReviews.
type countingAuthn struct{ n atomic.Int64 }

func (c *countingAuthn) Authenticate(ctx context.Context, token string) (User, error) {
	c.n.Add(1)
	return fakeAuthn{}.Authenticate(ctx, token)
}

func TestTokenReviewsAreBounded(t *testing.T) {
	t.Parallel()
	a := &countingAuthn{}
	s := &Server{Authn: a}
	for range 5 {
		if _, err := s.authenticate(t.Context(), "token-a"); err != nil {
			t.Fatal(err)
		}
	}
	if a.n.Load() != 1 {
		t.Fatalf("%d TokenReviews for one token signing in 5 times", a.n.Load())
	}
	// New tokens beyond the burst wait for the budget; with a cancelled context they are
	// told to retry instead of reaching the API server.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	busy := 0
	for i := range reviewBurst + 10 {
		if _, err := s.authenticate(ctx, fmt.Sprintf("guess-%d", i)); errors.Is(err, errReviewsBusy) {
			busy++
		}
	}
	if busy == 0 || a.n.Load() > reviewBurst+1 {
		t.Fatalf("%d reviews, %d told to retry", a.n.Load(), busy)
	}
}

// TestAtDir: the directory is an argument of a constant script, never part of it.
func TestAtDir(t *testing.T) {
	t.Parallel()
	dir := `/collect/ns/p/x"; touch /pwned; "`
	got := AtDir(dir, []string{"sh", "-i"})
	if len(got) != 7 || got[2] != `cd -- "$1" || exit 1; shift; exec "$@"` || got[4] != dir || got[5] != "sh" || got[6] != "-i" {
		t.Fatalf("AtDir = %q", got)
	}
}
