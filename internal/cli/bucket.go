package cli

import (
	"context"
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
	"github.com/aws/smithy-go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/pathname"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
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

// opener reads one version ("": the latest) of an object below prefix.
func opener(c *s3.Client, bucket, prefix string) verify.Opener {
	return func(ctx context.Context, name, version string) (io.ReadCloser, error) {
		in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + name)}
		if version != "" {
			in.VersionId = aws.String(version)
		}
		out, err := c.GetObject(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("reading s3://%s/%s%s: %w", bucket, prefix, name, err)
		}
		return out.Body, nil
	}
}

// readObject reads version (""; the latest) of key, at most max bytes; nil when it does not
// exist.
func readObject(ctx context.Context, c *s3.Client, bucket, key, version string, max int) ([]byte, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if version != "" {
		in.VersionId = aws.String(version)
	}
	out, err := c.GetObject(ctx, in)
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) || notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(out.Body, int64(max)+1))
	if err == nil && len(b) > max {
		err = fmt.Errorf("s3://%s/%s is larger than %d bytes", bucket, key, max)
	}
	return b, err
}

// maxVersions bounds a versioned listing of one collection or followed file (ten per
// object of a collection at policy.maxFiles' default).
const maxVersions = 1_000_000

// listVersions lists every version and delete marker below prefix (names relative to it).
// A store without versioning answers with its objects, each the latest and unversioned.
func listVersions(ctx context.Context, c *s3.Client, bucket, prefix string) ([]verify.Version, error) {
	var out []verify.Version
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(bucket), Prefix: aws.String(prefix)}
	for {
		page, err := c.ListObjectVersions(ctx, in)
		if err != nil {
			return listLatest(ctx, c, bucket, prefix, err)
		}
		for _, v := range page.Versions {
			out = append(out, verify.Version{Name: strings.TrimPrefix(aws.ToString(v.Key), prefix), VersionID: versionID(v.VersionId),
				Latest: aws.ToBool(v.IsLatest), Size: aws.ToInt64(v.Size), ModTime: aws.ToTime(v.LastModified)})
		}
		for _, d := range page.DeleteMarkers {
			out = append(out, verify.Version{Name: strings.TrimPrefix(aws.ToString(d.Key), prefix), VersionID: versionID(d.VersionId),
				Latest: aws.ToBool(d.IsLatest), DeleteMarker: true, ModTime: aws.ToTime(d.LastModified)})
		}
		if len(out) > maxVersions {
			return nil, fmt.Errorf("s3://%s/%s holds more than %d object versions", bucket, prefix, maxVersions)
		}
		if !aws.ToBool(page.IsTruncated) {
			return out, nil
		}
		in.KeyMarker, in.VersionIdMarker = page.NextKeyMarker, page.NextVersionIdMarker
	}
}

// versionID is a listed version's id; "null" (an object written before versioning) is "".
func versionID(v *string) string {
	if s := aws.ToString(v); s != "null" {
		return s
	}
	return ""
}

// listLatest lists the objects below prefix, each as its only version, for a store that
// cannot list versions (verr says why).
func listLatest(ctx context.Context, c *s3.Client, bucket, prefix string, verr error) ([]verify.Version, error) {
	var out []verify.Version
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing s3://%s/%s: %w (and its versions: %v)", bucket, prefix, err, verr)
		}
		for _, obj := range page.Contents {
			out = append(out, verify.Version{Name: strings.TrimPrefix(aws.ToString(obj.Key), prefix), Latest: true, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)})
		}
		if len(out) > maxVersions {
			return nil, fmt.Errorf("s3://%s/%s holds more than %d objects", bucket, prefix, maxVersions)
		}
	}
	return out, nil
}

