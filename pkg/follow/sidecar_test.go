package follow

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/exec/exectest"
	"github.com/podcopy/podcopy/pkg/metrics"
)

func TestSidecarShipsOnChangeAndOnStop(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	path := filepath.Join(src, "logs", "app.log")
	dest, state := testPaths(dst, "ns", "pod", "app", path)
	source := &LocalSource{}
	defer func() { _ = source.Close() }()
	s := &Sidecar{
		Set: &Set{Paths: []string{path}, Source: source, Sink: ExecSink{Exec: &exectest.Local{}}, UID: "u",
			Layout: func(string) (string, string, error) { return dest, state, nil }},
		Choose:   func(context.Context) (exec.Target, error) { return dstTarget, nil },
		Interval: time.Hour, // only inotify can trigger shipping here
		Settle:   10 * time.Millisecond,
		Grace:    10 * time.Second,
		Metrics:  metrics.New(),
		Labels:   [3]string{"ns", "pod", "app"},
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	destIs := func(want string) bool { b, _ := os.ReadFile(dest); return string(b) == want }
	appendTo(t, path, "one\n")
	for deadline := time.Now().Add(20 * time.Second); !destIs("one\n"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a change was not shipped")
		}
	}
	// Written just before the pod stops: the last shipment takes it.
	appendTo(t, path, "two\n")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !destIs("one\ntwo\n") {
		b, _ := os.ReadFile(dest)
		t.Fatalf("dest %q", b)
	}
}
