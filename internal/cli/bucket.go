package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/podcopy/podcopy/internal/follow"
	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// bucketRef is a collection in a bucket: s3://<bucket>/<namespace>/<pod>/<collection id>/.
type bucketRef struct {
	bucket, prefix, id string
}

func (r bucketRef) String() string { return "s3://" + r.bucket + "/" + r.prefix }

// parseBucketRef reads s3://BUCKET/NAMESPACE/POD/COLLECTION-ID[/].
func parseBucketRef(arg string) (bucketRef, bool, error) {
	rest, ok := strings.CutPrefix(arg, "s3://")
	if !ok {
		return bucketRef{}, false, nil
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) != 4 || slicesContainsEmpty(parts) {
		return bucketRef{}, true, fmt.Errorf("%q: name a collection as s3://BUCKET/NAMESPACE/POD/COLLECTION-ID/ (the status's bucket)", arg)
	}
	if pathname.Canonical("/"+path.Join(parts[1:]...)) != nil {
		return bucketRef{}, true, fmt.Errorf("%q is not a clean collection prefix", arg)
	}
	return bucketRef{bucket: parts[0], prefix: path.Join(parts[1:]...) + "/", id: parts[3]}, true, nil
}

func slicesContainsEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return true
		}
	}
	return false
}

// s3Client is a client for the user's own S3 credentials (the AWS environment variables and
// profiles), at --s3-endpoint (or $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL) with --s3-ca.
func (o *Options) s3Client(ctx context.Context) (*s3.Client, error) {
	endpoint := o.S3Endpoint
	for _, env := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		if endpoint == "" {
			endpoint = os.Getenv(env)
		}
	}
	return objstore.NewClient(ctx, endpoint, o.S3Region, o.S3CA)
}

// readObject reads key (at most max bytes); nil when it does not exist.
func readObject(ctx context.Context, c *s3.Client, bucket, key string, max int64) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(out.Body, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("s3://%s/%s is larger than %d bytes", bucket, key, max)
	}
	return b, err
}

// bucketCollection verifies (and with root, fetches into it) a collection in a bucket: the
// custody record's signature, then every object against the signed digests, streaming
// each object once; objects under the prefix that nothing signed are reported.
func (o *Options) bucketCollection(ctx context.Context, ref bucketRef, root *os.Root, res *Result) error {
	c, err := o.s3Client(ctx)
	if err != nil {
		return err
	}
	raw, err := readObject(ctx, c, ref.bucket, ref.prefix+custody.FileName, custody.MaxRecordBytes)
	if err != nil {
		return err
	}
	sig, err := o.checkRecord(ctx, raw, ref.String())
	if err != nil {
		return err
	}
	mraw, err := readObject(ctx, c, ref.bucket, ref.prefix+custody.ManifestSubject, maxManifestRead)
	if err != nil {
		return err
	}
	if mraw == nil {
		return fmt.Errorf("%s has no manifest.json: the collection is absent (not complete)", ref)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(mraw, &m); err != nil {
		return fmt.Errorf("%smanifest.json: %w", ref, err)
	}
	sum := sha256.Sum256(mraw)
	sig.checkManifest(hex.EncodeToString(sum[:]), res)
	if root != nil {
		for name, data := range map[string][]byte{custody.ManifestSubject: mraw, custody.FileName: raw} {
			if data != nil {
				if err := root.WriteFile(name, data, 0o644); err != nil {
					return err
				}
			}
		}
	}
	want := map[string]expected{}
	for _, e := range expectations(m, sig) {
		want[e.rel] = e
	}
	// Every object under the prefix: signed ones are hashed (and written), others reported.
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(ref.bucket), Prefix: aws.String(ref.prefix)})
	buf := make([]byte, 256<<10)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing %s: %w", ref, err)
		}
		for _, obj := range page.Contents {
			rel := strings.TrimPrefix(aws.ToString(obj.Key), ref.prefix)
			if rel == custody.FileName || rel == custody.ManifestSubject {
				continue
			}
			e, ok := want[rel]
			if !ok {
				res.Unexpected = append(res.Unexpected, rel+" (not in the "+digestOrigin(sig)+")")
				continue
			}
			delete(want, rel)
			got, n, err := o.hashObject(ctx, c, ref.bucket, aws.ToString(obj.Key), root, rel, buf)
			if err != nil {
				return err
			}
			if got != e.sha256 {
				res.Mismatched = append(res.Mismatched, fmt.Sprintf("%s: sha256 %s, %s %s", e.src, got, digestOrigin(sig), e.sha256))
				continue
			}
			res.Files++
			res.Bytes += n
		}
	}
	for _, e := range want {
		res.Missing = append(res.Missing, e.src)
	}
	sort.Strings(res.Missing)
	return nil
}

// digestOrigin names where a collection's digests came from.
func digestOrigin(s *signed) string {
	if s != nil {
		return "signed record"
	}
	return "manifest"
}

