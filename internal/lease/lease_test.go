package lease

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOneHolderRunsTheChore: two agents campaign for the Lease; one runs the chore, and when
// it stops (its context ends, the Lease is released) the other takes over.
func TestOneHolderRunsTheChore(t *testing.T) {
	client := fake.NewClientset()
	started := make(chan string, 4)
	run := func(ctx context.Context, id string, g prometheus.Gauge) chan error {
		done := make(chan error, 1)
		go func() {
			done <- Chore{Client: client, Namespace: "podcopy", Name: "podcopy-janitor", Identity: id, Holder: g}.Run(ctx, func(ctx context.Context) error {
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
	case <-time.After(3 * RetryPeriod):
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
	case <-time.After(LeaseDuration + 5*RetryPeriod):
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
	err := Chore{Client: client, Namespace: "podcopy", Name: "podcopy-janitor", Identity: "x", Holder: g}.Run(t.Context(), func(context.Context) error {
		ran = testutil.ToFloat64(g) == 1
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("err %v, ran as holder %v", err, ran)
	}
}
