package exec

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	criremote "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/podcopy/podcopy/pkg/failure"
)

func TestMain(m *testing.M) {
	// spdystream's shutdown waits out its own timer after the connection has closed, and
	// client-go's WebSocket heartbeat notices the closed connection at its next ping (5s).
	// When an exec's context ends while client-go is still creating its SPDY streams, the
	// goroutine StreamWithContext started stays in spdystream's Stream.WaitTimeout, which
	// selects only on the reply and its 30s timer (closing the connection does not end it;
	// seen on a loaded machine). All end on their own, so goleak waits up to 35s for them
	// instead of ignoring them: a goroutine that outlives that is a leak.
	code := m.Run()
	for deadline := time.Now().Add(35 * time.Second); code == 0; time.Sleep(100 * time.Millisecond) {
		err := goleak.Find()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// container is an in-process stand-in for a container runtime behind the kubelet's real
// streaming server code (cri-streaming ServeExec). stop ends its commands when a test ends,
// as a runtime would kill the process.
type container struct{ stop chan struct{} }

func (c container) ExecInContainer(ctx context.Context, name, uid, ctr string, cmd []string, in io.Reader, out, errw io.WriteCloser,
	tty bool, resize <-chan criremote.TerminalSize, timeout time.Duration) error {
	switch cmd[0] {
	case "cat": // copy stdin to stdout until stdin's EOF (the half-close)
		_, err := io.Copy(out, in)
		return err
	case "fail":
		fmt.Fprint(errw, strings.Repeat("x", 10000)+"tar: /var/log/nope: Cannot stat")
		return utilexec.CodeExitError{Err: errors.New("exit 2"), Code: 2}
	case "sizes": // report two terminal sizes
		for range 2 {
			select {
			case s := <-resize:
				fmt.Fprintf(out, "%dx%d\n", s.Width, s.Height)
			case <-c.stop:
				return nil
			}
		}
		return nil
	case "tar": // what containerd and runc answer for a distroless image
		return errors.New(`failed to exec in container: failed to start exec "c82e": OCI runtime exec failed: exec failed: unable to start container process: exec: "tar": executable file not found in $PATH`)
	case "block":
		select {
		case <-ctx.Done():
		case <-c.stop:
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", cmd[0])
}

// apiServer serves /api/v1/namespaces/*/pods/*/exec: SPDY straight to the kubelet code, and
// WebSocket v5 through the API server's real stream translator to that same code over SPDY.
func apiServer(t *testing.T) *rest.Config {
	t.Helper()
	ctr := container{stop: make(chan struct{})}
	kubelet := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		opts := &criremote.Options{Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true", Stderr: q.Get("stderr") == "true", TTY: q.Get("tty") == "true"}
		criremote.ServeExec(w, r, ctr, "pod", "uid", q.Get("container"), q["command"], opts, time.Minute, 10*time.Second,
			[]string{"v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"})
	})
	backend := httptest.NewServer(kubelet)
	t.Cleanup(backend.Close)
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/exec") {
			http.NotFound(w, r)
			return
		}
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			q := r.URL.Query()
			loc, _ := url.Parse(backend.URL + r.URL.Path + "?" + r.URL.RawQuery)
			proxy.NewStreamTranslatorHandler(loc, nil, 0, proxy.Options{Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true",
				Stderr: q.Get("stderr") == "true", Tty: q.Get("tty") == "true"}).ServeHTTP(w, r)
			return
		}
		kubelet.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	t.Cleanup(func() { close(ctr.stop) })
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw})
	return &rest.Config{Host: front.URL, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
}

