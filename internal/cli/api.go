package cli

import (
	"context"
)

// The evidence API: what a server (the web console) calls with a user's own clients (set
// with With), so that it reads nothing the user could not read with the plugin.

// Ask sets a collection request on pod with the user's own identity (admission checks it
// and records who asked) and returns the request's id. follow harvests every interval.
func (o *Options) Ask(ctx context.Context, pod string, paths []string, container string, follow bool, interval string) (string, error) {
	_, req, err := o.ask(ctx, pod, paths, collectFlags{container: container, follow: follow, interval: interval})
	if err != nil {
		return "", err
	}
	return req.ID(), nil
}

// Stop removes pod's request (a follow ships what is left and ends).
func (o *Options) Stop(ctx context.Context, pod string) error {
	_, err := o.patchAnnotations(ctx, pod, stopAnnotations())
	return err
}
