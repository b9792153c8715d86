package main

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
)

// workload is one thing to copy, prepared in the source pod under /var/log/bench.
type workload struct {
	Name    string // "base, variant": rows compare with the pipe and floor of the base
	Bytes   int64
	Path    string // below /var/log/bench
	Prepare string // shell run in the source pod (a fixed benchmark script, not user input)
	Gzip    bool   // podcopy with compression: gzip
	Source  string // podcopy/source for podcopy's collection ("" = the agent's default)
	Rounds  int    // rounds for this workload (0 = the -rounds flag)
	NoCp    bool   // skip kubectl cp (it dies on this workload)
	Files   int    // Path is a directory of this many 1 KiB random files, sent from here as a tar
}

// base is the workload without its variant: the row whose pipe and floor it is compared with.
func (w workload) base() string { return baseName(w.Name) }

func baseName(name string) string {
	b, _, _ := strings.Cut(name, ", ")
	return b
}

func workloads(quick bool) []workload {
	text := `yes "2026-11-22T10:00:00.000Z INFO http request handled method=GET path=/api/v1/orders status=200 duration_ms=12 user=42" | head -c 209715200 > /var/log/bench/app.log`
	w := []workload{
		{Name: "1 MiB random", Bytes: 1 << 20, Path: "r1M.bin", Prepare: "head -c 1048576 /dev/urandom > /var/log/bench/r1M.bin"},
		{Name: "100 MiB random", Bytes: 100 << 20, Path: "r100M.bin", Prepare: "head -c 104857600 /dev/urandom > /var/log/bench/r100M.bin"},
	}
	if quick {
		return append(w, workload{Name: "1,000 files of 1 KiB", Bytes: 1000 << 10, Path: "many", Files: 1000})
	}
	return append(w,
		workload{Name: "1 GiB random", Bytes: 1 << 30, Path: "r1G.bin", Prepare: "head -c 1073741824 /dev/urandom > /var/log/bench/r1G.bin", Rounds: 3},
		workload{Name: "10,000 files of 1 KiB", Bytes: 10000 << 10, Path: "many", Files: 10000},
		workload{Name: "100,000 files of 1 KiB", Bytes: 100000 << 10, Path: "many100k", Files: 100000, Rounds: 3, NoCp: true},
		workload{Name: "200 MiB text log", Bytes: 200 << 20, Path: "app.log", Prepare: text},
		workload{Name: "200 MiB text log, gzip", Bytes: 200 << 20, Path: "app.log", Gzip: true},
		workload{Name: "200 MiB text log, through the helper", Bytes: 200 << 20, Path: "app.log", Source: "helper"},
		workload{Name: "200 MiB text log, gzip, through the helper", Bytes: 200 << 20, Path: "app.log", Gzip: true, Source: "helper"},
	)
}

// sample is one timed run.
type sample struct {
	Seconds    float64
	StartSecs  float64 // podcopy: annotation to Running (first byte)
	Pipeline   float64 // podcopy: its own duration metric
	PeakRSS    int64
	CPUSeconds float64
	// CPU seconds of the API server, of the kubelet, containerd and shims, and of the S3
	// server (versitygw), during the run.
	APIServerCPU, NodeCPU, S3CPU float64
}

// measured runs f and adds the relays' CPU to its sample.
func measured(f func() (sample, error)) (sample, error) {
	before := relaysCPU()
	s, err := f()
	s.APIServerCPU, s.NodeCPU, s.S3CPU = relaysCPU().since(before)
	return s, err
}

// wall is a sample of a method timed by wall clock only.
func wall(f func() (time.Duration, error)) func() (sample, error) {
	return func() (sample, error) {
		d, err := f()
		return sample{Seconds: d.Seconds()}, err
	}
}

// result is a workload x method, over rounds.
type result struct {
	Workload string
	Bytes    int64
	Method   string
	Samples  []sample
	// Failed rounds (kubectl cp is known to die with "unexpected EOF"; a podcopy collection
	// can fail too) are counted and listed, not fatal; FirstError says how the first failed.
	Failed     int
	FirstError string
}

// fail records a failed round.
func (r *result) fail(err error) {
	r.Failed++
	if r.FirstError == "" {
		lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
		r.FirstError = strings.TrimSpace(lines[len(lines)-1]) // kubectl's own last words
	}
	fmt.Printf("  %s on %s: round failed: %s\n", r.Method, r.Workload, r.FirstError)
}

const (
	methodPipe  = "kubectl exec | kubectl exec"
	methodCp    = "kubectl cp ×2 (via disk)"
	methodFloor = "floor: tar relayed in-process (no validation, no hashing)"
)

