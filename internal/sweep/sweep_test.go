package sweep

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
)

func TestOnceRemovesOnlyStaleStaging(t *testing.T) {
	t.Parallel()
	for _, flavor := range []string{"gnu", "busybox"} {
		t.Run(flavor, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			old := time.Now().Add(-2 * time.Hour)
			mk := func(p string, mtime time.Time) string {
				full := filepath.Join(dir, p)
				if err := os.MkdirAll(full, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(full, mtime, mtime); err != nil {
					t.Fatal(err)
				}
				return full
			}
			stale := mk("ns/pod/.partial/20261123T100000Z-aaaaaaaa", old)
			fresh := mk("ns/pod/.partial/20261123T115900Z-bbbbbbbb", time.Now())
			complete := mk("ns/pod/20261123T090000Z-cccccccc", old)
			follow := mk("ns/pod/follow/app", old)
			local := &exectest.Local{}
			if flavor == "busybox" {
				if local.Path = exectest.BusyboxPath(t.TempDir()); local.Path == "" {
					t.Skip("busybox not installed")
				}
			}
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			s := Sweeper{Exec: local, Dir: dir, After: time.Hour, Removed: c,
				Targets: func(context.Context) ([]exec.Target, error) { return []exec.Target{{Pod: "analysis-0"}}, nil }}
			if n := s.Once(t.Context()); n != 1 || testutil.ToFloat64(c) != 1 {
				t.Fatalf("removed %d", n)
			}
			for p, want := range map[string]bool{stale: false, fresh: true, complete: true, follow: true} {
				if _, err := os.Stat(p); (err == nil) != want {
					t.Errorf("%s exists=%v, want %v", p, err == nil, want)
				}
			}
		})
	}
}

// blockedBucket is a bucket whose abort call hangs until its context ends.
type blockedBucket struct{ called chan struct{} }

func (b blockedBucket) AbortStale(ctx context.Context, _ time.Time) (int, error) {
	select {
	case b.called <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestRunDoesNotWaitForTheBucket: a bucket that does not answer never holds up the sweep
// and retention of the analysis pods, and Run still ends with its context.
func TestRunDoesNotWaitForTheBucket(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	swept := make(chan struct{}, 1)
	bucket := blockedBucket{called: make(chan struct{}, 1)}
	s := Sweeper{Exec: exectest.Func(func(context.Context, exec.Request) error { return nil }), After: time.Hour,
		Removed: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}),
		Targets: func(context.Context) ([]exec.Target, error) {
			select {
			case swept <- struct{}{}:
			default:
			}
			return []exec.Target{{Pod: "analysis-0"}}, nil
		},
		Uploads: bucket, UploadAge: func() time.Duration { return time.Hour }, UploadsAborted: prometheus.NewCounter(prometheus.CounterOpts{Name: "y"})}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-bucket.called
	<-swept // while the bucket hangs
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// countingBucket counts its abort calls.
type countingBucket struct{ calls atomic.Int32 }

func (b *countingBucket) AbortStale(context.Context, time.Time) (int, error) {
	b.calls.Add(1)
	return 0, nil
}

// TestOnceLeavesTheBucketAlone: a round of the analysis pods' sweep never waits on the
// bucket (Run aborts its uploads in a loop of its own).
func TestOnceLeavesTheBucketAlone(t *testing.T) {
	t.Parallel()
	b := &countingBucket{}
	s := Sweeper{Exec: exectest.Func(func(context.Context, exec.Request) error { return nil }), After: time.Hour,
		Removed: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}),
		Targets: func(context.Context) ([]exec.Target, error) { return []exec.Target{{Pod: "analysis-0"}}, nil },
		Uploads: b, UploadAge: func() time.Duration { return time.Hour }, UploadsAborted: prometheus.NewCounter(prometheus.CounterOpts{Name: "y"})}
	s.Once(t.Context())
	if n := b.calls.Load(); n != 0 {
		t.Fatalf("a sweep round called the bucket %d times", n)
	}
}