// bucketCollection verifies a collection in a bucket into s (a directory with root, or
// nowhere): the verifier reads the record, binds it to the collection the prefix names (and
// to the pod's status when the cluster is reachable and names it), reads the manifest at the
// version the record names, then every signed object at its recorded version, streaming
// each once; newer versions and delete markers over recorded ones are tampering.
func (o *Options) bucketCollection(ctx context.Context, ref bucketRef, root *os.Root, s verify.Sink) (Result, error) {
	c, err := o.s3Client(ctx)
	if err != nil {
		return Result{}, err
	}
	keys, err := o.verifyKeys(ctx)
	if err != nil {
		return Result{}, err
	}
	versions, err := listVersions(ctx, c, ref.bucket, ref.prefix)
	if err != nil {
		return Result{}, err
	}
	var raw []byte
	if version, ok := verify.RecordVersion(versions); ok {
		if raw, err = readObject(ctx, c, ref.bucket, ref.prefix+custody.FileName, version, o.maxRecord()); err != nil {
			return Result{}, err
		}
	}
	check := verify.Open(ctx, keys, o.bucketIdentity(ctx, ref), ref.String(), raw)
	if !check.Failed() {
		mraw, err := readObject(ctx, c, ref.bucket, ref.prefix+custody.ManifestSubject, check.Version(custody.ManifestSubject), o.maxManifest())
		if err != nil {
			return Result{}, err
		}
		if mraw == nil && !check.Signed() {
			return Result{}, fmt.Errorf("%s has no manifest.json: the collection is absent (not complete)", ref)
		}
		check.Manifest(mraw)
		if root != nil && !check.Failed() {
			for name, data := range map[string][]byte{custody.ManifestSubject: mraw, custody.FileName: raw} {
				if data != nil {
					if err := root.WriteFile(name, data, 0o644); err != nil {
						return Result{}, err
					}
				}
			}
		}
	}
	if !check.Failed() {
		if err := check.Bucket(ctx, versions, opener(c, ref.bucket, ref.prefix), s); err != nil {
			return check.Finish(), err
		}
	}
	v := check.Finish()
	v.Dir = ref.String()
	return v, v.Err()
}

// bucketIdentity is what the collection at ref must be: the namespace, pod and id its
// prefix names, and, when the cluster is reachable and the pod's status names this
// collection in this bucket, the pod's UID and the status's manifest pin.
func (o *Options) bucketIdentity(ctx context.Context, ref bucketRef) verify.Identity {
	parts := strings.Split(ref.prefix, "/")
	want := verify.Identity{Namespace: parts[0], Pod: parts[1], Collection: ref.id}
	if o.client == nil {
		return want
	}
	p, err := o.client.CoreV1().Pods(want.Namespace).Get(ctx, want.Pod, metav1.GetOptions{})
	if err != nil {
		return want
	}
	if st, ok := status.Get(p); ok && st.Collection == ref.id && st.Bucket == ref.String() && st.Phase == status.Succeeded {
		want.UID, want.ManifestSHA256 = string(p.UID), st.ManifestSHA256
	}
	return want
}

// verifyBucket verifies a collection in a bucket, hashing every object here.
func (o *Options) verifyBucket(ctx context.Context, ref bucketRef) error {
	res, err := o.bucketCollection(ctx, ref, nil, verify.NewDiscard())
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
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
	res, err := o.bucketCollection(ctx, ref, root, &rootSink{root: root, buf: make([]byte, 256<<10)})
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
		return err
	}
	res.Dir = dest
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

// identity is the followed file the prefix names: every record of the chain must be of it.
func (r followRef) identity() verify.ChainIdentity {
	parts := strings.Split(strings.TrimSuffix(r.prefix, "/"), "/")
	return verify.ChainIdentity{Namespace: parts[0], Pod: parts[1], Container: parts[3], Path: r.path, UID: parts[len(parts)-1]}
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
	versions, err := listVersions(ctx, c, ref.bucket, ref.prefix)
	if err != nil {
		return err
	}
	rep, err := verify.Chain(ctx, "s3://"+ref.bucket+"/"+ref.prefix, ref.identity(), keys, versions, opener(c, ref.bucket, ref.prefix), w)
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
	end := "its end bound by the signed closing record"
	switch {
	case !rep.Closed:
		end = "the chain is open (no closing record yet: the follow is running, or its agent stopped without ending it); its tail is bound only by the bucket's versions (a delete marker or an overwrite would be reported)"
	case rep.ClosedAt < rep.Segments:
		end = fmt.Sprintf("closed at segment %d; segments after it are a follow resumed since (open)", rep.ClosedAt)
	}
	fmt.Fprintf(o.Out, "%s %s: %d segments (%s), each signed, chained to the one before, no gap and no edit; %s\n", verb, ref.path, rep.Segments, size(rep.Bytes), end)
	return nil
}

// notFound is a store's answer that a key or a version does not exist.
func notFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NoSuchVersion", "NotFound":
			return true
		}
	}
	return false
}
