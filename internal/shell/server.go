// Package shell is podcopy's browser terminal: one WebSocket per session, bridged to a TTY
// exec in a container, with each user's own Kubernetes token (TokenReview, then a
// SubjectAccessReview for create pods/exec, then the exec itself with that token).
package shell

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/pathname"
)

//go:embed web
var webFS embed.FS

// Subprotocol is the session protocol; the token travels as a second subprotocol,
// "base64url.bearer.authorization.k8s.io.<token>", the way the Kubernetes API server accepts
// it from browsers (which cannot set headers on a WebSocket).
const (
	Subprotocol    = "podcopy.shell.v1"
	tokenSubprefix = "base64url.bearer.authorization.k8s.io."
)

// DefaultCommand starts bash when the image has it, else sh, with a UTF-8 locale. It is a
// constant: nothing from the request is part of it.
var DefaultCommand = []string{"/bin/sh", "-c",
	`export LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=xterm-256color; if command -v bash >/dev/null 2>&1; then exec bash -il; fi; exec sh -i`}

// AtDir runs command in directory dir: the directory is an argument of a constant script,
// never part of it.
func AtDir(dir string, command []string) []string {
	return append([]string{"/bin/sh", "-c", `cd -- "$1" || exit 1; shift; exec "$@"`, "podcopy-cd", dir}, command...)
}

// Config configures the shell server.
type Config struct {
	Listen string `mapstructure:"listen"`
	// TLSCertFile and TLSKeyFile, when set, serve HTTPS (a mounted Secret).
	TLSCertFile string `mapstructure:"tlsCertFile"`
	TLSKeyFile  string `mapstructure:"tlsKeyFile"`
	// AllowPlainHTTP serves plain HTTP on a non-loopback address. Bearer tokens then cross
	// the network in the clear; without it such a listener is refused at start.
	AllowPlainHTTP     bool          `mapstructure:"allowPlainHTTP"`
	AllowedOrigins     []string      `mapstructure:"allowedOrigins"`
	MaxSessions        int           `mapstructure:"maxSessions"`
	MaxSessionsPerUser int           `mapstructure:"maxSessionsPerUser"`
	IdleTimeout        time.Duration `mapstructure:"idleTimeout"`
}

// Metrics are the shell's metrics.
type Metrics struct {
	Sessions      prometheus.Gauge
	SessionsTotal *prometheus.CounterVec
}

// NewMetrics registers the shell metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podcopy_shell_sessions", Help: "Web shell sessions open now."}),
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podcopy_shell_sessions_total",
			Help: "Web shell sessions by result (ended, idle, shutdown, failed, unauthenticated, forbidden, limited, bad_request)."}, []string{"result"}),
	}
	reg.MustRegister(m.Sessions, m.SessionsTotal)
	return m
}

// Server serves the page and the sessions.
type Server struct {
	Config        Config
	Authn         Authenticator
	Authz         Authorizer
	Executors     ExecutorFactory
	DefaultTarget func(ctx context.Context) (exec.Target, error)
	Metrics       *Metrics
	Log           logr.Logger
	// Mount, when set, adds routes to the server's (the evidence console's): they share
	// its listener, TLS, sign-in and Origin rules (Authenticate, OriginAllowed).
	Mount func(mux *http.ServeMux)

	mu      sync.Mutex
	closed  bool
	total   int
	perUser map[string]int
	base    context.Context
	wg      sync.WaitGroup
	// failures counts failed sign-ins per remote address (rate limit before any upgrade).
	failures failureLimiter
	// known holds tokens that signed in; reviews bounds TokenReviews of new ones.
	known       knownTokens
	reviews     *rate.Limiter
	reviewsOnce sync.Once
}

// Serve runs the server on l until ctx ends, then ends every session and waits for them.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	sctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.base = sctx
	s.mu.Unlock()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.mu.Lock()
	s.closed = true // no new sessions; wg.Add happens under mu only while open
	s.mu.Unlock()
	cancel(errShutdown)
	shut, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shut) // hijacked WebSockets are ended by cancel above
	s.wg.Wait()
	if err == nil {
		err = <-errc
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on Config.Listen.
// ListenAndServe serves HTTPS with the configured certificate, or plain HTTP on a loopback
// address (reached with kubectl port-forward), or plain HTTP anywhere only when
// AllowPlainHTTP says so: users sign in with bearer tokens.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := s.Config.CheckTransport(); err != nil {
		return err
	}
	l, err := net.Listen("tcp", s.Config.Listen)
	if err != nil {
		return err
	}
	if s.Config.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.Config.TLSCertFile, s.Config.TLSKeyFile)
		if err != nil {
			_ = l.Close()
			return fmt.Errorf("shell TLS: %w", err)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	return s.Serve(ctx, l)
}

