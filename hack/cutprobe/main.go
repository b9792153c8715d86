// Command cutprobe measures how often an exec's stdout loses its tail: it runs tar -c of a
// directory in a pod N times, reads the stream as fast as it comes, and counts the runs whose
// archive is shorter than the longest seen (exit status ignored: client-go reports a cut
// connection as success). With -hold the command keeps the process alive, stdout and stderr
// closed, until the reader has seen stdout's end and closes stdin (issue 35).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podcopy/podcopy/pkg/exec"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig")
	pod := flag.String("pod", "bench/src", "namespace/pod")
	container := flag.String("container", "app", "container")
	dir := flag.String("C", "/var/log/bench", "tar -C")
	path := flag.String("path", "many100k", "what to archive")
	runs := flag.Int("n", 10, "runs")
	hold := flag.Bool("hold", false, "keep the process alive until stdin closes")
	out := flag.String("out", "", "write the last run's stream here")
	transport := flag.String("transport", "spdy", "spdy or websocket")
	rate := flag.Float64("rate", 0, "read at most this many MB/s (0: as fast as it comes), so the source waits on its reader")
	flag.Parse()
	if err := run(*kubeconfig, *pod, *container, *dir, *path, *runs, *hold, *rate, *out, exec.Transport(*transport)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// gate is stdin: it ends when closed.
type gate struct{ done chan struct{} }

func (g gate) Read([]byte) (int, error) { <-g.done; return 0, io.EOF }

// slowReader reads at most rate MB/s.
type slowReader struct {
	r    io.Reader
	rate float64
	t0   time.Time
	n    int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.rate > 0 {
		if ahead := time.Duration(float64(s.n)/(s.rate*1e6)*float64(time.Second)) - time.Since(s.t0); ahead > 0 {
			time.Sleep(ahead) // the probe's chosen pace: a slow consumer is what it measures
		}
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	return n, err
}

// once runs cmd and reads its stdout at rate into sink: the bytes read, the read's error and
// the exec's.
func once(remote exec.Executor, target exec.Target, cmd []string, hold bool, rate float64, sink io.Writer) (int64, error, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g := gate{done: make(chan struct{})}
	pr, pw := io.Pipe()
	req := exec.Request{Target: target, Command: cmd, Stdout: pw}
	if hold {
		req.Stdin = g
	}
	errc := make(chan error, 1)
	go func() {
		err := remote.Exec(ctx, req)
		pw.CloseWithError(err)
		errc <- err
	}()
	n, rerr := io.Copy(sink, &slowReader{r: pr, rate: rate, t0: time.Now()})
	close(g.done)
	return n, rerr, <-errc
}

func run(kubeconfig, pod, container, dir, path string, runs int, hold bool, rate float64, out string, transport exec.Transport) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	remote := exec.NewRemote(cfg, cs.CoreV1().RESTClient(), transport)
	ns, name, _ := strings.Cut(pod, "/")
	cmd := []string{"tar", "-c", "-f", "-", "-C", dir, path}
	if hold {
		cmd = append([]string{"sh", "-c", `tar "$@"; rc=$?; exec >&- 2>&-; while read -r _; do :; done; exit $rc`, "hold"}, cmd[1:]...)
	}
	var longest int64
	sizes := make([]int64, 0, runs)
	for i := range runs {
		sink := io.Discard
		var f *os.File
		if out != "" {
			if f, err = os.Create(out); err != nil {
				return err
			}
			sink = f
		}
		t0 := time.Now()
		n, rerr, err := once(remote, exec.Target{Namespace: ns, Pod: name, Container: container}, cmd, hold, rate, sink)
		if f != nil {
			_ = f.Close()
		}
		sizes = append(sizes, n)
		longest = max(longest, n)
		fmt.Printf("run %d: %d bytes in %.1fs (read %v, exec %v)\n", i+1, n, time.Since(t0).Seconds(), rerr, err)
	}
	cut := 0
	for _, n := range sizes {
		if n < longest {
			cut++
		}
	}
	fmt.Printf("hold=%v rate=%v MB/s: %d of %d runs shorter than the longest (%d bytes)\n", hold, rate, cut, runs, longest)
	return nil
}
