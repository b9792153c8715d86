package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podcopy/podcopy/internal/exec"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/manifest"
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

// signed is what a custody record says, once verified: the digests a collection must have.
type signed struct {
	rec custody.Record
	// sum is the record's own SHA-256 (fetch compares the streamed copy with it).
	sum string
}

// checkRecord verifies raw (nil: the collection has no record) with the known keys. It
// returns nil, nil for an unsigned collection where nothing is published (the caller then
// falls back to the manifest alone, and says so).
func (o *Options) checkRecord(ctx context.Context, raw []byte, where string) (*signed, error) {
	keys, published, err := o.custodyKeys(ctx)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		if published {
			return nil, failedf("verification FAILED: %s has no %s, but custody keys are published (or given with --key): its record was removed, or it was not written by a signing agent", where, custody.FileName)
		}
		return nil, nil
	}
	rec, err := custody.Verify(ctx, raw, keys)
	if err != nil {
		return nil, failedf("verification FAILED for %s: %w", where, err)
	}
	if rec.PredicateType != custody.PredicateType {
		return nil, failedf("verification FAILED for %s: its record is a %s, not a collection's", where, rec.PredicateType)
	}
	sum := sha256.Sum256(raw)
	return &signed{rec: rec, sum: hex.EncodeToString(sum[:])}, nil
}

// readRecord reads the collection's custody record in the analysis pod (nil: there is none).
func (o *Options) readRecord(ctx context.Context, ref collectionRef) ([]byte, error) {
	out := &exec.Output{Max: custody.MaxRecordBytes}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	p := ref.dir + "/" + custody.FileName
	err := o.exec.Exec(ctx, exec.Request{Target: ref.analysis, Command: []string{"sh", "-c", `[ -f "$1" ] || exit 3; exec cat -- "$1"`, "podcopy-read", p}, Stdout: out, Stderr: io.Discard})
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Code == 3 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", p, ref.analysis, err)
	}
	return out.Bytes(), nil
}

// expected is one file a verification hashes: its name relative to the collection
// directory, the source path it is reported by, and the digest it must have.
type expected struct {
	rel, src, sha256 string
	size             int64
}

// expectations are the files to check: the signed subjects when the collection is signed
// (the manifest is then one of them), else the manifest's files.
func expectations(m manifest.Manifest, s *signed) []expected {
	sizes := map[string]int64{}
	var out []expected
	for _, f := range m.Files {
		rel := custody.FileSubject(m.Source.Container, f.Path)
		sizes[rel] = f.Size
		if s == nil {
			out = append(out, expected{rel: rel, src: f.Path, sha256: f.SHA256, size: f.Size})
		}
	}
	for _, r := range m.Records {
		sizes[r.Name] = r.Size
		if s == nil && r.SHA256 != "" {
			out = append(out, expected{rel: r.Name, src: r.Name, sha256: r.SHA256, size: r.Size})
		}
	}
	if s == nil {
		return out
	}
	for _, name := range s.rec.Names() {
		if name == custody.ManifestSubject {
			continue
		}
		src := name
		if c, p, ok := strings.Cut(name, "/"); ok && c == s.rec.Predicate.Container.Name {
			src = "/" + p
		}
		out = append(out, expected{rel: name, src: src, sha256: s.rec.Subjects[name], size: sizes[name]})
	}
	return out
}

// recordSum is the record's SHA-256, "" when unsigned.
func (s *signed) recordSum() string {
	if s == nil {
		return ""
	}
	return s.sum
}

// checkManifest compares the manifest's hash with the signed one.
func (s *signed) checkManifest(sum string, res *Result) {
	if s == nil {
		return
	}
	res.SignedBy = s.rec.KeyID
	if want := s.rec.Subjects[custody.ManifestSubject]; want != sum {
		res.Mismatched = append(res.Mismatched, fmt.Sprintf("manifest.json: sha256 %s, but the custody record signed %s", sum, want))
	}
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
// signature with the keys, then every file against the signed digests; nothing of the
// cluster is needed when --key is given.
func (o *Options) verifyLocal(ctx context.Context, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	raw, err := readLocal(root, custody.FileName, custody.MaxRecordBytes)
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = nil, nil
	}
	if err != nil {
		return err
	}
	s, err := o.checkRecord(ctx, raw, dir)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("%s has no %s: offline verification needs the signed record (fetch it with kubectl podcopy fetch)", dir, custody.FileName)
	}
	res := Result{Collection: s.rec.Predicate.Collection, Dir: dir}
	mraw, err := readLocal(root, custody.ManifestSubject, maxManifestRead)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		res.Missing = append(res.Missing, custody.ManifestSubject)
		res.SignedBy = s.rec.KeyID
	case err != nil:
		return err
	default:
		sum := sha256.Sum256(mraw)
		s.checkManifest(hex.EncodeToString(sum[:]), &res)
	}
	want := map[string]expected{}
	for _, e := range expectations(manifest.Manifest{}, s) {
		want[e.rel] = e
	}
	buf := make([]byte, 256<<10)
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || p == custody.FileName || p == custody.ManifestSubject {
			return nil
		}
		e, ok := want[p]
		if !ok || !d.Type().IsRegular() {
			res.Unexpected = append(res.Unexpected, p+" (not in the signed record)")
			return nil
		}
		delete(want, p)
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, f, buf)
		_ = f.Close()
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.sha256 {
			res.Mismatched = append(res.Mismatched, fmt.Sprintf("%s: sha256 %s, signed %s", e.src, got, e.sha256))
			return nil
		}
		res.Files++
		res.Bytes += n
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range want {
		res.Missing = append(res.Missing, e.src)
	}
	sort.Strings(res.Missing)
	return o.report(res, "verified", fmt.Sprintf("%d files (%s) in %s", res.Files, size(res.Bytes), dir))
}

// readLocal reads name below root, at most max bytes.
func readLocal(root *os.Root, name string, max int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s is larger than %d bytes", filepath.Join(root.Name(), name), max)
	}
	return b, err
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
