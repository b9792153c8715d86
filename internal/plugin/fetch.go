package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

func (o *Options) fetchCommand() *cobra.Command {
	var out, selector string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fetch (COLLECTION | -l SELECTOR | s3://BUCKET/NS/POD/ID) -o DIR",
		Short: "Download a collection from the analysis pod, verifying every file's SHA-256 against its manifest while writing",
		Example: `  kubectl podcopy fetch mysql-0 -o ./evidence          # the pod's latest collection
  kubectl podcopy fetch mysql-0/20261123T101500Z-1a2b3c4d -o ./evidence`,
		Args: func(cmd *cobra.Command, args []string) error {
			if selector != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				o.Output = "json"
			}
			if selector != "" {
				if err := o.complete(); err != nil {
					return err
				}
				return o.fetchSelected(cmd.Context(), selector, out)
			}
			if fref, ok, err := evidence.ParseFollowRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.followChain(cmd.Context(), fref, out)
			}
			if bref, ok, err := evidence.ParseBucketRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.fetchBucket(cmd.Context(), bref, out)
			}
			if err := o.complete(); err != nil {
				return err
			}
			ref, err := o.evidence().ResolveArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return o.fetch(cmd.Context(), ref, out)
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "fetch the latest collection of every pod matching this label selector, each into DIR/<pod>/")
	// SPEC §8: -o names the directory here; --json gives the machine-readable result.
	cmd.Flags().StringVarP(&out, "output", "o", ".", "directory to write <collection id>/ into (that subdirectory must not exist yet)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	o.keysFlags(cmd)
	return cmd
}

// fetchSelected fetches the latest collection of every pod matching selector into
// out/<pod>/, and fails naming each pod whose fetch failed.
func (o *Options) fetchSelected(ctx context.Context, selector, out string) error {
	pods, err := o.selectPods(ctx, selector)
	if err != nil {
		return err
	}
	var errs []error
	for _, pod := range pods {
		ref, err := o.evidence().ResolveArg(ctx, pod)
		if err == nil {
			err = os.MkdirAll(filepath.Join(out, pod), 0o755)
		}
		if err == nil {
			err = o.fetch(ctx, ref, filepath.Join(out, pod))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", o.namespace, pod, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d pods failed: %w", len(errs), len(pods), errors.Join(errs...))
	}
	return nil
}

// fetch streams the collection as tar from the analysis pod into <out>/<id>, hashing each
// file as it is written, and compares every hash with the manifest read first.
func (o *Options) fetch(ctx context.Context, ref evidence.Ref, out string) error {
	dest := filepath.Join(out, ref.ID)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return fmt.Errorf("%w (fetch writes into a new directory)", err)
	}
	root, err := os.OpenRoot(dest) // every write below stays inside dest (no .., no symlinks out)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	ev := o.evidence()
	ev.SpoolDir = out // the stream waits beside where it goes, never in a small /tmp
	res, err := ev.Stream(ctx, ref, evidence.NewDirSink(root))
	res.Dir = dest
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
		return err
	}
	return o.report(res, "fetched", fmt.Sprintf("%d files (%s) to %s", res.Files, size(res.Bytes), dest))
}

// report prints a fetch or verify verdict: the record's identity first, then the result;
// anything wrong is an error naming every problem.
func (o *Options) report(v Result, verb, summary string) error {
	if o.Output == "json" {
		if err := o.printJSON(v); err != nil {
			return err
		}
		return v.Err()
	}
	if !v.OK() {
		return v.Err()
	}
	if r := v.Record; r != nil {
		by := "key " + v.SignedBy
		if v.Signer != nil {
			by = v.Signer.String()
		}
		fmt.Fprintf(o.Out, "custody record: collection %s of pod %s/%s (uid %s) on node %s, signed by %s\n",
			status.Printable(r.Collection), status.Printable(r.Namespace), status.Printable(r.Pod), status.Printable(r.UID), status.Printable(r.Node), by)
	}
	fmt.Fprintf(o.Out, "%s %s; every SHA-256 matches %s\n", verb, summary, v.Against())
	return nil
}

func (o *Options) verifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify COLLECTION | s3://BUCKET/NS/POD/ID | DIR",
		Short: "Check a collection's signed custody record, then re-hash every file in place in the analysis pod (or in DIR, a fetched collection, offline with --key)",
		Example: `  kubectl podcopy verify mysql-0                                  # in the analysis pod
  kubectl podcopy verify ./evidence/20261123T101500Z-1a2b3c4d --key keys.pem   # offline`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ref, ok, err := evidence.ParseFollowRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.followChain(cmd.Context(), ref, "")
			}
			if ref, ok, err := evidence.ParseBucketRef(args[0]); ok {
				if err != nil {
					return err
				}
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.verifyBucket(cmd.Context(), ref)
			}
			if isLocalCollection(args[0]) {
				if err := o.completeForKeys(); err != nil {
					return err
				}
				return o.verifyLocal(cmd.Context(), args[0])
			}
			if err := o.complete(); err != nil {
				return err
			}
			ref, err := o.evidence().ResolveArg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return o.verify(cmd.Context(), ref)
		},
	}
	o.keysFlags(cmd)
	cmd.Flags().StringVar(&o.Expect, "expect", "", "offline (DIR): the collection the directory must be, NAMESPACE/POD[/COLLECTION-ID] (default: the collection id is the directory's name; namespace and pod are printed, not checked)")
	cmd.Flags().StringVar(&o.ExpectUID, "expect-uid", "", "offline (DIR): the source pod's UID the record must name")
	return cmd
}

// verify reads the collection from the analysis pod and hashes it here (nothing the
// analysis pod computes is believed), then reports.
func (o *Options) verify(ctx context.Context, ref evidence.Ref) error {
	res, err := o.evidence().VerifyInPlace(ctx, ref)
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
		return err
	}
	return o.report(res, "verified", fmt.Sprintf("%d files (%s) in %s", res.Files, size(res.Bytes), res.Dir))
}
