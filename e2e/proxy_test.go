//go:build e2e

package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/podcopy/podcopy/pkg/exec"
)

// connectProxy is a real HTTP CONNECT proxy: it counts the tunnels it opened.
type connectProxy struct {
	tunnels atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

// close ends every tunnel and waits for their copies.
func (p *connectProxy) close() {
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *connectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	upstream, err := net.Dial("tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	client, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = upstream.Close()
		return
	}
	p.tunnels.Add(1)
	p.mu.Lock()
	p.conns = append(p.conns, client, upstream)
	p.mu.Unlock()
	_, _ = client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	p.wg.Add(2)
	go func() { defer p.wg.Done(); _, _ = io.Copy(upstream, client); _ = upstream.Close() }()
	go func() { defer p.wg.Done(); _, _ = io.Copy(client, upstream); _ = client.Close() }()
}

// TestExecThroughProxy (issue 22): with the kubeconfig's proxy-url set, both exec transports
// reach the API server through the proxy (the SPDY upgrade used to dial directly).
func TestExecThroughProxy(t *testing.T) {
	t.Parallel()
	proxy := &connectProxy{}
	srv := httptest.NewServer(proxy)
	defer func() { srv.Close(); proxy.close() }()
	proxyURL, _ := url.Parse(srv.URL)
	target := analysis(t)
	for _, transport := range []exec.Transport{exec.TransportSPDY, exec.TransportWebSocket} {
		c := rest.CopyConfig(cfg)
		c.Proxy = http.ProxyURL(proxyURL)
		before := proxy.tunnels.Load()
		ex := exec.NewRemote(c, client.CoreV1().RESTClient(), transport)
		var out bytes.Buffer
		if err := ex.Exec(t.Context(), exec.Request{Target: target, Command: []string{"echo", "through the proxy"}, Stdout: &out}); err != nil {
			t.Fatalf("%s through a CONNECT proxy: %v", transport, err)
		}
		if strings.TrimSpace(out.String()) != "through the proxy" || proxy.tunnels.Load() == before {
			t.Fatalf("%s: output %q, tunnels through the proxy %d", transport, out.String(), proxy.tunnels.Load()-before)
		}
		t.Logf("%s: %d tunnel(s) through the proxy", transport, proxy.tunnels.Load()-before)
	}
}