// CheckTransport refuses a listener that would carry bearer tokens in the clear over a
// network: plain HTTP on a non-loopback address without AllowPlainHTTP.
func (c Config) CheckTransport() error {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("shell: set both tlsCertFile and tlsKeyFile, or neither")
	}
	if c.TLSCertFile != "" || c.AllowPlainHTTP {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("shell.listen %q: %w", c.Listen, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("shell: refusing to serve bearer tokens over plain HTTP on %q; set shell.tlsCertFile and shell.tlsKeyFile "+
		"(a Secret), or listen on 127.0.0.1 and reach it with kubectl port-forward, or set shell.allowPlainHTTP", c.Listen)
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /", securityHeaders(http.FileServerFS(static)))
	mux.HandleFunc("GET /api/v1/default", s.defaultTarget)
	mux.HandleFunc("GET /api/v1/session", s.session)
	if s.Mount != nil {
		s.Mount(mux)
	}
	return mux
}

// Authenticate signs in the request's bearer token (Authorization header) as a session's
// sign-in does: a cached TokenReview, failed sign-ins rate-limited per address. On failure
// it returns the HTTP status to answer with.
func (s *Server) Authenticate(r *http.Request) (User, string, int, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return User{}, "", http.StatusUnauthorized, errors.New("no token: sign in with your Kubernetes bearer token")
	}
	host := remoteHost(r)
	if _, known := s.known.get(token, time.Now()); !known && s.failures.limited(host, time.Now()) {
		return User{}, "", http.StatusTooManyRequests, errors.New("too many failed sign-ins from this address; wait a minute")
	}
	u, err := s.authenticate(r.Context(), token)
	if errors.Is(err, errReviewsBusy) {
		return User{}, "", http.StatusTooManyRequests, err
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		s.failures.add(host, time.Now())
		return User{}, "", http.StatusUnauthorized, err
	}
	if err != nil {
		return User{}, "", http.StatusBadGateway, err
	}
	return u, token, 0, nil
}

// OriginAllowed reports whether a browser request's Origin is this server or one of
// AllowedOrigins (a request without Origin is not from a browser page).
func (s *Server) OriginAllowed(r *http.Request) bool {
	return r.Header.Get("Origin") == "" || s.checkOrigin(r)
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// defaultTarget tells an authenticated page which container to open by default.
func (s *Server) defaultTarget(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}
	if _, err := s.authenticate(r.Context(), token); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	t, err := s.DefaultTarget(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"namespace": t.Namespace, "pod": t.Pod, "container": t.Container})
}

func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return u.Host == r.Host || slices.Contains(s.Config.AllowedOrigins, origin)
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	if !s.checkOrigin(r) {
		s.count("forbidden")
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	token := ""
	for _, p := range websocket.Subprotocols(r) {
		if enc, ok := strings.CutPrefix(p, tokenSubprefix); ok {
			if b, err := base64.RawURLEncoding.DecodeString(enc); err == nil {
				token = string(b)
			}
		}
	}
	host := remoteHost(r)
	if _, known := s.known.get(token, time.Now()); !known && s.failures.limited(host, time.Now()) {
		s.count("limited")
		http.Error(w, "too many failed sign-ins from this address; wait a minute", http.StatusTooManyRequests)
		return
	}
	s.mu.Lock()
	base := s.base
	s.mu.Unlock()
	if base == nil {
		base = context.Background()
	}
	// The user is authenticated and authorized before the WebSocket is upgraded: a client
	// without a valid token never holds a WebSocket, and its failures are rate-limited.
	var refused *RefusedError
	var user User
	var target exec.Target
	var command []string
	err := base.Err()
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		user, target, command, err = s.admit(ctx, r.URL.Query(), token)
		cancel()
		if errors.Is(err, errReviewsBusy) {
			s.count("limited")
			http.Error(w, err.Error(), http.StatusTooManyRequests)
			return
		}
		if errors.As(err, &refused) && refused.Code == CloseUnauthenticated {
			s.failures.add(host, time.Now())
			s.count("unauthenticated")
			s.Log.Info("shell session refused", "reason", refused.Reason, "remote", r.RemoteAddr)
			http.Error(w, refused.Reason, http.StatusUnauthorized)
			return
		}
	}
	up := websocket.Upgrader{Subprotocols: []string{Subprotocol}, CheckOrigin: s.checkOrigin, ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}
	ws, uerr := up.Upgrade(w, r, nil)
	if uerr != nil {
		if err == nil {
			s.release(user.Name)
		}
		return
	}
	ws.SetReadLimit(1 << 20)
	c := &conn{ws: ws, activity: func() {}}
	if base.Err() != nil {
		if err == nil {
			s.release(user.Name)
		}
		c.close(CloseShutdown, errShutdown.Error())
		return
	}
	if errors.As(err, &refused) {
		s.count(map[int]string{CloseForbidden: "forbidden", CloseTooMany: "limited",
			CloseBadRequest: "bad_request", CloseShutdown: "shutdown"}[refused.Code])
		s.Log.Info("shell session refused", "user", user.Name, "reason", refused.Reason, "remote", r.RemoteAddr)
		c.send(message{Type: "error", Message: refused.Reason})
		c.close(refused.Code, refused.Reason)
		return
	}
	if err != nil {
		s.count("failed")
		c.send(message{Type: "error", Message: err.Error()})
		c.close(CloseFailed, "internal error")
		return
	}
	defer s.release(user.Name)
	ex, err := s.Executors(token)
	if err != nil {
		s.count("failed")
		c.close(CloseFailed, err.Error())
		return
	}
	start := time.Now()
	s.Metrics.Sessions.Inc()
	code, reason := c.run(base, ex, target, command, s.Config.IdleTimeout)
	s.Metrics.Sessions.Dec()
	s.count(resultFor(code))
	s.Log.Info("shell session", "user", user.Name, "groups", user.Groups, "namespace", target.Namespace, "pod", target.Pod,
		"container", target.Container, "command", command, "start", start.UTC().Format(time.RFC3339), "end", time.Now().UTC().Format(time.RFC3339),
		"bytesIn", c.in.Load(), "bytesOut", c.out.Load(), "result", reason, "remote", r.RemoteAddr)
}

