package shell

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Failed sign-ins allowed per remote address per window before it gets 429s.
const (
	maxFailures   = 10
	failureWindow = time.Minute
	maxTracked    = 4096 // addresses remembered at most (bounded memory)
)

// failureLimiter counts failed sign-ins per remote address in a sliding window.
type failureLimiter struct {
	mu   sync.Mutex
	seen map[string][]time.Time
}

func (f *failureLimiter) add(host string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string][]time.Time{}
	}
	if len(f.seen) >= maxTracked {
		for h, ts := range f.seen { // drop what has aged out; if nothing has, forget all
			if len(recent(ts, now)) == 0 {
				delete(f.seen, h)
			}
		}
		if len(f.seen) >= maxTracked {
			f.seen = map[string][]time.Time{}
		}
	}
	f.seen[host] = append(recent(f.seen[host], now), now)
}

func (f *failureLimiter) limited(host string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ts := recent(f.seen[host], now)
	if f.seen != nil {
		f.seen[host] = ts
		if len(ts) == 0 {
			delete(f.seen, host)
		}
	}
	return len(ts) >= maxFailures
}

func recent(ts []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > failureWindow {
		i++
	}
	return ts[i:]
}

// remoteHost is the client's address without its port.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
