// Command podcopy-agent streams files named in pod annotations out of containers into an
// analysis pod over the Kubernetes exec API.
package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/podcopy/podcopy/internal/config"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// subcommand is one of the binary's modes besides the per-node agent: it takes the rest of
// the arguments and ends the process.
type subcommand struct {
	run  func(args []string)
	help string
}

// subcommands are the binary's other modes, by their first argument.
var subcommands = map[string]subcommand{
	"source":   {sourceMain, "the reading side inside a container (the helper, the sidecar): list, tar, follow, glob, wait"},
	"signer":   {signerMain, "the custody signer: short-lived node certificates for agents' in-memory keys, and RFC 3161 timestamps"},
	"receiver": {receiverMain, "the alert receiver: Falcosidekick and Alertmanager webhooks to collection requests"},
}

func main() {
	if len(os.Args) > 1 {
		if sc, ok := subcommands[os.Args[1]]; ok {
			sc.run(os.Args[2:])
			return
		}
	}
	fs := pflag.NewFlagSet("podcopy-agent", pflag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: podcopy-agent [flags]          the agent (or --mode=sidecar)\n")
		for _, name := range slices.Sorted(maps.Keys(subcommands)) {
			fmt.Fprintf(os.Stderr, "       podcopy-agent %-8s [args]  %s\n", name, subcommands[name].help)
		}
		fmt.Fprintf(os.Stderr, "Flags:\n%s", fs.FlagUsages())
	}
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
