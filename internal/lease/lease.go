// Package lease runs cluster-wide chores (the janitor: the staging sweep and retention) on
// one agent at a time, under a coordination.k8s.io Lease (client-go leader election).
//
// Every agent of the DaemonSet is a candidate, so a plain election would have every
// non-holder poll the Lease every RetryPeriod: at 5,000 nodes, thousands of quorum reads a
// second of one object, forever (docs/scale.md). Here a non-holder watches the Lease instead
// (one watch, served from the API server's watch cache: no request while the holder renews)
// and campaigns, with client-go's election and its guarantees, only once the Lease looks
// free: absent, released, or not renewed for StaleAfter. A campaign that sees another
// agent win, or that does not win within CampaignFor, goes back to watching.
package lease

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"
)

// Timings of the election (client-go's defaults for controllers): a holder that stops
// renewing is replaced within LeaseDuration.
const (
	LeaseDuration = 15 * time.Second
	RenewDeadline = 10 * time.Second
	RetryPeriod   = 2 * time.Second

	// StaleAfter is how long a non-holder watches a Lease go unrenewed (the holder renews it
	// every RetryPeriod) before it campaigns.
	StaleAfter = 3 * RetryPeriod
	// CampaignFor bounds a campaign that neither wins nor sees another agent win (a holder
	// that came back): then the agent goes back to watching.
	CampaignFor = 2*LeaseDuration + RenewDeadline
)

// Timings are an election's durations. client-go's election runs on its own (real) clock,
// so tests shorten them rather than fake them.
type Timings struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultTimings are client-go's defaults for controllers.
var DefaultTimings = Timings{LeaseDuration: LeaseDuration, RenewDeadline: RenewDeadline, RetryPeriod: RetryPeriod}

// StaleAfter is how long a non-holder watches a Lease go unrenewed before it campaigns.
func (t Timings) StaleAfter() time.Duration { return 3 * t.RetryPeriod }

// CampaignFor bounds a campaign that neither wins nor sees another agent win.
func (t Timings) CampaignFor() time.Duration { return 2*t.LeaseDuration + t.RenewDeadline }

// Chore runs fn while this process holds Lease Name in Namespace, as Identity; Holder is
// set to 1 while it does (podcopy_janitor_leader).
type Chore struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	Identity  string
	Holder    prometheus.Gauge
	// Timings are the election's (DefaultTimings when zero).
	Timings Timings
	// Clock is the gate's time: how long the Lease went unrenewed, and when a campaign is
	// given up (the real clock when nil; tests use k8s.io/utils/clock/testing's fake).
	Clock clock.WithTickerAndDelayedExecution
}

func (c Chore) timings() Timings {
	if c.Timings == (Timings{}) {
		return DefaultTimings
	}
	return c.Timings
}

func (c Chore) clock() clock.WithTickerAndDelayedExecution {
	if c.Clock != nil {
		return c.Clock
	}
	return clock.RealClock{}
}

// Run campaigns until ctx ends, running fn (with a context cancelled when the Lease is lost)
// each time it wins. When the Lease cannot be used at all (no right to read it), fn runs
// without one: the chores are safe to run twice, one at a time is an economy, not a need.
func (c Chore) Run(ctx context.Context, fn func(context.Context) error) error {
	log := logr.FromContextOrDiscard(ctx).WithName("lease").WithValues("lease", c.Namespace+"/"+c.Name, "identity", c.Identity)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := c.Client.CoordinationV1().Leases(c.Namespace).Get(pctx, c.Name, metav1.GetOptions{})
	cancel()
	if apierrors.IsForbidden(err) {
		log.Info("no right to the janitor's Lease; running the janitor without one (every agent sweeps)", "error", err.Error())
		c.Holder.Set(1)
		defer c.Holder.Set(0)
		return fn(ctx)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Name},
		Client:     c.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.Identity},
	}
	tm := c.timings()
	gate, stop := c.watch(ctx, log)
	defer stop()
	for ctx.Err() == nil {
		stale := ""
		if gate != nil {
			var ok bool
			if stale, ok = gate.free(ctx); !ok {
				return nil // ctx ended
			}
		}
		cctx, cancel := context.WithCancel(ctx)
		// client-go starts OnStartedLeading in a goroutine of its own and does not wait for
		// it; it only hands over the leading context here, and fn runs in this goroutine.
		leading := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: tm.LeaseDuration, RenewDeadline: tm.RenewDeadline, RetryPeriod: tm.RetryPeriod,
			ReleaseOnCancel: true, Name: c.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				// Another agent won (not the stale holder the gate saw go quiet): stop
				// campaigning and watch again. client-go calls this in a goroutine of its own.
				OnNewLeader: func(id string) {
					if gate != nil && id != c.Identity && id != stale {
						cancel()
					}
				},
				OnStartedLeading: func(lctx context.Context) { leading <- lctx },
				OnStoppedLeading: func() {
					c.Holder.Set(0)
					log.Info("not holding the janitor's Lease")
				},
			},
		})
		if err != nil {
			cancel()
			return err
		}
		giveUp := c.clock().AfterFunc(tm.CampaignFor(), func() {
			if gate != nil && !le.IsLeader() {
				cancel()
			}
		})
		ran := make(chan struct{})
		go func() { // owned: waited for below
			defer close(ran)
			le.Run(cctx) // returns when the Lease is lost, the campaign is given up, or ctx ends
		}()
		select {
		case lctx := <-leading: // lctx ends when the Lease is lost
			c.Holder.Set(1)
			log.Info("holding the janitor's Lease")
			if err := fn(lctx); err != nil {
				log.Error(err, "janitor")
			}
		case <-ran:
		}
		<-ran
		giveUp.Stop()
		cancel()
	}
	return nil
}
