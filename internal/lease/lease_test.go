package lease

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	testclock "k8s.io/utils/clock/testing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast are short election timings: client-go's election runs on the real clock, so the
// tests shorten its durations (a Lease's duration is stored in whole seconds: 3 s).
var fast = Timings{LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 400 * time.Millisecond}

// TestOneHolderRunsTheChore: two agents campaign for the Lease; one runs the chore, and when
// it stops (its context ends, the Lease is released) the other takes over.
func TestOneHolderRunsTheChore(t *testing.T) {
	client := fake.NewClientset()
	started := make(chan string, 4)
	run := func(ctx context.Context, id string, g prometheus.Gauge) chan error {
		done := make(chan error, 1)
		go func() {
			done <- Chore{Client: client, Namespace: "podcopy", Name: "podcopy-janitor", Identity: id, Holder: g, Timings: fast}.Run(ctx, func(ctx context.Context) error {
				started <- id
				<-ctx.Done()
				return nil
			})
		}()
		return done
	}
	ga, gb := prometheus.NewGauge(prometheus.GaugeOpts{Name: "a"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "b"})
	ctxA, stopA := context.WithCancel(t.Context())
	doneA := run(ctxA, "a", ga)
	if got := <-started; got != "a" {
		t.Fatalf("first holder %s", got)
	}
	ctxB, stopB := context.WithCancel(t.Context())
	defer stopB()
	doneB := run(ctxB, "b", gb)
	select {
	case got := <-started:
		t.Fatalf("%s ran the chore while a held the Lease", got)
	case <-time.After(3 * fast.RetryPeriod):
	}
	if testutil.ToFloat64(ga) != 1 || testutil.ToFloat64(gb) != 0 {
		t.Fatalf("gauges a=%v b=%v", testutil.ToFloat64(ga), testutil.ToFloat64(gb))
	}
	stopA() // a stops (released on cancel): b takes over
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-started:
		if got != "b" {
			t.Fatalf("took over: %s", got)
		}
	case <-time.After(fast.LeaseDuration + 5*fast.RetryPeriod):
		t.Fatal("b never took over")
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
}

func TestNoRightToTheLeaseRunsAnyway(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "podcopy-janitor", nil)
	})
	ran := false
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	err := Chore{Client: client, Namespace: "podcopy", Name: "podcopy-janitor", Identity: "x", Holder: g, Timings: fast}.Run(t.Context(), func(context.Context) error {
		ran = testutil.ToFloat64(g) == 1
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("err %v, ran as holder %v", err, ran)
	}
}

// countingClient counts the Lease GETs and updates made through it (an agent's own
// requests; the informer's list and watch are not counted).
type countingClient struct {
	kubernetes.Interface
	gets *atomic.Int64
}

// IsWatchListSemanticsUnSupported passes on what the fake clientset says of itself (its
// watch sends no initial-events bookmark), which embedding the interface would hide.
func (c countingClient) IsWatchListSemanticsUnSupported() bool { return true }

func (c countingClient) CoordinationV1() coordinationv1client.CoordinationV1Interface {
	return countingCoordination{c.Interface.CoordinationV1(), c.gets}
}

type countingCoordination struct {
	coordinationv1client.CoordinationV1Interface
	gets *atomic.Int64
}

func (c countingCoordination) Leases(ns string) coordinationv1client.LeaseInterface {
	return countingLeases{c.CoordinationV1Interface.Leases(ns), c.gets}
}

type countingLeases struct {
	coordinationv1client.LeaseInterface
	gets *atomic.Int64
}

func (l countingLeases) Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error) {
	l.gets.Add(1)
	return l.LeaseInterface.Get(ctx, name, opts)
}

func (l countingLeases) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	l.gets.Add(1)
	return l.LeaseInterface.Update(ctx, lease, opts)
}

// TestNonHoldersWatchInsteadOfPolling: while the holder renews (an update every
// RetryPeriod), a non-holder makes no Lease request beyond its first GET (it watches); a
// plain election would GET every RetryPeriod.
func TestNonHoldersWatchInsteadOfPolling(t *testing.T) {
	client := fake.NewClientset()
	chore := func(id string, gets *atomic.Int64) Chore {
		return Chore{Client: countingClient{client, gets}, Namespace: "podcopy", Name: "podcopy-janitor", Identity: id,
			Holder: prometheus.NewGauge(prometheus.GaugeOpts{Name: id}), Timings: fast}
	}
	var getsA, getsB atomic.Int64
	started := make(chan string, 2)
	hold := func(id string) func(context.Context) error {
		return func(ctx context.Context) error { started <- id; <-ctx.Done(); return nil }
	}
	ctxA, stopA := context.WithCancel(t.Context())
	defer stopA()
	doneA := make(chan error, 1)
	go func() { doneA <- chore("a", &getsA).Run(ctxA, hold("a")) }()
	if got := <-started; got != "a" {
		t.Fatalf("first holder %s", got)
	}
	ctxB, stopB := context.WithCancel(t.Context())
	defer stopB()
	doneB := make(chan error, 1)
	go func() { doneB <- chore("b", &getsB).Run(ctxB, hold("b")) }()
	time.Sleep(3 * fast.StaleAfter()) // a renews 9 times meanwhile
	if n := getsB.Load(); n > 1 {
		t.Fatalf("the non-holder made %d Lease requests in %s while the holder renewed (want at most its first GET)", n, 3*fast.StaleAfter())
	}
	if n := getsA.Load(); n < 5 {
		t.Fatalf("the holder made %d Lease requests: is it renewing?", n)
	}
	stopA() // released on cancel: b sees it at once and takes over
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-started:
		if got != "b" {
			t.Fatalf("took over: %s", got)
		}
	case <-time.After(5 * fast.RetryPeriod):
		t.Fatal("b did not take over a released Lease")
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
}

