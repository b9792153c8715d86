// Command stallprobe measures what an exec stream does when its reader stops reading: it
// starts `cat FILE` in a pod over the given transport, reads the first MiB, stops reading
// for -pause, then reads the rest, and reports whether and when the stream ended early.
// Run against the local cluster: go run ./hack/stallprobe -pod NS/POD -file PATH.
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
	pod := flag.String("pod", "", "namespace/pod")
	container := flag.String("container", "app", "container")
	file := flag.String("file", "", "file to cat (larger than every buffer on the way)")
	pause := flag.Duration("pause", 90*time.Second, "how long the reader stops reading")
	transport := flag.String("transport", "spdy", "spdy or websocket")
	flag.Parse()
	if err := run(*kubeconfig, *pod, *container, *file, *pause, exec.Transport(*transport)); err != nil {
		fmt.Fprintln(os.Stderr, "stallprobe:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, pod, container, file string, pause time.Duration, transport exec.Transport) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns, name, _ := strings.Cut(pod, "/")
	remote := exec.NewRemote(cfg, cs.CoreV1().RESTClient(), transport)
	// The probe's exec ends, whatever happens, well after the pause.
	ctx, cancel := context.WithTimeout(context.Background(), pause+5*time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		err := remote.Exec(ctx, exec.Request{Target: exec.Target{Namespace: ns, Pod: name, Container: container}, Command: []string{"cat", file}, Stdout: pw})
		pw.CloseWithError(err)
		done <- err
	}()
	first, err := io.CopyN(io.Discard, pr, 1<<20)
	if err != nil {
		return fmt.Errorf("reading the first MiB: %w", err)
	}
	fmt.Printf("%s: read %d bytes; not reading for %s\n", time.Since(start).Round(time.Millisecond), first, pause)
	time.Sleep(pause)
	rest, rerr := io.Copy(io.Discard, pr)
	fmt.Printf("%s: read %d more bytes (%d in all), then %v\n", time.Since(start).Round(time.Millisecond), rest, first+rest, rerr)
	err = <-done
	fmt.Printf("exec ended: %v\n", err)
	return nil
}
