// Package lease runs cluster-wide chores (the janitor: the staging sweep and retention) on
// one agent at a time, under a coordination.k8s.io Lease (client-go leader election).
package lease

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Timings of the election (client-go's defaults for controllers): a holder that stops
// renewing is replaced within LeaseDuration.
const (
	LeaseDuration = 15 * time.Second
	RenewDeadline = 10 * time.Second
	RetryPeriod   = 2 * time.Second
)

// Chore runs fn while this process holds Lease Name in Namespace, as Identity; Holder is
// set to 1 while it does (podcopy_janitor_leader).
type Chore struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	Identity  string
	Holder    prometheus.Gauge
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
	var running sync.WaitGroup // fn's runs: client-go starts them and does not wait for them
	defer running.Wait()
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: LeaseDuration, RenewDeadline: RenewDeadline, RetryPeriod: RetryPeriod,
			ReleaseOnCancel: true, Name: c.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					running.Add(1)
					defer running.Done()
					c.Holder.Set(1)
					log.Info("holding the janitor's Lease")
					if err := fn(lctx); err != nil {
						log.Error(err, "janitor")
					}
				},
				OnStoppedLeading: func() {
					c.Holder.Set(0)
					log.Info("not holding the janitor's Lease")
				},
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx) // returns when the Lease is lost or ctx ends
		running.Wait()
	}
	return nil
}
