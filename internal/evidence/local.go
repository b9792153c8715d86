package evidence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/verify"
)

// VerifyDir verifies a fetched collection directory on this machine against want: the
// record with the keys, the manifest, then every file below it, hashed here. Nothing of
// the cluster is needed when the keys are given.
func (r *Reader) VerifyDir(ctx context.Context, dir string, want verify.Identity) (Result, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = root.Close() }()
	raw, err := readLocal(root, custody.FileName, int64(r.maxRecord()))
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = nil, nil
	}
	if err != nil {
		return Result{}, err
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return Result{}, err
	}
	if raw == nil && !keys.Required {
		return Result{}, fmt.Errorf("%s has no %s: offline verification needs the signed record (fetch it with kubectl podcopy fetch)", dir, custody.FileName)
	}
	c := verify.Open(ctx, keys, want, dir, raw)
	if !c.Failed() {
		mraw, err := readLocal(root, custody.ManifestSubject, int64(r.maxManifest()))
		if errors.Is(err, fs.ErrNotExist) {
			mraw, err = nil, nil
		}
		if err != nil {
			return Result{}, err
		}
		c.Manifest(mraw)
		if err := c.Dir(root); err != nil {
			return Result{}, err
		}
	}
	v := c.Finish()
	v.Dir = dir
	return v, nil
}

// Chain verifies (and with w, reassembles into it) a followed file's chain in a bucket.
func (r *Reader) Chain(ctx context.Context, ref FollowRef, w io.Writer) (verify.ChainReport, error) {
	c, err := r.S3(ctx)
	if err != nil {
		return verify.ChainReport{}, err
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return verify.ChainReport{}, err
	}
	if keys.Trust.Empty() {
		return verify.ChainReport{}, custody.ErrNoKeys
	}
	versions, err := listVersions(ctx, c, ref.Bucket, ref.Prefix)
	if err != nil {
		return verify.ChainReport{}, err
	}
	return verify.Chain(ctx, "s3://"+ref.Bucket+"/"+ref.Prefix, ref.Identity(), keys.Trust, versions, opener(c, ref.Bucket, ref.Prefix), w)
}
