// Package sweep is the janitor of the analysis pods: it removes staging directories that
// collections cut off mid-way left (SPEC §3 destination.staleAfter; a collection in flight
// keeps its own fresh), applies retention to published collections (destination.retention),
// and measures a namespace's usage for its quota (destination.quota). Staging in flight and
// follow files are never touched.
package sweep

import (
	"bufio"
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/exec"
)

// maxStaleOutput bounds what the stale sweep prints (one line per directory it removed).
const maxStaleOutput = 16 << 20

// Sweeper removes stale staging directories below Dir in every analysis pod.
type Sweeper struct {
	Exec exec.Executor
	// Targets lists the analysis pods.
	Targets func(ctx context.Context) ([]exec.Target, error)
	Dir     string
	After   time.Duration
	Removed prometheus.Counter
	// Retention is applied on every sweep when enabled; RetentionRemoved counts what it
	// removed.
	Retention        destination.Retention
	RetentionRemoved prometheus.Counter
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Uploads, when set, is the bucket whose multipart uploads older than UploadAge() are
	// aborted on the sweep's cadence, in a loop of its own: no live collection owns one (an attempt ends at
	// policy.deadline and aborts its own); UploadsAborted counts them.
	Uploads        UploadAborter
	UploadAge      func() time.Duration
	UploadsAborted prometheus.Counter
	// Runs counts the rounds (nil: not counted).
	Runs prometheus.Counter
}

// UploadAborter aborts a bucket's multipart uploads started before a time (objstore.Store).
type UploadAborter interface {
	AbortStale(ctx context.Context, before time.Time) (int, error)
}

func (s Sweeper) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Run sweeps now and then every After/2 (between one and ten minutes) until ctx ends. The
// bucket's orphaned uploads are aborted on the same cadence in a loop of their own, so a
// slow bucket never delays the analysis pods' sweep and retention.
func (s Sweeper) Run(ctx context.Context) error {
	every := min(max(s.After/2, time.Minute), 10*time.Minute)
	var g sync.WaitGroup
	if s.Uploads != nil && s.UploadAge != nil {
		g.Go(func() { periodically(ctx, every, s.abortUploads) })
	}
	periodically(ctx, every, func(ctx context.Context) {
		if s.Runs != nil {
			s.Runs.Inc()
		}
		s.Once(ctx)
	})
	g.Wait()
	return nil
}

// periodically runs f now and then every period until ctx ends; a round that overruns the period
// is followed at once by the next.
func periodically(ctx context.Context, period time.Duration, f func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		f(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once sweeps every analysis pod (stale staging, then retention) and returns how many
// staging directories it removed.
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
		out := &exec.Output{Max: maxStaleOutput}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := analysis.Pod{Exec: s.Exec, Target: t}.SweepStale(cctx, s.Dir, minutes, out)
		cancel()
		if err != nil {
			log.Error(err, "removing stale staging directories", "destination", t.String())
		}
		sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
		for sc.Scan() {
			n++
			s.Removed.Inc()
			log.Info("removed a stale staging directory", "destination", t.String(), "path", sc.Text())
		}
		if s.Retention.Enabled() {
			s.retain(ctx, log, t)
		}
	}
	return n
}

// abortUploads aborts the bucket's multipart uploads older than UploadAge().
func (s Sweeper) abortUploads(ctx context.Context) {
	log := logr.FromContextOrDiscard(ctx).WithName("sweep")
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	aborted, err := s.Uploads.AbortStale(actx, s.now().Add(-s.UploadAge()))
	cancel()
	if aborted > 0 {
		s.UploadsAborted.Add(float64(aborted))
		log.Info("aborted orphaned multipart uploads in the bucket", "count", aborted)
	}
	if err != nil {
		log.Error(err, "aborting orphaned multipart uploads in the bucket")
	}
}