func remote(t *testing.T, transport Transport) *Remote {
	t.Helper()
	cfg := apiServer(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return NewRemote(cfg, cs.CoreV1().RESTClient(), transport)
}

var target = Target{Namespace: "ns", Pod: "pod", Container: "c"}

func TestExecStdinRoundTrip(t *testing.T) {
	for _, tr := range []Transport{TransportSPDY, TransportWebSocket, TransportAuto} {
		t.Run(string(tr), func(t *testing.T) {
			r := remote(t, tr)
			data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
			var out bytes.Buffer
			if err := r.Exec(t.Context(), Request{Target: target, Command: []string{"cat"}, Stdin: bytes.NewReader(data), Stdout: &out}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("got %d bytes back, want %d", out.Len(), len(data))
			}
		})
	}
}

func TestExecExitError(t *testing.T) {
	for _, tr := range []Transport{TransportSPDY, TransportWebSocket} {
		t.Run(string(tr), func(t *testing.T) {
			r := remote(t, tr)
			var stderr bytes.Buffer
			err := r.Exec(t.Context(), Request{Target: target, Command: []string{"fail"}, Stdout: io.Discard, Stderr: &stderr})
			var exit *ExitError
			if !errors.As(err, &exit) || exit.Code != 2 {
				t.Fatalf("err = %v, want ExitError code 2", err)
			}
			if len(exit.Stderr) > StderrTail || !strings.HasSuffix(exit.Stderr, "Cannot stat") {
				t.Fatalf("stderr tail %d bytes: ...%q", len(exit.Stderr), exit.Stderr[max(0, len(exit.Stderr)-40):])
			}
			if stderr.Len() != 10000+len("tar: /var/log/nope: Cannot stat") {
				t.Fatalf("caller's stderr got %d bytes", stderr.Len())
			}
		})
	}
}

// TestExecMissingCommand: a command the container lacks arrives as an API error, not an
// exit code, and is recognised as such (podcopy/source=auto falls back to the helper on it).
func TestExecMissingCommand(t *testing.T) {
	for _, tr := range []Transport{TransportSPDY, TransportWebSocket} {
		t.Run(string(tr), func(t *testing.T) {
			err := remote(t, tr).Exec(t.Context(), Request{Target: target, Command: []string{"tar", "-c"}, Stdout: io.Discard})
			var missing *MissingCommandError
			if !errors.As(err, &missing) || missing.Command != "tar" {
				t.Fatalf("err = %v, want MissingCommandError for tar", err)
			}
			var exit *ExitError
			if errors.As(err, &exit) {
				t.Fatalf("err = %v is also an exit", err)
			}
		})
	}
}

// sizes is a resize queue that ends: Next returns nil once closed.
type sizes struct{ ch chan TerminalSize }

func (s sizes) Next() *TerminalSize {
	sz, ok := <-s.ch
	if !ok {
		return nil
	}
	return &sz
}

func TestExecTTYResize(t *testing.T) {
	for _, tr := range []Transport{TransportSPDY, TransportWebSocket} {
		t.Run(string(tr), func(t *testing.T) {
			r := remote(t, tr)
			q := sizes{ch: make(chan TerminalSize, 2)}
			q.ch <- TerminalSize{Width: 80, Height: 24}
			q.ch <- TerminalSize{Width: 120, Height: 40}
			close(q.ch)
			pr, pw := io.Pipe()
			defer pw.Close()
			var out bytes.Buffer
			if err := r.Exec(t.Context(), Request{Target: target, Command: []string{"sizes"}, Stdin: pr, Stdout: &out, TTY: true, Resize: q}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "80x24") || !strings.Contains(out.String(), "120x40") {
				t.Fatalf("output %q", out.String())
			}
		})
	}
}

func TestExecCancel(t *testing.T) {
	for _, tr := range []Transport{TransportSPDY, TransportWebSocket} {
		t.Run(string(tr), func(t *testing.T) {
			r := remote(t, tr)
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			var err error
			wg.Go(func() { err = r.Exec(ctx, Request{Target: target, Command: []string{"block"}, Stdout: io.Discard}) })
			time.Sleep(100 * time.Millisecond) // let the stream open; the assertion does not depend on it
			cancel()
			wg.Wait()
			if err == nil || !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		})
	}
}

func TestParseTransport(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"auto", "spdy", "websocket"} {
		if _, err := ParseTransport(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseTransport("http2"); err == nil {
		t.Error("unknown transport accepted")
	}
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	tb := &tailBuffer{max: 5}
	for _, s := range []string{"ab", "cdef", "g"} {
		_, _ = tb.Write([]byte(s))
	}
	if tb.String() != "cdefg" {
		t.Fatalf("tail %q", tb.String())
	}
}

type failingExecutor struct{ err error }

func (f failingExecutor) Stream(remotecommand.StreamOptions) error { return f.err }
func (f failingExecutor) StreamWithContext(context.Context, remotecommand.StreamOptions) error {
	return f.err
}

// TestExecNodeUnreachable: the API server's answer when it cannot dial the pod's kubelet is
// a NodeUnreachable failure (retried), other errors are not.
func TestExecNodeUnreachable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  string
		want string
	}{
		{"error dialing backend: dial tcp 198.18.0.2:10250: connect: connection refused", failure.NodeUnreachable},
		{"connection reset by peer", failure.Failed},
	} {
		err := Stream(t.Context(), failingExecutor{errors.New(tt.err)}, Request{Target: target, Command: []string{"true"}})
		if got := failure.Reason(err); got != tt.want || failure.Permanent(got) {
			t.Errorf("%q: reason %s, want %s (not permanent)", tt.err, got, tt.want)
		}
	}
}
