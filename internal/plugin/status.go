package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
)

func (o *Options) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status POD",
		Short: "Show the podcopy status of POD",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			p, err := o.client.CoreV1().Pods(o.namespace).Get(cmd.Context(), args[0], metav1.GetOptions{})
			if err != nil {
				return err
			}
			st, ok := status.Get(p)
			if !ok {
				return fmt.Errorf("pod %s/%s has no podcopy status (no request yet)", p.Namespace, p.Name)
			}
			if o.Output == "json" {
				return o.printJSON(st)
			}
			w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
			alert := ""
			if a := st.Alert; a != nil {
				alert = fmt.Sprintf("%s rule %q (id %s, %s, profile %s)", a.Source, a.Rule, a.ID, a.Time, a.Profile)
			}
			for _, kv := range [][2]string{{"Pod", p.Namespace + "/" + p.Name}, {"Request", p.Annotations[request.AnnotationCollect]},
				{"Requested by", st.RequestedBy}, {"Alert", alert}, {"Occasion", st.Occasion}, {"Phase", string(st.Phase)}, {"Collection", st.Collection},
				{"Files", fmt.Sprint(st.Files)}, {"Bytes", size(st.Bytes)}, {"Skipped", fmt.Sprint(st.Skipped)},
				{"Attempt", fmt.Sprint(st.Attempt)}, {"Started", st.StartTime}, {"Completed", st.CompletionTime},
				{"Destination", st.Destination}, {"Reason", st.Reason}, {"Message", st.Message}, {"Manifest SHA-256", st.ManifestSHA256}} {
				if kv[1] != "" && kv[1] != "0" {
					fmt.Fprintf(w, "%s:\t%s\n", kv[0], status.Printable(kv[1]))
				}
			}
			return w.Flush()
		},
	}
}

func (o *Options) lsCommand() *cobra.Command {
	var all bool
	var selector string
	cmd := &cobra.Command{
		Use:   "ls [POD | -l SELECTOR | s3://BUCKET[/NAMESPACE[/POD]]]",
		Short: "List collections: each pod's latest (from its status), every collection of POD (from the analysis pod), or those in a bucket",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			inBucket := len(args) == 1 && strings.HasPrefix(args[0], "s3://")
			if inBucket && o.Output != "" && o.Output != "json" {
				return fmt.Errorf("--output %q is unknown; use json", o.Output)
			}
			if !inBucket {
				if err := o.complete(); err != nil {
					return err
				}
			}
			var rows []Row
			var err error
			if inBucket {
				rows, err = o.bucketCollections(cmd.Context(), args[0])
			} else if len(args) == 1 {
				rows, err = o.podCollections(cmd.Context(), args[0])
			} else {
				rows, err = o.latest(cmd.Context(), all, selector)
			}
			if err != nil {
				return err
			}
			if o.Output == "json" {
				return o.printJSON(rows)
			}
			w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAMESPACE\tPOD\tCOLLECTION\tPHASE\tFILES\tBYTES\tSTARTED\tREQUESTED BY\tWHERE")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Namespace, r.Pod, status.Printable(r.Collection), status.Printable(r.Phase), r.Files, size(r.Bytes), status.Printable(r.Started), status.Printable(r.RequestedBy), status.Printable(r.Where))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list pods of every namespace")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only pods matching this label selector")
	return cmd
}

// latest lists each pod's last request from its status annotation.
func (o *Options) latest(ctx context.Context, all bool, selector string) ([]Row, error) {
	ns := o.namespace
	if all {
		ns = ""
	}
	pods, err := o.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var rows []Row
	for i := range pods.Items {
		p := &pods.Items[i]
		st, ok := status.Get(p)
		if !ok {
			continue
		}
		rows = append(rows, Row{Namespace: p.Namespace, Pod: p.Name, Collection: st.Collection, Phase: string(st.Phase),
			Files: st.Files, Bytes: st.Bytes, Started: st.StartTime, RequestedBy: st.RequestedBy, Where: st.Destination})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Started > rows[j].Started })
	return rows, nil
}

// podCollections lists every complete collection of pod in the analysis pod (those with a
// manifest), newest first.
func (o *Options) podCollections(ctx context.Context, pod string) ([]Row, error) {
	refs, err := o.evidence().Refs(ctx, pod)
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, ref := range refs {
		m, err := o.evidence().ReadManifest(ctx, ref)
		if err != nil {
			continue // not complete (no manifest yet): not listed
		}
		rows = append(rows, evidence.RowOf(ref, m))
	}
	return rows, nil
}
