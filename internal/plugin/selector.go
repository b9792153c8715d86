package plugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/status"
)

// selectedParallel is how many pods collect -l waits on at once.
const selectedParallel = 8

// selectPods names the pods of the namespace that match selector, sorted; none is an error.
func (o *Options) selectPods(ctx context.Context, selector string) ([]string, error) {
	pods, err := o.listSelected(ctx, selector)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return names, nil
}

func (o *Options) listSelected(ctx context.Context, selector string) ([]corev1.Pod, error) {
	list, err := o.client.CoreV1().Pods(o.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	if len(list.Items) == 0 {
		return nil, fmt.Errorf("no pod in namespace %s matches %q", o.namespace, selector)
	}
	slices.SortFunc(list.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return list.Items, nil
}

// outcomeOf is one collection of collect -l: its pod, container and final status (or why
// it could not be asked for or followed).
type outcomeOf struct {
	Namespace string        `json:"namespace"`
	Pod       string        `json:"pod"`
	Container string        `json:"container,omitempty"`
	Request   string        `json:"request,omitempty"`
	Status    status.Status `json:"status"`
	Error     string        `json:"error,omitempty"`
}

func (r outcomeOf) name() string {
	if r.Container == "" {
		return r.Pod
	}
	return r.Pod + "[" + r.Container + "]"
}

func (r outcomeOf) failed() bool {
	return r.Error != "" || r.Status.Phase == status.Failed || r.Status.Phase == status.Rejected
}

// collectMany requests paths from every pod matching the selector (or the one pod named
// first), from each container in turn with --all-containers, one bar per collection and a
// total; it fails when any collection did, naming each.
func (o *Options) collectMany(ctx context.Context, args []string, f collectFlags, wait bool) error {
	var pods []corev1.Pod
	paths := args
	if f.selector != "" {
		var err error
		if pods, err = o.listSelected(ctx, f.selector); err != nil {
			return err
		}
	} else {
		p, err := o.client.CoreV1().Pods(o.namespace).Get(ctx, args[0], metav1.GetOptions{})
		if err != nil {
			return err
		}
		pods, paths = []corev1.Pod{*p}, args[1:]
	}
	type job struct {
		pod        string
		containers []string
	}
	var jobs []job
	total := 0
	for _, p := range pods {
		cs := []string{f.container}
		if f.allContainers {
			cs = nil
			for _, c := range p.Spec.Containers {
				cs = append(cs, c.Name)
			}
		}
		jobs = append(jobs, job{pod: p.Name, containers: cs})
		total += len(cs)
	}
	var bars *mpb.Progress
	var totalBar *mpb.Bar
	if wait && o.Terminal && o.Output == "" {
		bars = newBars(o)
		totalBar = bars.New(int64(total), mpb.BarStyle(), mpb.BarPriority(1<<30),
			mpb.PrependDecorators(decor.Name(fmt.Sprintf("total (%d pods) ", len(pods)), decor.WCSyncSpaceR), decor.CountersNoUnit("%d / %d")),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace)))
	}
	var mu sync.Mutex
	var results []outcomeOf
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(selectedParallel)
	for _, j := range jobs {
		g.Go(func() error {
			for _, c := range j.containers {
				fc := f
				fc.container = c
				r := o.collectOne(gctx, j.pod, paths, fc, wait, bars)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if totalBar != nil {
					totalBar.Increment()
				}
			}
			return nil
		})
	}
	_ = g.Wait() // each job reports its own error
	if bars != nil {
		if !totalBar.Completed() {
			totalBar.Abort(false)
		}
		bars.Wait()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	slices.SortFunc(results, func(a, b outcomeOf) int { return strings.Compare(a.name(), b.name()) })
	return o.reportMany(results, wait)
}

// collectOne requests paths from one pod's container and, with wait, follows it to its end.
func (o *Options) collectOne(ctx context.Context, pod string, paths []string, f collectFlags, wait bool, bars *mpb.Progress) outcomeOf {
	r := outcomeOf{Namespace: o.namespace, Pod: pod, Container: f.container}
	_, req, err := o.ask(ctx, pod, paths, f)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Request = req.ID()
	if r.Container == "" {
		r.Container = req.Container
	}
	if !wait || f.collectOn != "" { // an armed request runs at its occasion, not now
		return r
	}
	prog := newSharedProgress(o, o.namespace+"/"+r.name(), bars)
	defer prog.close()
	r.Status, err = o.waitWith(ctx, prog, pod, r.Request, f.follow)
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// reportMany prints one line per collection and fails naming each that failed.
func (o *Options) reportMany(results []outcomeOf, wait bool) error {
	if o.Output == "json" {
		if err := o.printJSON(results); err != nil {
			return err
		}
	}
	var failed []string
	for _, r := range results {
		line := ""
		switch {
		case r.Error != "":
			line = "error: " + r.Error
		case !wait:
			line = fmt.Sprintf("requested (request %s)", r.Request[:8])
		default:
			line = fmt.Sprintf("%s: %s", r.Status.Phase, r.Status.Message)
			if r.Status.Destination != "" {
				line += " (in " + r.Status.Destination + ")"
			}
		}
		if o.Output != "json" {
			fmt.Fprintf(o.Out, "%s/%s: %s\n", r.Namespace, r.name(), status.Printable(line))
		}
		if r.failed() {
			failed = append(failed, fmt.Sprintf("%s/%s: %s", r.Namespace, r.name(), strings.TrimPrefix(line, "error: ")))
		}
	}
	if len(failed) > 0 {
		return errors.New(status.Printable(fmt.Sprintf("%d of %d collections failed: %s", len(failed), len(results), strings.Join(failed, "; "))))
	}
	return nil
}
