package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
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

// Row is one collection in ls (and in the web console).
type Row struct {
	Namespace   string `json:"namespace"`
	Pod         string `json:"pod"`
	Collection  string `json:"collection"`
	Phase       string `json:"phase"`
	Files       int    `json:"files"`
	Bytes       int64  `json:"bytes"`
	Started     string `json:"startTime"`
	RequestedBy string `json:"requestedBy,omitempty"`
	Where       string `json:"destination"`
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
	refs, err := o.collectionRefs(ctx, pod)
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, ref := range refs {
		m, err := o.readManifest(ctx, ref)
		if err != nil {
			continue // not complete (no manifest yet): not listed
		}
		rows = append(rows, rowOf(ref, m))
	}
	return rows, nil
}

// rowOf is collection ref's line in a list, from its manifest.
func rowOf(ref collectionRef, m manifest.Manifest) Row {
	return Row{Namespace: ref.namespace, Pod: ref.pod, Collection: ref.id, Phase: string(status.Succeeded),
		Files: m.Totals.Files, Bytes: m.Totals.Bytes, Started: m.StartTime, RequestedBy: m.RequestedBy,
		Where: fmt.Sprintf("%s:%s", ref.analysis, ref.dir)}
}

// collectionRefs lists the collection directories of pod in the analysis pod, newest first
// (complete or not: nothing is read in them).
func (o *Options) collectionRefs(ctx context.Context, pod string) ([]collectionRef, error) {
	l, err := layout.New(o.Dir, o.namespace, pod)
	if err != nil {
		return nil, err
	}
	a, err := o.analysis(ctx)
	if err != nil {
		return nil, err
	}
	out := &exec.Output{Max: maxListing}
	// ls of the pod's directory: collection ids are directory names (staging and follow are
	// skipped below); a missing directory is an empty list.
	lctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	if err := o.exec.Exec(lctx, exec.Request{Target: a, Command: []string{"ls", "-1", "--", l.Root()}, Stdout: out}); err != nil {
		if exit := (*exec.ExitError)(nil); !errors.As(err, &exit) {
			return nil, err
		}
	}
	var refs []collectionRef
	for _, id := range strings.Fields(out.String()) {
		ref := collectionRef{namespace: o.namespace, pod: pod, id: id, analysis: a}
		if ref.dir, err = l.Collection(id); err != nil {
			continue // not a collection id: the follow directory or staging
		}
		refs = append(refs, ref)
	}
	// Collection ids begin with their UTC start time: newest first.
	sort.Slice(refs, func(i, j int) bool { return refs[i].id > refs[j].id })
	return refs, nil
}

// readManifest reads a collection's manifest.json from the analysis pod, for a listing
// (ls believes it as ls always has: fetch and verify check it).
func (o *Options) readManifest(ctx context.Context, ref collectionRef) (manifest.Manifest, error) {
	var m manifest.Manifest
	raw, err := o.readManifestRaw(ctx, ref)
	if err == nil {
		err = json.Unmarshal(raw, &m)
	}
	return m, err
}

// maxManifestRead bounds what the plugin reads as a manifest (the agent caps it at
// policy.maxManifestBytes, 8 MiB by default).
const maxManifestRead = 64 << 20

// maxListing bounds the listing of a pod's directory in the analysis pod (a collection's
// name is about 30 bytes: half a million of them).
const maxListing = 16 << 20

// readManifestRaw reads the collection's manifest.json (at most maxManifest bytes); a
// missing one is an error (the collection is not complete).
func (o *Options) readManifestRaw(ctx context.Context, ref collectionRef) ([]byte, error) {
	out := &exec.Output{Max: o.maxManifest()}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	if err := o.exec.Exec(ctx, exec.Request{Target: ref.analysis, Command: []string{"cat", "--", ref.dir + "/manifest.json"}, Stdout: out}); err != nil {
		return nil, fmt.Errorf("reading %s/manifest.json in %s: %w", ref.dir, ref.analysis, err)
	}
	return out.Bytes(), nil
}
