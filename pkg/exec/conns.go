package exec

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	httpstreamspdy "k8s.io/apimachinery/pkg/util/httpstream/spdy" //nolint:staticcheck // client-go 0.37's Upgrader still names this package's Connection type
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
}

func (c *conns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
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