// TestTakeOverFromAHolderThatDied: a holder that stops renewing without releasing (its node
// is gone) is replaced once its Lease has gone unrenewed for StaleAfter plus client-go's own
// LeaseDuration, by one of the agents watching.
func TestTakeOverFromAHolderThatDied(t *testing.T) {
	client := fake.NewClientset()
	ghost, dur := "ghost", int32(fast.LeaseDuration/time.Second)
	now := metav1.NewMicroTime(time.Now())
	_, err := client.CoordinationV1().Leases("podcopy").Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: "podcopy-janitor"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &ghost, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 2)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	done := make(chan error, 2)
	begin := time.Now()
	for _, id := range []string{"b", "c"} {
		go func() {
			done <- Chore{Client: client, Namespace: "podcopy", Name: "podcopy-janitor", Identity: id,
				Holder: prometheus.NewGauge(prometheus.GaugeOpts{Name: id}), Timings: fast}.Run(ctx, func(ctx context.Context) error {
				started <- id
				<-ctx.Done()
				return nil
			})
		}()
	}
	var winner string
	select {
	case winner = <-started:
	case <-time.After(fast.StaleAfter() + fast.LeaseDuration + 5*fast.RetryPeriod):
		t.Fatal("nobody took over from the dead holder")
	}
	t.Logf("%s took over %.1fs after the holder's last renewal", winner, time.Since(begin).Seconds())
	select {
	case other := <-started:
		t.Fatalf("%s and %s both ran the chore", winner, other)
	case <-time.After(3 * fast.RetryPeriod):
	}
	stop()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestNoRightToWatchCampaignsByPolling: an agent that may get and update the Lease but not
// list and watch it (an older RBAC) still takes part, as a plain election.
func TestNoRightToWatchCampaignsByPolling(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", nil)
	})
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	err := Chore{Client: client, Namespace: "podcopy", Name: "podcopy-janitor", Identity: "x", Holder: g, Timings: fast}.Run(ctx, func(context.Context) error {
		stop() // ran as the holder: done
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := client.CoordinationV1().Leases("podcopy").Get(t.Context(), "podcopy-janitor", metav1.GetOptions{}); err != nil || l.Spec.HolderIdentity == nil {
		t.Fatalf("the Lease was not taken: %+v %v", l, err)
	}
}

// TestGateStaleness: with the fake clock, a non-holder's gate stays shut while the holder
// renews, however much time passes, and opens StaleAfter after the last renewal it saw; a
// released Lease opens it at once.
func TestGateStaleness(t *testing.T) {
	t.Parallel()
	clk := testclock.NewFakeClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	holder := "a"
	lease := func(renew time.Time) *coordinationv1.Lease {
		at := metav1.NewMicroTime(renew)
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: "podcopy-janitor"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &at}}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(idx.Add(lease(clk.Now())))
	g := &gate{leases: coordlisters.NewLeaseLister(idx).Leases("podcopy"), name: "podcopy-janitor", changed: make(chan struct{}, 1), clock: clk, timings: DefaultTimings}
	type opened struct {
		holder string
		ok     bool
	}
	done := make(chan opened, 1)
	go func() {
		h, ok := g.free(t.Context())
		done <- opened{h, ok}
	}()
	// The holder renews every RetryPeriod for a minute: the gate stays shut.
	for range 30 {
		clk.Step(RetryPeriod)
		must(idx.Update(lease(clk.Now())))
		select {
		case g.changed <- struct{}{}:
		default:
		}
		select {
		case o := <-done:
			t.Fatalf("the gate opened while %s renewed: %+v", holder, o)
		case <-time.After(10 * time.Millisecond):
		}
	}
	// It stops renewing: the gate opens, naming it, once StaleAfter has passed on the clock
	// (never before), whenever its next tick comes.
	last := clk.Now()
	for {
		clk.Step(RetryPeriod)
		select {
		case o := <-done:
			if quiet := clk.Since(last); quiet < StaleAfter {
				t.Fatalf("the gate opened after %s without a renewal, before StaleAfter=%s", quiet, StaleAfter)
			}
			if !o.ok || o.holder != "a" {
				t.Fatalf("gate opened with %+v, want the quiet holder a", o)
			}
		case <-time.After(100 * time.Millisecond):
			if clk.Since(last) > StaleAfter+20*RetryPeriod {
				t.Fatal("the gate did not open after StaleAfter without a renewal")
			}
			continue
		}
		break
	}
	// Released: open at once, no holder.
	holder = ""
	must(idx.Update(lease(clk.Now())))
	if h, ok := g.free(t.Context()); !ok || h != "" {
		t.Fatalf("released Lease: %q %v", h, ok)
	}
}
