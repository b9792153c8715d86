package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/pkg/source"
)

// sidecarLinger is how long the sidecar stays after SIGTERM, so that the agent's last
// shipment of a terminating pod can still read through it.
const sidecarLinger = 5 * time.Second

// runSidecar is the podcopy sidecar: a container that shares the application's log volume
// and holds the podcopy binary, which the node's agent execs ("podcopy-agent source ...")
// to follow the files: the workload needs no Kubernetes rights at all, and nothing in it can
// write to the analysis pod. It only waits for SIGTERM, then lingers briefly.
func runSidecar(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	log.Info("podcopy sidecar ready: the node agent reads this container's files through podcopy-agent source", "version", version)
	<-ctx.Done()
	log.Info("stopping after a short linger for the agent's last shipment", "linger", sidecarLinger.String())
	<-time.After(sidecarLinger)
	return nil
}

// sourceMain runs "podcopy-agent source ..." (package source, the container's half of the reading side) and exits with its code.
func sourceMain(args []string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := source.Main(ctx, args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
