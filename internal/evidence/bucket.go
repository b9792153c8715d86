package evidence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/pathname"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

// BucketRef is a collection in a bucket: s3://<bucket>/<namespace>/<pod>/<collection id>/.
type BucketRef struct {
	Bucket, Prefix, ID string
}

// String is the collection's prefix as a URL.
func (r BucketRef) String() string { return "s3://" + r.Bucket + "/" + r.Prefix }

// ParseBucketRef reads s3://BUCKET/NAMESPACE/POD/COLLECTION-ID[/].
func ParseBucketRef(arg string) (BucketRef, bool, error) {
	rest, ok := strings.CutPrefix(arg, "s3://")
	if !ok {
		return BucketRef{}, false, nil
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) != 4 || slicesContainsEmpty(parts) {
		return BucketRef{}, true, fmt.Errorf("%q: name a collection as s3://BUCKET/NAMESPACE/POD/COLLECTION-ID/ (the status's bucket)", arg)
	}
	if pathname.Canonical("/"+path.Join(parts[1:]...)) != nil {
		return BucketRef{}, true, fmt.Errorf("%q is not a clean collection prefix", arg)
	}
	return BucketRef{Bucket: parts[0], Prefix: path.Join(parts[1:]...) + "/", ID: parts[3]}, true, nil
}

func slicesContainsEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return true
		}
	}
	return false
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

// Bucket verifies a collection in a bucket into s (a directory with root, or
// nowhere): the verifier reads the record, binds it to the collection the prefix names (and
// to the pod's status when the cluster is reachable and names it), reads the manifest at the
// version the record names, then every signed object at its recorded version, streaming
// each once; newer versions and delete markers over recorded ones are tampering.
func (r *Reader) Bucket(ctx context.Context, ref BucketRef, root *os.Root, s verify.Sink) (Result, error) {
	c, err := r.S3(ctx)
	if err != nil {
		return Result{}, err
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return Result{}, err
	}
	versions, err := listVersions(ctx, c, ref.Bucket, ref.Prefix)
	if err != nil {
		return Result{}, err
	}
	var raw []byte
	if version, ok := verify.RecordVersion(versions); ok {
		if raw, err = readObject(ctx, c, ref.Bucket, ref.Prefix+custody.FileName, version, r.maxRecord()); err != nil {
			return Result{}, err
		}
	}
	check := verify.Open(ctx, keys, r.bucketIdentity(ctx, ref), ref.String(), raw)
	if !check.Failed() {
		mraw, err := readObject(ctx, c, ref.Bucket, ref.Prefix+custody.ManifestSubject, check.Version(custody.ManifestSubject), r.maxManifest())
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
		if err := check.Bucket(ctx, versions, opener(c, ref.Bucket, ref.Prefix), s); err != nil {
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
func (r *Reader) bucketIdentity(ctx context.Context, ref BucketRef) verify.Identity {
	parts := strings.Split(ref.Prefix, "/")
	want := verify.Identity{Namespace: parts[0], Pod: parts[1], Collection: ref.ID}
	if r.Client == nil {
		return want
	}
	p, err := r.Client.CoreV1().Pods(want.Namespace).Get(ctx, want.Pod, metav1.GetOptions{})
	if err != nil {
		return want
	}
	if st, ok := status.Get(p); ok && st.Collection == ref.ID && st.Bucket == ref.String() && st.Phase == status.Succeeded {
		want.UID, want.ManifestSHA256 = string(p.UID), st.ManifestSHA256
	}
	return want
}

// FollowRef is a followed file in a bucket:
// s3://<bucket>/<ns>/<pod>/follow/<container>/<path>/<uid>/.
type FollowRef struct {
	Bucket, Prefix, Path string
}

// Identity is the followed file the prefix names: every record of the chain must be of it.
func (r FollowRef) Identity() verify.ChainIdentity {
	parts := strings.Split(strings.TrimSuffix(r.Prefix, "/"), "/")
	return verify.ChainIdentity{Namespace: parts[0], Pod: parts[1], Container: parts[3], Path: r.Path, UID: parts[len(parts)-1]}
}

// ParseFollowRef reads a followed file's prefix (ok false when arg is not one).
func ParseFollowRef(arg string) (FollowRef, bool, error) {
	rest, ok := strings.CutPrefix(arg, "s3://")
	if !ok {
		return FollowRef{}, false, nil
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) < 7 || parts[3] != "follow" {
		return FollowRef{}, false, nil
	}
	if slicesContainsEmpty(parts) || pathname.Canonical("/"+path.Join(parts[1:]...)) != nil {
		return FollowRef{}, true, fmt.Errorf("%q is not a clean prefix of a followed file", arg)
	}
	return FollowRef{Bucket: parts[0], Prefix: path.Join(parts[1:]...) + "/", Path: "/" + path.Join(parts[5:len(parts)-1]...)}, true, nil
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
