package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/verify"
)

// DefaultSigningKeys is the ConfigMap the agent publishes its custody keys in (the agent's
// signing.publicKeys), in --analysis-namespace.
const DefaultSigningKeys = "podcopy-signing-keys"

// keysFlags are the flags that say which public keys verify custody records.
func (o *Options) keysFlags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&o.KeyFiles, "key", nil, "PEM file of the public key(s) that verify custody records (repeatable; default: the keys the agents publish in the cluster)")
}

// signingKeysRef is the published keys' ConfigMap: NAME in --analysis-namespace, or NS/NAME.
func (o *Options) signingKeysRef() (string, string) {
	if ns, name, ok := strings.Cut(o.SigningKeys, "/"); ok {
		return ns, name
	}
	return o.AnalysisNamespace, o.SigningKeys
}

// custodyKeys are the public keys records are verified with: --key files, else the
// published ConfigMap. published is false when there is neither (no --key, no ConfigMap):
// the cluster does not sign, and an unsigned collection is then not an error.
func (o *Options) custodyKeys(ctx context.Context) (keys []*custody.PublicKey, published bool, err error) {
	if len(o.KeyFiles) > 0 {
		for _, f := range o.KeyFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, true, err
			}
			ks, err := custody.ParsePublicKeys(data)
			if err != nil {
				return nil, true, fmt.Errorf("--key %s: %w", f, err)
			}
			keys = append(keys, ks...)
		}
		return keys, true, nil
	}
	if o.KeySource != nil {
		return o.KeySource(ctx)
	}
	if o.client == nil {
		return nil, false, errors.New("no --key given, and no cluster to read the published keys from")
	}
	ns, name := o.signingKeysRef()
	keys, err = custody.Published(ctx, o.client, ns, name)
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, fmt.Errorf("%w (pass the public keys with --key FILE)", err)
	}
	return keys, true, nil
}

// verifyKeys are the keys and whether the cluster signs (custodyKeys), as the verifier
// takes them.
func (o *Options) verifyKeys(ctx context.Context) (verify.Keys, error) {
	keys, published, err := o.custodyKeys(ctx)
	return verify.Keys{Keys: keys, Required: published}, err
}

func (o *Options) keyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "key",
		Short: "Print the public keys that verify custody records (published by the agents), as PEM for verify --key",
		Example: `  kubectl podcopy key > podcopy-keys.pem
  kubectl podcopy verify ./evidence/20261123T101500Z-1a2b3c4d --key podcopy-keys.pem   # offline`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			ns, name := o.signingKeysRef()
			keys, err := custody.Published(cmd.Context(), o.client, ns, name)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if _, err := o.Out.Write(k.PEM()); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// verifyLocal verifies a fetched collection directory on this machine: the custody record's
// signature with the keys, bound to the directory's collection id (its name) and to what
// --expect names, then every file against the signed digests; nothing of the cluster is
// needed when --key is given.
func (o *Options) verifyLocal(ctx context.Context, dir string) error {
	want, err := o.expectedLocal(dir)
	if err != nil {
		return err
	}
	v, err := o.evidence().VerifyDir(ctx, dir, want)
	if err != nil {
		return err
	}
	return o.report(v, "verified", fmt.Sprintf("%d files (%s) in %s", v.Files, size(v.Bytes), dir))
}

// expectedLocal is the identity a fetched directory must have: the collection id is the
// directory's name (fetch writes <id>/) unless --expect names it; the namespace, pod and
// uid are what --expect and --expect-uid name (not checked when not named: the verdict
// prints the record's, so the person sees what was verified).
func (o *Options) expectedLocal(dir string) (verify.Identity, error) {
	want := verify.Identity{Collection: filepath.Base(filepath.Clean(dir)), UID: o.ExpectUID}
	if o.Expect != "" {
		parts := strings.Split(o.Expect, "/")
		if len(parts) < 2 || len(parts) > 3 || slices.ContainsFunc(parts, func(p string) bool { return p == "" || p == "." || p == ".." }) {
			return want, fmt.Errorf("--expect %q: use NAMESPACE/POD or NAMESPACE/POD/COLLECTION-ID", o.Expect)
		}
		want.Namespace, want.Pod = parts[0], parts[1]
		if len(parts) == 3 {
			want.Collection = parts[2]
		}
	}
	if err := layout.ValidCollectionID(want.Collection); err != nil {
		return want, fmt.Errorf("%w: name the directory by its collection id, or pass --expect NAMESPACE/POD/COLLECTION-ID", err)
	}
	return want, nil
}

// isLocalCollection reports whether arg names a fetched collection directory on this
// machine (verify then runs offline).
func isLocalCollection(arg string) bool {
	st, err := os.Stat(arg)
	if err != nil || !st.IsDir() {
		return false
	}
	_, err = os.Stat(filepath.Join(arg, custody.FileName))
	_, merr := os.Stat(filepath.Join(arg, custody.ManifestSubject))
	return err == nil || merr == nil
}

// completeForKeys connects to the cluster only when the published keys are needed (no
// --key): a bucket or a directory is verified without a cluster given --key.
func (o *Options) completeForKeys() error {
	if len(o.KeyFiles) > 0 {
		if o.Output != "" && o.Output != "json" {
			return fmt.Errorf("--output %q is unknown; use json", o.Output)
		}
		return nil
	}
	if err := o.complete(); err != nil {
		return fmt.Errorf("reading the published custody keys needs the cluster (or pass --key FILE): %w", err)
	}
	return nil
}