func resultFor(code int) string {
	switch code {
	case CloseEnded:
		return "ended"
	case CloseIdle:
		return "idle"
	case CloseShutdown:
		return "shutdown"
	}
	return "failed"
}

func (s *Server) count(result string) { s.Metrics.SessionsTotal.WithLabelValues(result).Inc() }

// admit authenticates, authorizes and reserves a session slot. On success the caller must
// release the slot.
func (s *Server) admit(ctx context.Context, q url.Values, token string) (User, exec.Target, []string, error) {
	if token == "" {
		return User{}, exec.Target{}, nil, &RefusedError{Code: CloseUnauthenticated, Reason: "no token: sign in with your Kubernetes bearer token"}
	}
	user, err := s.authenticate(ctx, token)
	if err != nil {
		var refused *RefusedError
		if errors.As(err, &refused) {
			return user, exec.Target{}, nil, err
		}
		return user, exec.Target{}, nil, &RefusedError{Code: CloseUnauthenticated, Reason: err.Error()}
	}
	target := exec.Target{Namespace: q.Get("namespace"), Pod: q.Get("pod"), Container: q.Get("container")}
	if target.Pod == "" {
		if target, err = s.DefaultTarget(ctx); err != nil {
			return user, target, nil, err
		}
	}
	for _, part := range []string{target.Namespace, target.Pod} {
		if errs := validation.IsDNS1123Subdomain(part); len(errs) > 0 {
			return user, target, nil, &RefusedError{Code: CloseBadRequest, Reason: "invalid namespace or pod name " + strconv.Quote(part)}
		}
	}
	command := DefaultCommand
	if cmd := q["command"]; len(cmd) > 0 && cmd[0] != "" {
		command = cmd // an argv, run without a shell
	}
	if dir := q.Get("dir"); dir != "" {
		if err := pathname.Canonical(dir); err != nil {
			return user, target, nil, &RefusedError{Code: CloseBadRequest, Reason: "dir: " + err.Error()}
		}
		command = AtDir(dir, command)
	}
	ok, why, err := s.Authz.CanExec(ctx, user, target.Namespace, target.Pod)
	if err != nil {
		return user, target, nil, err
	}
	if !ok {
		msg := user.Name + " may not create pods/exec on " + target.Namespace + "/" + target.Pod
		if why != "" {
			msg += ": " + why
		}
		return user, target, nil, &RefusedError{Code: CloseForbidden, Reason: msg}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser == nil {
		s.perUser = map[string]int{}
	}
	if s.closed {
		return user, target, nil, &RefusedError{Code: CloseShutdown, Reason: errShutdown.Error()}
	}
	if s.total >= s.Config.MaxSessions {
		return user, target, nil, &RefusedError{Code: CloseTooMany, Reason: "too many shell sessions open (" + itoa(s.Config.MaxSessions) + "); close one and retry"}
	}
	if s.perUser[user.Name] >= s.Config.MaxSessionsPerUser {
		return user, target, nil, &RefusedError{Code: CloseTooMany, Reason: "you have " + itoa(s.perUser[user.Name]) + " shell sessions open, the most allowed; close one and retry"}
	}
	s.total++
	s.perUser[user.Name]++
	s.wg.Add(1)
	return user, target, command, nil
}

func (s *Server) release(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.perUser[user]--; s.perUser[user] <= 0 {
		delete(s.perUser, user)
	}
	s.wg.Done()
}

func itoa(n int) string { return strconv.Itoa(n) }

// explain turns an exec failure into a message for the person at the terminal.
func explain(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "no such file or directory") || strings.Contains(msg, "executable file not found") {
		return "this container has no shell at /bin/sh (or the command was not found): enter a command that exists in the image; " + msg
	}
	return msg
}
