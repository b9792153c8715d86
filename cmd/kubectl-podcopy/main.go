// Command kubectl-podcopy is the kubectl plugin of podcopy (kubectl podcopy ...): it asks
// for collections with the user's own credentials, shows their progress, lists them, and
// fetches or verifies them against their manifests.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/podcopy/podcopy/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := plugin.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
