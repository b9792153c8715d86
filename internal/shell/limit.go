package shell

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
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

// Sign-in bounds beside the per-address failure limit (issue 20): a token that signed in is
// remembered (by its SHA-256, for knownTokenTTL) and is neither reviewed again nor held back
// by its address's failures, so clients sharing an address (a port-forward, an ingress) are
// not locked out by one of them guessing; TokenReviews of new tokens are rate-limited for
// the whole server, so no client can flood the API server through the shell.
const (
	knownTokenTTL   = time.Minute
	maxKnownTokens  = 1024
	reviewsPerSec   = 10
	reviewBurst     = 20
	reviewQueueWait = 3 * time.Second
)

// errReviewsBusy: the TokenReview budget is used up; the client should retry.
var errReviewsBusy = errors.New("too many sign-ins right now; retry in a few seconds")

// knownTokens remembers tokens that signed in, by hash, until they expire.
type knownTokens struct {
	mu   sync.Mutex
	seen map[[sha256.Size]byte]knownToken
}

type knownToken struct {
	user    User
	expires time.Time
}

func (k *knownTokens) get(token string, now time.Time) (User, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.seen[sha256.Sum256([]byte(token))]
	if !ok || now.After(e.expires) {
		return User{}, false
	}
	return e.user, true
}

func (k *knownTokens) add(token string, u User, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen == nil || len(k.seen) >= maxKnownTokens {
		k.seen = map[[sha256.Size]byte]knownToken{}
	}
	k.seen[sha256.Sum256([]byte(token))] = knownToken{user: u, expires: now.Add(knownTokenTTL)}
}

// authenticate is Authn.Authenticate behind the known-token cache and the review budget.
func (s *Server) authenticate(ctx context.Context, token string) (User, error) {
	if u, ok := s.known.get(token, time.Now()); ok {
		return u, nil
	}
	s.reviewsOnce.Do(func() { s.reviews = rate.NewLimiter(reviewsPerSec, reviewBurst) })
	wctx, cancel := context.WithTimeout(ctx, reviewQueueWait)
	err := s.reviews.Wait(wctx)
	cancel()
	if err != nil {
		return User{}, errReviewsBusy
	}
	u, err := s.Authn.Authenticate(ctx, token)
	if err == nil {
		s.known.add(token, u, time.Now())
	}
	return u, err
}
