package exec

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A proxy that refuses the tunnel, or speaks out of turn, fails the dial with its reason;
// one that opens it yields the tunnel.
func TestConnectThrough(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer string
		want   string
	}{
		{"refused", "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", "refused the tunnel to apiserver:6443: 407"},
		{"talks first", "HTTP/1.1 200 OK\r\n\r\nextra", "sent data after its CONNECT response"},
		{"opened", "HTTP/1.1 200 Connection established\r\n\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var auth string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				auth = r.Header.Get("Proxy-Authorization")
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				_, _ = conn.Write([]byte(tc.answer))
				time.Sleep(50 * time.Millisecond)
				_ = conn.Close()
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL)
			u.User = url.UserPassword("alice", "secret")
			conn, err := connectThrough(t.Context(), &net.Dialer{}, u, "apiserver:6443")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				_ = conn.Close()
				if auth != "Basic YWxpY2U6c2VjcmV0" {
					t.Fatalf("Proxy-Authorization %q", auth)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
				t.Fatalf("err = %v, want %q (and no password)", err, tc.want)
			}
		})
	}
}
