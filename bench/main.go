// Command bench compares podcopy with what users do today (a kubectl exec pipe, two kubectl cp
// legs) on the project's local cluster, and measures podcopy's memory, CPU and scale. It
// prints a markdown table, writes it and a PNG chart under bench/results. Run: make bench.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

type options struct {
	rounds  int
	quick   bool
	scale   bool
	copies  bool
	out     string
	state   string
	repo    string
	kubectl string
	only    string // workloads whose name contains this ("" = all)
	spdy    bool   // SPDY only (skip the WebSocket block)
	bucket  bool   // podcopy into the evidence store's bucket, no analysis pod

	scalePods        int  // pods annotated at once in the scale test
	scaleConcurrency int  // the agent's concurrency for the scale test
	keepScalePods    bool // leave the scale test's pods for the next run
}

// selected: no -only, or name contains one of its "|"-separated parts.
func (o options) selected(name string) bool {
	if o.only == "" {
		return true
	}
	for _, part := range strings.Split(o.only, "|") {
		if part != "" && strings.Contains(name, part) {
			return true
		}
	}
	return false
}

func (o options) transports() []string {
	if o.spdy {
		return []string{"spdy"}
	}
	return []string{"spdy", "websocket"}
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "rounds per workload and method (alternating)")
	flag.BoolVar(&o.quick, "quick", false, "small workloads only (1 MiB, 100 MiB, 1,000 files), 3 rounds")
	flag.BoolVar(&o.scale, "scale", true, "run the scale tests (100 pods at once; RSS with 0/1,000/5,000 pods)")
	flag.BoolVar(&o.copies, "copies", true, "run the copy comparisons (false: scale tests only, written to scale.md)")
	flag.StringVar(&o.out, "out", "results", "directory for results")
	flag.StringVar(&o.only, "only", "", "run only the workloads whose name contains this, or one of its |-separated parts (e.g. \"files|1 GiB\")")
	flag.BoolVar(&o.spdy, "spdy-only", false, "measure podcopy over SPDY only")
	flag.BoolVar(&o.bucket, "bucket", true, "measure podcopy into the evidence store's bucket with no analysis pod (1 GiB, 10,000 files)")
	flag.IntVar(&o.scalePods, "scale-pods", 100, "pods annotated at once in the scale test (1,000 takes this 2-core node ~25 min to start, and each exec then takes seconds: see docs/performance.md)")
	flag.IntVar(&o.scaleConcurrency, "scale-concurrency", 4, "the agent's concurrency (config.concurrency) in the scale test")
	flag.BoolVar(&o.keepScalePods, "keep-scale-pods", false, "keep the scale test's 1,000 pods (namespace bench-scale) for the next run")
	flag.Parse()
	cache := os.Getenv("PODCOPY_CACHE_DIR")
	if cache == "" {
		cache = filepath.Join("..", ".cache")
	}
	o.state = filepath.Join(cache, "cluster")
	o.repo = ".."
	if o.quick {
		o.rounds = 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