// hashObject streams key, hashing it, into rel below root when root is set.
func (o *Options) hashObject(ctx context.Context, c *s3.Client, bucket, key string, root *os.Root, rel string, buf []byte) (string, int64, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return "", 0, fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	defer func() { _ = out.Body.Close() }()
	h := sha256.New()
	if root == nil {
		n, err := io.CopyBuffer(h, out.Body, buf)
		return hex.EncodeToString(h.Sum(nil)), n, err
	}
	if pathname.Canonical("/"+rel) != nil {
		return "", 0, fmt.Errorf("object %s is not a clean name", key)
	}
	n, err := writeFileN(root, rel, out.Body, buf, h)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// verifyBucket verifies a collection in a bucket in place.
func (o *Options) verifyBucket(ctx context.Context, ref bucketRef) error {
	res := Result{Collection: ref.id, Dir: ref.String()}
	if err := o.bucketCollection(ctx, ref, nil, &res); err != nil {
		return err
	}
	return o.report(res, "verified", fmt.Sprintf("%d files (%s) in %s", res.Files, size(res.Bytes), ref))
}

// fetchBucket downloads a collection from a bucket into <out>/<id>, checking as it writes.
func (o *Options) fetchBucket(ctx context.Context, ref bucketRef, out string) error {
	dest := path.Join(out, ref.id)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return fmt.Errorf("%w (fetch writes into a new directory)", err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	res := Result{Collection: ref.id, Dir: dest}
	if err := o.bucketCollection(ctx, ref, root, &res); err != nil {
		return err
	}
	return o.report(res, "fetched", fmt.Sprintf("%d files (%s) from %s to %s", res.Files, size(res.Bytes), ref, dest))
}

// bucketCollections lists the collections under s3://BUCKET[/NAMESPACE[/POD]]: each
// <ns>/<pod>/<id>/ prefix, Complete when its manifest and custody record are there (the
// agent writes them last), else Incomplete (absent to readers: a failed or running one).
func (o *Options) bucketCollections(ctx context.Context, arg string) ([]Row, error) {
	rest := strings.TrimSuffix(strings.TrimPrefix(arg, "s3://"), "/")
	bucket, prefix, _ := strings.Cut(rest, "/")
	depth := 0
	if prefix != "" {
		depth = len(strings.Split(prefix, "/"))
		prefix += "/"
	}
	if bucket == "" || depth > 2 {
		return nil, fmt.Errorf("%q: list s3://BUCKET, s3://BUCKET/NAMESPACE or s3://BUCKET/NAMESPACE/POD", arg)
	}
	c, err := o.s3Client(ctx)
	if err != nil {
		return nil, err
	}
	// Every collection has a manifest.json or a custody record or a file under <ns>/<pod>/<id>/;
	// one listing of the keys finds them all (and their marker objects).
	type col struct{ manifest, record bool }
	found := map[string]*col{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, obj := range page.Contents {
			parts := strings.SplitN(aws.ToString(obj.Key), "/", 4)
			if len(parts) < 4 || parts[2] == "follow" { // followed files are chains, not collections
				continue
			}
			key := path.Join(parts[:3]...)
			if found[key] == nil {
				found[key] = &col{}
			}
			switch parts[3] {
			case custody.ManifestSubject:
				found[key].manifest = true
			case custody.FileName:
				found[key].record = true
			}
		}
	}
	var rows []Row
	for key, c := range found {
		parts := strings.Split(key, "/")
		phase := "Complete"
		if !c.manifest {
			phase = "Incomplete"
		} else if !c.record {
			phase = "Complete (unsigned)"
		}
		rows = append(rows, Row{Namespace: parts[0], Pod: parts[1], Collection: parts[2], Phase: phase, Where: "s3://" + bucket + "/" + key + "/"})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Where < rows[j].Where })
	return rows, nil
}

// followRef is a followed file in a bucket:
// s3://<bucket>/<ns>/<pod>/follow/<container>/<path>/<uid>/.
type followRef struct {
	bucket, prefix, path string
}

// parseFollowRef reads a followed file's prefix (ok false when arg is not one).
func parseFollowRef(arg string) (followRef, bool, error) {
	rest, ok := strings.CutPrefix(arg, "s3://")
	if !ok {
		return followRef{}, false, nil
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) < 7 || parts[3] != "follow" {
		return followRef{}, false, nil
	}
	if slicesContainsEmpty(parts) || pathname.Canonical("/"+path.Join(parts[1:]...)) != nil {
		return followRef{}, true, fmt.Errorf("%q is not a clean prefix of a followed file", arg)
	}
	return followRef{bucket: parts[0], prefix: path.Join(parts[1:]...) + "/", path: "/" + path.Join(parts[5:len(parts)-1]...)}, true, nil
}

// followChain verifies (and with out, reassembles into out/<file name>) a followed file's
// chained segments in a bucket.
func (o *Options) followChain(ctx context.Context, ref followRef, out string) error {
	c, err := o.s3Client(ctx)
	if err != nil {
		return err
	}
	keys, _, err := o.custodyKeys(ctx)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return custody.ErrNoKeys
	}
	var w io.Writer
	dest := ""
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		dest = path.Join(out, path.Base(ref.path))
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("%w (fetch writes a new file)", err)
		}
		defer func() { _ = f.Close() }()
		w = f
	}
	rep, err := follow.Reassemble(ctx, c, ref.bucket, ref.prefix, keys, w)
	if err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		lines := make([]string, len(rep.Problems))
		for i, p := range rep.Problems {
			lines[i] = "  BROKEN   " + p
		}
		return fmt.Errorf("verification FAILED for followed file %s (%d segments read, %d problems):\n%s", ref.path, rep.Segments, len(rep.Problems), strings.Join(lines, "\n"))
	}
	verb := "verified"
	if dest != "" {
		verb = "fetched to " + dest + ";"
	}
	fmt.Fprintf(o.Out, "%s %s: %d segments (%s), each signed, chained to the one before, no gap and no edit\n", verb, ref.path, rep.Segments, size(rep.Bytes))
	return nil
}
