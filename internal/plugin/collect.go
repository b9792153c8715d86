package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

// collectFlags are collect's own flags.
type collectFlags struct {
	container, interval, source string
	// include and collectOn are podcopy/include and podcopy/collect-on.
	include, collectOn string
	// forDuration ends a follow after it (podcopy/follow-until; 0: until stopped).
	forDuration  time.Duration
	follow, wait bool
	// selector requests every matching pod (-l); allContainers, every container of each.
	selector      string
	allContainers bool
}

func (o *Options) collectCommand() *cobra.Command {
	f := &collectFlags{}
	cmd := &cobra.Command{
		Use:   "collect (POD | -l SELECTOR) PATH...",
		Short: "Ask the agent to collect PATHs from POD (a fresh trigger, so it always runs) and show its progress",
		Example: `  kubectl podcopy collect mysql-0 /var/log/mysql/slow.log
  kubectl podcopy collect -n shop web-7d9 /var/log/nginx --wait=false
  kubectl podcopy collect app-0 /var/log/app/app.log --follow --interval 10s
  kubectl podcopy collect -l app=mysql /var/log/mysql --all-containers`,
		Args: func(cmd *cobra.Command, args []string) error {
			if f.selector != "" {
				return cobra.MinimumNArgs(1)(cmd, args)
			}
			return cobra.MinimumNArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			wait := o.Terminal // the default on a terminal
			if cmd.Flags().Changed("wait") {
				wait = f.wait
			}
			if f.selector != "" || f.allContainers {
				return o.collectMany(cmd.Context(), args, *f, wait)
			}
			return o.collect(cmd.Context(), args[0], args[1:], *f, wait)
		},
	}
	cmd.Flags().StringVarP(&f.selector, "selector", "l", "", "request every pod of the namespace matching this label selector (then every argument is a PATH)")
	cmd.Flags().BoolVar(&f.allContainers, "all-containers", false, "collect from every container of each pod, one after the other")
	cmd.Flags().StringVarP(&f.container, "container", "c", "", "container to read (default: the pod's default container)")
	cmd.Flags().BoolVar(&f.follow, "follow", false, "harvest continuously: ship what is appended every interval")
	cmd.Flags().StringVar(&f.include, "include", "", "store the pod's own record with the files: spec,events,logs")
	cmd.Flags().StringVar(&f.collectOn, "on", "", "arm the request instead of collecting now: termination and/or restart (podcopy/collect-on)")
	cmd.Flags().DurationVar(&f.forDuration, "for", 0, "with --follow: stop following after this long (sets podcopy/follow-until)")
	cmd.Flags().StringVar(&f.interval, "interval", "", "with --follow: how often to ship (Go duration, at least 5s; default 30s)")
	cmd.Flags().StringVar(&f.source, "source", "", "auto, tar or helper (default: the agent's source.mode)")
	cmd.Flags().BoolVar(&f.wait, "wait", false, "wait for the outcome and draw progress (default: true on a terminal)")
	return cmd
}

// requestAnnotations is the merge patch of a request: every request key is set or removed,
// and the trigger is fresh so the same paths run again.
func requestAnnotations(paths []string, f collectFlags, now time.Time) (map[string]*string, error) {
	if f.interval != "" && !f.follow {
		return nil, errors.New("--interval needs --follow")
	}
	if f.forDuration != 0 && (!f.follow || f.forDuration < 0) {
		return nil, errors.New("--for is a positive duration and needs --follow")
	}
	mode := string(request.ModeOnce)
	if f.follow {
		mode = string(request.ModeFollow)
	}
	// A request from the plugin is exactly what its flags say: nothing armed, nothing extra,
	// no alert (which only the receiver may set).
	ask := request.Ask{Paths: paths, Container: f.container, Mode: mode, Interval: f.interval, Source: f.source,
		Include: splitList(f.include), CollectOn: splitList(f.collectOn), For: request.Duration{Duration: f.forDuration}}
	return ask.Patch(now.UTC().Format(time.RFC3339Nano), now), nil
}

// splitList is a flag's comma-separated list (nil when empty).
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (o *Options) patchAnnotations(ctx context.Context, pod string, ann map[string]*string) (*corev1.Pod, error) {
	return patchAnnotations(ctx, o.client, o.namespace, pod, ann)
}

