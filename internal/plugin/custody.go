package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/yaml"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/verify"
)

// DefaultSigningKeys is the ConfigMap the agent publishes its custody keys in (the agent's
// signing.publicKeys), in --analysis-namespace.
const DefaultSigningKeys = "podcopy-signing-keys"

// DefaultRevocations is the ConfigMap of revocations, beside the published keys.
const DefaultRevocations = "podcopy-revocations"

// keysFlags are the flags that say what verifies custody records.
func (o *Options) keysFlags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&o.KeyFiles, "key", nil, "PEM file of the public keys and signer roots that verify custody records, as kubectl podcopy key prints them (repeatable; default: what the cluster publishes)")
	cmd.Flags().StringVar(&o.TrustedRoot, "trusted-root", "", "Sigstore trusted root (kubectl podcopy key --trusted-root) that verifies records signed with a node's certificate (default: what the cluster publishes)")
	cmd.Flags().StringVar(&o.RevocationsFile, "revocations", "", "YAML list of revocations (kubectl podcopy key --revocations) checked offline with --key or --trusted-root")
}

// signingKeysRef is the published keys' ConfigMap: NAME in --analysis-namespace, or NS/NAME.
func (o *Options) signingKeysRef() (string, string) {
	if ns, name, ok := strings.Cut(o.SigningKeys, "/"); ok {
		return ns, name
	}
	return o.AnalysisNamespace, o.SigningKeys
}

// offline is true when --key or --trusted-root say what to trust (no cluster needed).
func (o *Options) offline() bool { return len(o.KeyFiles) > 0 || o.TrustedRoot != "" }

// custodyTrust is what records are verified with: --key and --trusted-root (with
// --revocations), else what the cluster publishes (keys, the signer's roots, the
// revocations). published is false when there is nothing (no flag, no ConfigMap): the
// cluster does not sign, and an unsigned collection is then not an error.
func (o *Options) custodyTrust(ctx context.Context) (t custody.Trust, published bool, err error) {
	if o.offline() {
		for _, f := range o.KeyFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				return t, true, err
			}
			ft, err := custody.ParseTrustPEM(data)
			if err != nil {
				return t, true, fmt.Errorf("--key %s: %w", f, err)
			}
			t = t.Merge(ft)
		}
		if o.TrustedRoot != "" {
			data, err := os.ReadFile(o.TrustedRoot)
			if err != nil {
				return t, true, err
			}
			tr, err := custody.ParseTrustedRoot(data)
			if err != nil {
				return t, true, fmt.Errorf("--trusted-root %s: %w", o.TrustedRoot, err)
			}
			t = t.Merge(tr)
		}
		if o.RevocationsFile != "" {
			data, err := os.ReadFile(o.RevocationsFile)
			if err != nil {
				return t, true, err
			}
			if err := yaml.UnmarshalStrict(data, &t.Revocations); err != nil {
				return t, true, fmt.Errorf("--revocations %s: %w", o.RevocationsFile, err)
			}
		}
		return t, true, nil
	}
	if o.KeySource != nil {
		return o.KeySource(ctx)
	}
	if o.client == nil {
		return t, false, errors.New("no --key or --trusted-root given, and no cluster to read the published keys from")
	}
	ns, name := o.signingKeysRef()
	t, err = custody.PublishedTrust(ctx, o.client, ns, name, o.Revocations)
	if apierrors.IsNotFound(err) {
		return t, false, nil
	}
	if err != nil {
		return t, true, fmt.Errorf("%w (pass the public keys with --key FILE, or --trusted-root FILE)", err)
	}
	return t, true, nil
}

// verifyKeys are what records verify with and whether the cluster signs (custodyTrust), as
// the verifier takes them.
func (o *Options) verifyKeys(ctx context.Context) (verify.Keys, error) {
	t, published, err := o.custodyTrust(ctx)
	return verify.Keys{Trust: t, Required: published}, err
}