// floorDir is where the floor method extracts, in the analysis pod.
const floorDir = "/collect/.bench-floor"

// floor moves the same bytes through the same two exec legs as podcopy (the source's tar,
// the analysis pod's tar -x into /collect), relayed in this process with io.Copy: no tar parsing, no name
// checks, no hashing, no manifest. podcopy / floor is what podcopy's own work costs.
func (e *env) floor(ctx context.Context, src, sink exec.Target, path string) (time.Duration, error) {
	t0 := time.Now()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := e.exec.Exec(ctx, exec.Request{Target: src, Command: []string{"tar", "-c", "-f", "-", "-C", "/var/log/bench", path}, Stdout: pw})
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
		errc <- err
	}()
	err := e.exec.Exec(ctx, exec.Request{Target: sink, Command: []string{"tar", "-x", "-f", "-", "-C", floorDir}, Stdin: pr})
	pr.CloseWithError(io.ErrClosedPipe)
	if serr := <-errc; serr != io.EOF && err == nil {
		err = serr
	}
	return time.Since(t0), err
}

func run(ctx context.Context, o options) error {
	e, err := newEnv(o)
	if err != nil {
		return err
	}
	if !o.copies {
		scale, err := e.scaleTests(ctx)
		if err != nil {
			return err
		}
		text := "# podcopy scale test, " + time.Now().UTC().Format(time.RFC3339) + "\n\n- " + strings.Join(scale, "\n- ") + "\n"
		fmt.Print(text)
		return os.WriteFile(filepath.Join(o.out, "scale.md"), []byte(text), 0o644)
	}
	const ns = "bench"
	fmt.Println("preparing namespace, source and sink pods, workloads ...")
	if err := e.namespace(ctx, ns); err != nil {
		return err
	}
	if err := e.pod(ctx, ns, "src", "mkdir -p /var/log/bench"); err != nil {
		return err
	}
	if err := e.pod(ctx, ns, "sink", "mkdir -p /tmp/out"); err != nil {
		return err
	}
	src := exec.Target{Namespace: ns, Pod: "src", Container: "app"}
	ws := workloads(o.quick)
	for _, w := range ws {
		if w.Prepare != "" && o.selected(w.Name) {
			if _, err := e.run(ctx, src, "sh", "-c", w.Prepare); err != nil {
				return err
			}
		}
		if w.Files > 0 && o.selected(w.Name) {
			if err := e.sendFiles(ctx, src, w.Path, w.Files); err != nil {
				return err
			}
		}
	}
	dst, err := e.analysis(ctx)
	if err != nil {
		return err
	}
	local, err := os.MkdirTemp("", "podcopy-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(local)

	var results []*result
	get := func(w workload, method string) *result {
		for _, r := range results {
			if r.Workload == w.Name && r.Method == method {
				return r
			}
		}
		r := &result{Workload: w.Name, Bytes: w.Bytes, Method: method}
		results = append(results, r)
		return r
	}
	trigger := 0
	for _, transport := range o.transports() {
		for _, gz := range []bool{false, true} {
			fmt.Printf("agent: exec.transport=%s compression=%v\n", transport, map[bool]string{false: "none", true: "gzip"}[gz])
			if err := e.helm(ctx, "config.exec.transport="+transport, "config.compression="+map[bool]string{false: "none", true: "gzip"}[gz],
				"config.policy.maxBytes=4Gi", "config.policy.maxFiles=200000", "config.policy.maxManifestBytes=64Mi", "config.destination.namespaceModes.bench=pod"); err != nil {
				return err
			}
			for _, w := range ws {
				if w.Gzip != gz || !o.selected(w.Name) {
					continue
				}
				rounds := o.rounds
				if w.Rounds > 0 {
					rounds = min(w.Rounds, o.rounds)
				}
				for round := range rounds {
					// Alternate: the baselines once per round, in the first transport block only.
					if transport == "spdy" && w.base() == w.Name {
						s, err := measured(wall(func() (time.Duration, error) {
							return e.sh(ctx, fmt.Sprintf(`"$K" exec -n %s src -- tar cf - -C /var/log/bench %s | "$K" exec -i -n %s sink -- tar xf - -C /tmp/out`, ns, w.Path, ns))
						}))
						if err != nil {
							get(w, methodPipe).fail(err)
						} else {
							get(w, methodPipe).Samples = append(get(w, methodPipe).Samples, s)
						}
						if _, err := e.run(ctx, exec.Target{Namespace: ns, Pod: "sink", Container: "app"}, "rm", "-rf", "/tmp/out/"+w.Path); err != nil {
							return err
						}
						if !w.NoCp {
							s, err := measured(wall(func() (time.Duration, error) {
								return e.sh(ctx, fmt.Sprintf(`"$K" cp %s/src:/var/log/bench/%s %s/%s >/dev/null && "$K" cp %s/%s %s/sink:/tmp/out/%s >/dev/null`,
									ns, w.Path, local, w.Path, local, w.Path, ns, w.Path))
							}))
							if err != nil {
								get(w, methodCp).fail(err)
							} else {
								get(w, methodCp).Samples = append(get(w, methodCp).Samples, s)
							}
							_ = os.RemoveAll(filepath.Join(local, w.Path))
							if _, err := e.run(ctx, exec.Target{Namespace: ns, Pod: "sink", Container: "app"}, "rm", "-rf", "/tmp/out/"+w.Path); err != nil {
								return err
							}
						}
						// The floor writes where podcopy writes: the analysis pod's /collect.
						if _, err := e.run(ctx, dst, "mkdir", "-p", floorDir); err != nil {
							return err
						}
						if s, err := measured(wall(func() (time.Duration, error) { return e.floor(ctx, src, dst, w.Path) })); err != nil {
							get(w, methodFloor).fail(err)
						} else {
							get(w, methodFloor).Samples = append(get(w, methodFloor).Samples, s)
						}
						if _, err := e.run(ctx, dst, "rm", "-rf", floorDir); err != nil {
							return err
						}
					}
					// A failed collection is reported with the failed rounds, never hidden in a median.
					if s, err := measured(func() (sample, error) { return e.podcopyOnce(ctx, ns, "/var/log/bench/"+w.Path, w.Source, &trigger) }); err != nil {
						get(w, "podcopy ("+transport+")").fail(err)
					} else {
						get(w, "podcopy ("+transport+")").Samples = append(get(w, "podcopy ("+transport+")").Samples, s)
					}
					if _, err := e.run(ctx, dst, "rm", "-rf", "/collect/"+ns); err != nil {
						return err
					}
					fmt.Printf("  %-24s round %d/%d done\n", w.Name, round+1, o.rounds)
				}
			}
		}
	}
	if o.bucket {
		if err := e.bucketRows(ctx, ns, ws, get, &trigger); err != nil {
			return err
		}
	}
	// Leave the agent as charts/podcopy/ci/local-values.yaml configures it: the e2e suite
	// runs next on the same cluster (a 64 MiB manifest cap lets the console read a planted
	// 60 MiB record, TestConsoleBounds, into the agent's 128 MiB).
	if err := e.helm(ctx, "config.exec.transport=auto", "config.compression=auto", "config.destination.namespaceModes.bench=pod",
		"config.destination.s3.objectLock.mode=GOVERNANCE", "config.destination.s3.objectLock.days=1",
		"config.policy.maxBytes=510Mi", "config.policy.maxFiles=10000", "config.policy.maxManifestBytes=8Mi"); err != nil {
		return err
	}
	var scale []string
	if o.scale && !o.quick {
		if scale, err = e.scaleTests(ctx); err != nil {
			return err
		}
	}
	return report(o, results, scale)
}

// podcopyOnce runs one collection and measures it and the agent.
func (e *env) podcopyOnce(ctx context.Context, ns, path, source string, trigger *int) (sample, error) {
	pid, err := agentPID()
	if err != nil {
		return sample{}, err
	}
	if err := resetPeak(pid); err != nil {
		return sample{}, err
	}
	before, err := e.scrape(ctx)
	if err != nil {
		return sample{}, err
	}
	*trigger++
	start, done, _, err := e.collect(ctx, ns, "src", path, source, fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), *trigger))
	if err != nil {
		return sample{}, err
	}
	after, err := e.scrape(ctx)
	if err != nil {
		return sample{}, err
	}
	peak, err := peakRSS(pid)
	if err != nil {
		return sample{}, err
	}
	return sample{Seconds: done.Seconds(), StartSecs: start.Seconds(),
		Pipeline:   after["podcopy_collection_duration_seconds_sum"] - before["podcopy_collection_duration_seconds_sum"],
		CPUSeconds: after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"], PeakRSS: peak}, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func field(r *result, f func(sample) float64) []float64 {
	out := make([]float64, len(r.Samples))
	for i, s := range r.Samples {
		out[i] = f(s)
	}
	return out
}