// ask sets the request of paths on pod and returns the pod as patched and the request as
// the agent will parse it (its identity, SPEC §1; the agent's own policy decides what is
// allowed, so none is applied here).
func (o *Options) ask(ctx context.Context, pod string, paths []string, f collectFlags) (*corev1.Pod, request.Request, error) {
	ann, err := requestAnnotations(paths, f, time.Now())
	if err != nil {
		return nil, request.Request{}, err
	}
	p, err := o.patchAnnotations(ctx, pod, ann)
	if err != nil {
		return nil, request.Request{}, err // a refusal by the admission policy says what is missing
	}
	req, err := parseAsked(p)
	return p, req, err
}

// parseAsked is the request set on p as the agent will parse it (its identity, SPEC §1; the
// agent's own policy decides what is allowed, so none is applied here).
func parseAsked(p *corev1.Pod) (request.Request, error) {
	return request.Parse(p, policy.Policy{AllowPaths: []string{"/**"}})
}

func (o *Options) collect(ctx context.Context, pod string, paths []string, f collectFlags, wait bool) error {
	p, req, err := o.ask(ctx, pod, paths, f)
	if err != nil {
		return err
	}
	id := req.ID()
	if !wait {
		if o.Output == "json" {
			return o.printJSON(map[string]string{"namespace": p.Namespace, "pod": p.Name, "request": id})
		}
		fmt.Fprintf(o.Out, "requested %s from %s/%s (request %s); watch it with: kubectl podcopy status %s\n",
			strings.Join(paths, ","), p.Namespace, p.Name, id[:8], p.Name)
		return nil
	}
	if f.collectOn != "" {
		return o.waitArmed(ctx, pod, id)
	}
	st, err := o.waitFor(ctx, pod, id, f.follow)
	if err != nil {
		return err
	}
	return o.outcome(st)
}

// waitFor follows the pod's status for request id, drawing progress, until it ends (a
// follow: until its first shipment is recorded).
func (o *Options) waitFor(ctx context.Context, pod, id string, follow bool) (status.Status, error) {
	prog := newProgress(o, pod)
	defer prog.close()
	return o.waitWith(ctx, prog, pod, id, follow)
}

// waitArmed waits until the agent has armed request id (podcopy/collect-on): its status
// says what it waits for; the collection itself comes with the occasion.
func (o *Options) waitArmed(ctx context.Context, pod, id string) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		p, err := o.client.CoreV1().Pods(o.namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st, ok := status.Get(p); ok && st.Request == id {
			if st.Phase == status.Pending {
				fmt.Fprintf(o.Out, "armed: %s\n", status.Printable(st.Message))
				return nil
			}
			if st.Done(id) {
				return o.outcome(st) // rejected
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitWith is waitFor drawing on prog.
func (o *Options) waitWith(ctx context.Context, prog *progress, pod, id string, follow bool) (status.Status, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		p, err := o.client.CoreV1().Pods(o.namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return status.Status{}, err
		}
		if st, ok := status.Get(p); ok && st.Request == id {
			prog.update(st)
			if st.Done(id) || (follow && st.Phase == status.Running && st.Collection == "follow" && st.Message != "") {
				prog.done(st)
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return status.Status{}, ctx.Err()
		case <-t.C:
		}
	}
}

// outcome prints the final status and turns Failed and Rejected into an error (exit 1).
func (o *Options) outcome(st status.Status) error {
	if o.Output == "json" {
		if err := o.printJSON(st); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(o.Out, "%s: %s\n", st.Phase, status.Printable(st.Message))
		if st.Destination != "" {
			fmt.Fprintf(o.Out, "in %s\n", status.Printable(st.Destination))
		}
	}
	switch st.Phase {
	case status.Failed, status.Rejected:
		return fmt.Errorf("collection %s: %s", strings.ToLower(string(st.Phase)), st.Message)
	}
	return nil
}

func (o *Options) printJSON(v any) error {
	enc := json.NewEncoder(o.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (o *Options) stopCommand() *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "stop (POD | -l SELECTOR)",
		Short: "End a follow (remove the request from POD, or from every pod matching the selector)",
		Args: func(cmd *cobra.Command, args []string) error {
			if selector != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			pods := args
			if selector != "" {
				var err error
				if pods, err = o.selectPods(cmd.Context(), selector); err != nil {
					return err
				}
			}
			ann := request.StopPatch()
			var errs []error
			for _, pod := range pods {
				if _, err := o.patchAnnotations(cmd.Context(), pod, ann); err != nil {
					errs = append(errs, fmt.Errorf("%s/%s: %w", o.namespace, pod, err))
					continue
				}
				fmt.Fprintf(o.Out, "stopped: the agent ships what is left and ends following %s/%s\n", o.namespace, pod)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "every pod of the namespace matching this label selector")
	return cmd
}
