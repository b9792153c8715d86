// Package sweep removes staging directories that collections cut off mid-way left in the
// analysis pods (SPEC §3 destination.staleAfter): on start and periodically. Complete
// collections are never touched.
package sweep

import (
	"bufio"
	"bytes"
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/ship"
)

// Sweeper removes stale staging directories below Dir in every analysis pod.
type Sweeper struct {
	Exec exec.Executor
	// Targets lists the analysis pods.
	Targets func(ctx context.Context) ([]exec.Target, error)
	Dir     string
	After   time.Duration
	Removed prometheus.Counter
}

// Run sweeps now and then every After/2 (between one and ten minutes) until ctx ends.
func (s Sweeper) Run(ctx context.Context) error {
	every := min(max(s.After/2, time.Minute), 10*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.Once(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Once sweeps every analysis pod and returns how many directories it removed.
func (s Sweeper) Once(ctx context.Context) int {
	log := logr.FromContextOrDiscard(ctx).WithName("sweep")
	targets, err := s.Targets(ctx)
	if err != nil {
		log.Error(err, "listing analysis pods")
		return 0
	}
	minutes := int(s.After.Minutes())
	n := 0
	for _, t := range targets {
		var out bytes.Buffer
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := s.Exec.Exec(cctx, exec.Request{Target: t, Command: ship.StaleCommand(s.Dir, minutes), Stdout: &out})
		cancel()
		if err != nil {
			log.Error(err, "removing stale staging directories", "destination", t.String())
		}
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			n++
			s.Removed.Inc()
			log.Info("removed a stale staging directory", "destination", t.String(), "path", sc.Text())
		}
	}
	return n
}
