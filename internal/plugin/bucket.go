package plugin

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

	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/verify"
)

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

// verifyBucket verifies a collection in a bucket, hashing every object here.
func (o *Options) verifyBucket(ctx context.Context, ref evidence.BucketRef) error {
	res, err := o.evidence().Bucket(ctx, ref, nil, verify.NewDiscard())
	if failed := (*verify.Error)(nil); err != nil && !errors.As(err, &failed) {
		return err
	}
	return o.report(res, "verified", fmt.Sprintf("%d files (%s) in %s", res.Files, size(res.Bytes), ref))
}

// fetchBucket downloads a collection from a bucket into <out>/<id>, checking as it writes.
func (o *Options) fetchBucket(ctx context.Context, ref evidence.BucketRef, out string) error {
	dest := path.Join(out, ref.ID)
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
	res, err := o.evidence().Bucket(ctx, ref, root, evidence.NewDirSink(root))
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

// followChain verifies (and with out, reassembles into out/<file name>) a followed file's
// chained segments in a bucket.
func (o *Options) followChain(ctx context.Context, ref evidence.FollowRef, out string) error {
	var w io.Writer
	dest := ""
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		dest = path.Join(out, path.Base(ref.Path))
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("%w (fetch writes a new file)", err)
		}
		defer func() { _ = f.Close() }()
		w = f
	}
	rep, err := o.evidence().Chain(ctx, ref, w)
	if err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		lines := make([]string, len(rep.Problems))
		for i, p := range rep.Problems {
			lines[i] = "  BROKEN   " + p
		}
		return fmt.Errorf("verification FAILED for followed file %s (%d segments read, %d problems):\n%s", ref.Path, rep.Segments, len(rep.Problems), strings.Join(lines, "\n"))
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
	fmt.Fprintf(o.Out, "%s %s: %d segments (%s), each signed, chained to the one before, no gap and no edit; %s\n", verb, ref.Path, rep.Segments, size(rep.Bytes), end)
	return nil
}