func (o *Options) keyCommand() *cobra.Command {
	var trustedRoot, revocations bool
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print what verifies custody records: the published keys and the signer's roots (PEM, for verify --key), or a Sigstore trusted root, or the revocations",
		Example: `  kubectl podcopy key > podcopy-keys.pem
  kubectl podcopy verify ./evidence/20261123T101500Z-1a2b3c4d --key podcopy-keys.pem   # offline
  kubectl podcopy key --trusted-root > trusted_root.json
  kubectl podcopy key --revocations > revocations.yaml
  kubectl podcopy verify ./evidence/20261123T101500Z-1a2b3c4d --trusted-root trusted_root.json --revocations revocations.yaml
  cosign verify-blob-attestation --bundle ./evidence/ID/custody.intoto.json --trusted-root trusted_root.json \
    --use-signed-timestamps --insecure-ignore-tlog --insecure-ignore-sct --type https://podcopy.dev/custody/v1 \
    --certificate-identity https://podcopy.dev/nodes/NODE --certificate-oidc-issuer https://podcopy.dev/signer ./evidence/ID/manifest.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			ns, name := o.signingKeysRef()
			switch {
			case trustedRoot:
				t, err := custody.PublishedTrust(cmd.Context(), o.client, ns, name, "")
				if err != nil {
					return err
				}
				data, err := custody.TrustedRoot(t, "https://podcopy.dev/signer")
				if err != nil {
					return err
				}
				_, err = o.Out.Write(append(data, '\n'))
				return err
			case revocations:
				rs, err := custody.PublishedRevocations(cmd.Context(), o.client, ns, o.Revocations)
				if err != nil {
					return err
				}
				if rs == nil {
					rs = []custody.Revocation{}
				}
				data, err := yaml.Marshal(rs)
				if err != nil {
					return err
				}
				_, err = o.Out.Write(data)
				return err
			}
			t, err := custody.PublishedTrust(cmd.Context(), o.client, ns, name, "")
			if err != nil {
				return err
			}
			_, err = o.Out.Write(custody.TrustPEM(t))
			return err
		},
	}
	cmd.Flags().BoolVar(&trustedRoot, "trusted-root", false, "print the signer's and the timestamp authority's roots as a Sigstore trusted root (for verify --trusted-root, cosign --trusted-root, sigstore-go)")
	cmd.Flags().BoolVar(&revocations, "revocations", false, "print the revocations (for verify --revocations)")
	cmd.MarkFlagsMutuallyExclusive("trusted-root", "revocations")
	return cmd
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
// --key or --trusted-root): a bucket or a directory is verified without a cluster given them.
func (o *Options) completeForKeys() error {
	if o.offline() {
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

// revokeCommand writes a revocation into the revocations ConfigMap with the user's own
// credentials: only cluster admins (who may write that ConfigMap) can revoke.
func (o *Options) revokeCommand() *cobra.Command {
	var r custody.Revocation
	var from string
	cmd := &cobra.Command{
		Use:   "revoke (--node NODE | --serial HEX) [--from TIME]",
		Short: "Revoke a node's certificates (or one certificate) from a time on: records signed after it fail verify, records signed before still verify",
		Example: `  kubectl podcopy revoke --node node2 --reason "container escape on node2, INC-4711"            # from now on
  kubectl podcopy revoke --node node2 --from 2026-12-07T09:00:00Z --reason "compromised since 09:00"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (r.Node == "") == (r.Serial == "") {
				return errors.New("name --node or --serial (one of them)")
			}
			switch from {
			case "", "now":
				r.From = time.Now().UTC().Truncate(time.Second)
			default:
				t, err := time.Parse(time.RFC3339, from)
				if err != nil {
					return fmt.Errorf("--from %q: use RFC 3339 (2026-12-07T09:00:00Z) or now: %w", from, err)
				}
				r.From = t.UTC()
			}
			if err := o.complete(); err != nil {
				return err
			}
			ns, _ := o.signingKeysRef()
			entry := "node-" + r.Node
			if r.Serial != "" {
				entry = "serial-" + strings.ToLower(r.Serial)
			}
			if err := custody.Revoke(cmd.Context(), o.client, ns, o.Revocations, entry, r); err != nil {
				return err
			}
			fmt.Fprintf(o.Out, "revoked %s from %s in ConfigMap %s/%s: records signed from then on fail verify\n", strings.Replace(entry, "-", " ", 1), r.From.Format(time.RFC3339), ns, o.Revocations)
			return nil
		},
	}
	cmd.Flags().StringVar(&r.Node, "node", "", "revoke every certificate of this node")
	cmd.Flags().StringVar(&r.Serial, "serial", "", "revoke one certificate (hex serial, as verify prints it)")
	cmd.Flags().StringVar(&from, "from", "now", "records signed at or after this time (RFC 3339) are refused")
	cmd.Flags().StringVar(&r.Reason, "reason", "", "why (printed by verify)")
	return cmd
}
