package exec

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	httpstreamspdy "k8s.io/apimachinery/pkg/util/httpstream/spdy" //nolint:staticcheck // client-go 0.37's Upgrader still names this package's Connection type
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// conns holds the network connections one exec dialed, so that cancelling the exec closes
// them. client-go's SPDY executor returns on cancellation but then closes its SPDY
// connection, which resets each stream under the framer's lock; when a stdin write is
// blocked because the far side stopped reading (a destination whose tar died on a full disk),
// that write holds the lock forever and the exec never returns (measured on the local
// cluster: a collection hung until the analysis pod was deleted). Closing the TCP connection
// fails the blocked write and lets the close finish.
type conns struct {
	mu     sync.Mutex
	list   []net.Conn
	closed bool
	// proxy chooses the HTTP proxy for an address (nil, or a nil URL: dial directly).
	proxy func(*http.Request) (*url.URL, error)
}

func (c *conns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	var proxyURL *url.URL
	if c.proxy != nil {
		var err error
		if proxyURL, err = c.proxy(&http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "https", Host: addr}, Host: addr}); err != nil {
			return nil, err
		}
	}
	var conn net.Conn
	var err error
	if proxyURL == nil {
		conn, err = d.DialContext(ctx, network, addr)
	} else {
		conn, err = connectThrough(ctx, &d, proxyURL, addr)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = conn.Close()
		return nil, context.Canceled
	}
	c.list = append(c.list, conn)
	return conn, nil
}

func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, conn := range c.list {
		_ = conn.Close()
	}
	c.list = nil
}

// closeOnCancel closes c's connections when ctx ends before done is closed.
func (c *conns) closeOnCancel(ctx context.Context, done <-chan struct{}) {
	select {
	case <-ctx.Done():
		c.closeAll()
	case <-done:
	}
}

// spdyExecutor is remotecommand's SPDY executor over connections dialed through c, with
// config's TLS settings (verification always on: no TLS config means the system roots).
func spdyExecutor(config *rest.Config, u *url.URL, c *conns) (remotecommand.Executor, error) {
	tlsConfig, err := rest.TLSConfigFor(config)
	if err != nil {
		return nil, err
	}
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	// The upgrade goes through the kubeconfig's proxy-url, else HTTPS_PROXY/NO_PROXY, as
	// client-go's own transports do: the SPDY round tripper dials a supplied transport's
	// dialer directly, so the dialer itself tunnels (CONNECT).
	proxy := config.Proxy
	if proxy == nil {
		proxy = utilnet.NewProxierWithNoProxyCIDR(http.ProxyFromEnvironment)
	}
	c.proxy = proxy
	upgrade := &http.Transport{DialContext: c.dial, TLSClientConfig: tlsConfig}
	rt, err := httpstreamspdy.NewRoundTripperWithConfig(httpstreamspdy.RoundTripperConfig{
		PingPeriod: 5 * time.Second, UpgradeTransport: upgrade,
	})
	if err != nil {
		return nil, err
	}
	wrapper, err := rest.HTTPWrappersForConfig(config, rt)
	if err != nil {
		return nil, err
	}
	return remotecommand.NewSPDYExecutorForTransports(wrapper, rt, http.MethodPost, u)
}

// connectThrough opens a tunnel to addr through the HTTP(S) proxy at proxyURL (CONNECT),
// with the proxy's credentials when the URL carries them.
func connectThrough(ctx context.Context, d *net.Dialer, proxyURL *url.URL, addr string) (net.Conn, error) {
	port := proxyURL.Port()
	if port == "" {
		port = "80"
		if proxyURL.Scheme == "https" {
			port = "443"
		}
	}
	host := net.JoinHostPort(proxyURL.Hostname(), port)
	var conn net.Conn
	var err error
	switch proxyURL.Scheme {
	case "http", "":
		conn, err = d.DialContext(ctx, "tcp", host)
	case "https":
		td := tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: proxyURL.Hostname(), MinVersion: tls.VersionTLS12}}
		conn, err = td.DialContext(ctx, "tcp", host)
	default:
		return nil, fmt.Errorf("proxy %s: scheme %q is not supported for exec (use http or https)", proxyURL.Redacted(), proxyURL.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("dialing proxy %s: %w", proxyURL.Redacted(), err)
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := proxyURL.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s: %w", proxyURL.Redacted(), err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s: %w", proxyURL.Redacted(), err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s refused the tunnel to %s: %s", proxyURL.Redacted(), addr, resp.Status)
	}
	if br.Buffered() > 0 { // the proxy must not speak before the tunnel's TLS handshake
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s sent data after its CONNECT response", proxyURL.Redacted())
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
