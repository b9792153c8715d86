package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/pkg/follow"
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

// runSource is "podcopy-agent source follow|glob ...": the follow protocol served by the
// binary itself (no shell, no coreutils), for the agent's exec.
func runSource(ctx context.Context, args []string, stdout io.Writer) error {
	verb, path, cp, err := follow.ParseServeArgs(args)
	if err != nil {
		return err
	}
	switch verb {
	case "follow":
		return follow.ServeRead(ctx, stdout, path, cp)
	case "glob":
		return follow.ServeGlob(ctx, stdout, path)
	}
	return fmt.Errorf("source: unknown verb %q", verb)
}

// sourceMain runs the source subcommand and exits.
func sourceMain(args []string) {
	if err := runSource(context.Background(), args, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent source: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}
