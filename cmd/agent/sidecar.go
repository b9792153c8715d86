package main

import (
	"context"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podcopy/podcopy/pkg/config"
	"github.com/podcopy/podcopy/pkg/destination"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/follow"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/metrics"
)

// settleDelay coalesces a burst of inotify events into one shipment.
const settleDelay = time.Second

// runSidecar follows this pod's files (a volume shared with the application container)
// into the analysis pod named by destination.pod. It needs only get on that pod and
// create on its pods/exec.
func runSidecar(ctx context.Context, opts config.Options, restConfig *rest.Config) error {
	log := logr.FromContextOrDiscard(ctx)
	restConfig.QPS, restConfig.Burst = opts.KubeQPS, int(2*opts.KubeQPS)
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	transport, _ := exec.ParseTransport(opts.Exec.Transport)
	executor := exec.NewRemote(restConfig, client.CoreV1().RESTClient(), transport)
	chooser := destination.Chooser{Client: client, Config: opts.Destination}
	source := &follow.LocalSource{}
	defer func() { _ = source.Close() }()
	f := opts.Follow
	dest, err := layout.New(opts.Destination.Dir, f.PodNamespace, f.PodName)
	if err != nil {
		return err
	}
	m := metrics.New()
	sc := &follow.Sidecar{
		Set: &follow.Set{Paths: f.Paths, Source: source, Sink: follow.ExecSink{Exec: executor}, UID: f.PodUID,
			Layout: func(p string) (string, string, error) { return dest.FollowFile(f.Container, p) }},
		Choose:   func(ctx context.Context) (exec.Target, error) { return chooser.Choose(ctx, "") },
		Interval: f.Interval, Settle: settleDelay, Grace: opts.ShutdownGrace, Metrics: m,
		Labels: [3]string{f.PodNamespace, f.PodName, f.Container},
	}
	log.Info("starting sidecar", "version", version, "paths", f.Paths, "pod", f.PodNamespace+"/"+f.PodName,
		"container", f.Container, "destination", opts.Destination.Namespace+"/"+opts.Destination.Pod, "interval", f.Interval.String())
	srv := &http.Server{Addr: opts.Listen, Handler: mux(m, func() bool { return true }, opts.Debug.Pprof), ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sc.Run(gctx) })
	serve(g, gctx, srv)
	err = g.Wait()
	log.Info("stopped")
	return err
}
