// Command podcopy-agent streams files named in pod annotations out of containers into an
// analysis pod over the Kubernetes exec API.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/podcopy/podcopy/internal/config"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "source" {
		sourceMain(os.Args[2:]) // the agent's exec into a podcopy sidecar
	}
	if len(os.Args) > 1 && os.Args[1] == "receiver" {
		receiverMain(os.Args[2:]) // the alert receiver (a Deployment)
	}
	fs := pflag.NewFlagSet("podcopy-agent", pflag.ExitOnError)
	loader := config.NewLoader(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println(version)
		return
	}
	opts, err := loader.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent: invalid configuration: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, opts, loader); err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent: %v\n", err)
		os.Exit(1)
	}
}