func report(o options, results []*result, scale []string) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# podcopy benchmark, %s\n\nLocal single-node cluster (hack/cluster), 2 cores, host %s; %d rounds per cell, alternating methods; median and min–max of wall time.\n\n",
		time.Now().UTC().Format(time.RFC3339), host, o.rounds)
	b.WriteString("| workload | method | median s | min–max s | MB/s | × pipe | × floor | pipeline s (agent) | first byte s | agent peak RSS MiB | agent CPU s/GB | API server CPU s/GB | kubelet+containerd CPU s/GB | S3 server CPU s/GB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	pipe, floor, floor1 := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, r := range results {
		switch r.Method {
		case methodPipe:
			pipe[r.Workload] = median(field(r, func(s sample) float64 { return s.Seconds }))
		case methodFloor:
			floor[r.Workload] = median(field(r, func(s sample) float64 { return s.Seconds }))
		case methodFloorOneLeg:
			floor1[r.Workload] = median(field(r, func(s sample) float64 { return s.Seconds }))
		}
	}
	var failures []string
	for _, r := range results {
		if r.Failed > 0 {
			failures = append(failures, fmt.Sprintf("%s, %s: %d of %d rounds failed (%s)", r.Workload, r.Method, r.Failed, r.Failed+len(r.Samples), r.FirstError))
		}
		if len(r.Samples) == 0 {
			continue
		}
		secs := field(r, func(s sample) float64 { return s.Seconds })
		m := median(secs)
		mbps := float64(r.Bytes) / 1e6 / m
		ratio := "–"
		base := pipe[baseName(r.Workload)]
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", base/m)
		}
		f := floor[baseName(r.Workload)]
		if bucketMethod(r.Method) { // one exec leg: compared with the one-leg floor
			f = floor1[baseName(r.Workload)]
		}
		if f > 0 {
			ratio += fmt.Sprintf(" | %.2f", f/m)
		} else {
			ratio += " | –"
		}
		extra := "| – | – | – | –"
		if strings.HasPrefix(r.Method, "podcopy") {
			peak := slices.Max(field(r, func(s sample) float64 { return float64(s.PeakRSS) }))
			cpu := median(field(r, func(s sample) float64 { return s.CPUSeconds }))
			extra = fmt.Sprintf("| %.2f | %.2f | %.1f | %.1f", median(field(r, func(s sample) float64 { return s.Pipeline })),
				median(field(r, func(s sample) float64 { return s.StartSecs })), peak/(1<<20), cpu/(float64(r.Bytes)/1e9))
		}
		gb := float64(r.Bytes) / 1e9
		relays := fmt.Sprintf("| %.1f | %.1f | %.1f", median(field(r, func(s sample) float64 { return s.APIServerCPU }))/gb, median(field(r, func(s sample) float64 { return s.NodeCPU }))/gb,
			median(field(r, func(s sample) float64 { return s.S3CPU }))/gb)
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f–%.2f | %.0f | %s %s %s |\n", r.Workload, strings.ReplaceAll(r.Method, "|", "\\|"), m, slices.Min(secs), slices.Max(secs), mbps, ratio, extra, relays)
	}
	b.WriteString("\n× floor: the two-leg floor for the analysis pod's rows; for the bucket's rows (" + methodBucket + ", the floor and the S3 server alone), the one-leg floor.\n")
	if len(failures) > 0 {
		b.WriteString("\nFailed rounds (not in the medians):\n\n")
		for _, f := range failures {
			b.WriteString("- " + strings.ReplaceAll(f, "|", "\\|") + "\n")
		}
	}
	if len(scale) > 0 {
		b.WriteString("\n## Scale\n\n")
		for _, s := range scale {
			b.WriteString("- " + s + "\n")
		}
	}
	fmt.Print(b.String())
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	if err := os.WriteFile(filepath.Join(o.out, "latest.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(results, "", " ")
	if err := os.WriteFile(filepath.Join(o.out, stamp+".json"), raw, 0o644); err != nil {
		return err
	}
	return drawPlot(results, filepath.Join(o.out, "throughput.png"))
}

// sendFiles writes n files of 1 KiB of random data under /var/log/bench/dir in the source
// pod, as one tar stream made here (busybox has no split, and a shell loop of 100,000 head
// processes takes minutes).
func (e *env) sendFiles(ctx context.Context, src exec.Target, dir string, n int) error {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		data := make([]byte, 1024)
		var err error
		for i := 0; i < n && err == nil; i++ {
			_, _ = rand.Read(data)
			if err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/f%06d", dir, i), Mode: 0o644, Size: 1024, ModTime: time.Now()}); err == nil {
				_, err = tw.Write(data)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	err := e.exec.Exec(ctx, exec.Request{Target: src, Command: []string{"tar", "-x", "-f", "-", "-C", "/var/log/bench"}, Stdin: pr})
	pr.CloseWithError(io.ErrClosedPipe)
	return err
}
