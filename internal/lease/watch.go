package lease

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// gate watches the Lease and says when it looks free.
type gate struct {
	leases  coordlisters.LeaseNamespaceLister
	name    string
	changed chan struct{} // a change was seen (capacity 1: never blocks the informer)
	clock   clock.WithTickerAndDelayedExecution
	timings Timings
}

// watch starts the gate's informer over the one Lease. It returns nil (campaign as a plain
// election: the agent then polls) when the agent may not list and watch Leases (an older
// RBAC) or ctx ends before the informer has synced; stop waits for the informer to end.
func (c Chore) watch(ctx context.Context, log logr.Logger) (*gate, func()) {
	selector := fields.OneTermEqualSelector("metadata.name", c.Name).String()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := c.Client.CoordinationV1().Leases(c.Namespace).List(pctx, metav1.ListOptions{FieldSelector: selector, Limit: 1})
	cancel()
	if err != nil {
		if apierrors.IsForbidden(err) {
			log.Info("no right to watch the janitor's Lease; campaigning by polling it", "error", err.Error())
		}
		return nil, func() {}
	}
	f := informers.NewSharedInformerFactoryWithOptions(c.Client, 0, informers.WithNamespace(c.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = selector }),
		informers.WithTransform(dropManagedFields))
	inf := f.Coordination().V1().Leases()
	g := &gate{leases: inf.Lister().Leases(c.Namespace), name: c.Name, changed: make(chan struct{}, 1), clock: c.clock(), timings: c.timings()}
	signal := func(any) {
		select {
		case g.changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: signal, UpdateFunc: func(_, o any) { signal(o) }, DeleteFunc: signal,
	}); err != nil {
		return nil, func() {}
	}
	wctx, stopInformer := context.WithCancel(ctx)
	f.Start(wctx.Done())
	stop := func() { stopInformer(); f.Shutdown() }
	if !cache.WaitForCacheSync(wctx.Done(), inf.Informer().HasSynced) {
		stop()
		return nil, func() {}
	}
	return g, stop
}

// free blocks until the Lease looks free: absent, released (no holder), or not renewed for
// Timings.StaleAfter. It returns the holder that went quiet ("" for none), and false when ctx
// ended first.
func (g *gate) free(ctx context.Context) (string, bool) {
	seen, since := "", g.clock.Now()
	tick := g.clock.NewTicker(g.timings.RetryPeriod) // staleness grows with time, not with events
	defer tick.Stop()
	for {
		l, err := g.leases.Get(g.name)
		if err != nil { // absent (or unreadable from the cache): nobody holds it
			return "", true
		}
		holder := holderOf(l)
		if holder == "" {
			return "", true
		}
		if mark := holder + " " + renewedAt(l); mark != seen {
			seen, since = mark, g.clock.Now()
		} else if g.clock.Since(since) >= g.timings.StaleAfter() {
			return holder, true
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-g.changed:
		case <-tick.C():
		}
	}
}

// dropManagedFields keeps what the gate reads of the Lease (its spec).
func dropManagedFields(obj any) (any, error) {
	if l, ok := obj.(*coordinationv1.Lease); ok {
		l.ManagedFields = nil
	}
	return obj, nil
}

func holderOf(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func renewedAt(l *coordinationv1.Lease) string {
	if l.Spec.RenewTime == nil {
		return ""
	}
	return l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
}
