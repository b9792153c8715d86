package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/exec"
)

// The bucket's rows: podcopy writing to the evidence store's bucket with no analysis pod
// (one exec leg, the source's, instead of two); the floor of that leg (the source's tar
// relayed into this process and dropped: no validation, no hashing, no upload); and the S3
// server's own cost (the bytes podcopy uploads, PUT from this node with podcopy's uploader
// and no exec at all).
const (
	methodBucket      = "podcopy into the bucket, no analysis pod (spdy)"
	methodFloorOneLeg = "floor, one leg: the source's tar relayed in-process to nothing"
	methodS3Alone     = "S3 server alone: the same objects PUT from this node, no exec"
)

func bucketMethod(m string) bool {
	return m == methodBucket || m == methodFloorOneLeg || m == methodS3Alone
}

// floorOneLeg is the source's leg alone: its tar read here and discarded.
func (e *env) floorOneLeg(ctx context.Context, src exec.Target, path string) (time.Duration, error) {
	t0 := time.Now()
	err := e.exec.Exec(ctx, exec.Request{Target: src, Command: []string{"tar", "-c", "-f", "-", "-C", "/var/log/bench", path}, Stdout: io.Discard})
	return time.Since(t0), err
}

// s3Alone writes what podcopy uploads for w with podcopy's own uploader (parts in flight,
// per-part SHA-256 checksums): one object of w.Bytes, or for many small files their bundles
// (4 MiB of members, a 512-byte header and 1 KiB each).
func (e *env) s3Alone(ctx context.Context, st *objstore.Store, prefix string, w workload) (time.Duration, error) {
	total, object := w.Bytes, w.Bytes
	if w.Files > 0 {
		total = int64(w.Files) * 1536
		object = 4 << 20 // DefaultBundles.MaxBytes
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 256<<10)
	t0 := time.Now()
	up := st.Begin(nil, 16)
	for i := 0; total > 0; i++ {
		n := min(object, total)
		ow, err := up.Create(ctx, fmt.Sprintf("%s%06d", prefix, i), n)
		if err != nil {
			return 0, err
		}
		for left := n; left > 0; {
			k := min(left, int64(len(buf)))
			_, _ = rng.Read(buf[:k])
			if _, err := ow.Write(buf[:k]); err != nil {
				return 0, err
			}
			left -= k
		}
		if err := ow.Close(); err != nil {
			return 0, err
		}
		total -= n
	}
	err := up.Wait(ctx)
	return time.Since(t0), err
}

// bucketRows measures podcopy into the bucket for the 1 GiB, 10,000- and 100,000-file workloads: the
// bench namespace in bucket mode, Object Lock off so each round's objects can be removed.
func (e *env) bucketRows(ctx context.Context, ns string, ws []workload, get func(workload, string) *result, trigger *int) error {
	fmt.Println("agent: destination bucket only (evidence store), exec.transport=spdy")
	if err := e.helm(ctx, "config.exec.transport=spdy", "config.compression=none", "config.policy.maxBytes=4Gi", "config.policy.maxFiles=200000", "config.policy.maxManifestBytes=64Mi",
		"config.destination.namespaceModes."+ns+"=bucket", "config.destination.s3.objectLock.mode=", "config.destination.s3.objectLock.days=0"); err != nil {
		return err
	}
	c, bucket, err := e.bucketClient(ctx)
	if err != nil {
		return err
	}
	st, err := objstore.Open(c, objstore.Config{Bucket: bucket})
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.Gzip || w.Source != "" || !e.o.selected(w.Name) || (w.Name != "1 GiB random" && w.Name != "10,000 files of 1 KiB" && w.Name != "100,000 files of 1 KiB") {
			continue
		}
		for round := range e.o.rounds {
			src := exec.Target{Namespace: ns, Pod: "src", Container: "app"}
			if s, err := measured(wall(func() (time.Duration, error) { return e.floorOneLeg(ctx, src, w.Path) })); err != nil {
				get(w, methodFloorOneLeg).fail(err)
			} else {
				get(w, methodFloorOneLeg).Samples = append(get(w, methodFloorOneLeg).Samples, s)
			}
			if s, err := measured(wall(func() (time.Duration, error) { return e.s3Alone(ctx, st, "bench-s3-alone/", w) })); err != nil {
				get(w, methodS3Alone).fail(err)
			} else {
				get(w, methodS3Alone).Samples = append(get(w, methodS3Alone).Samples, s)
			}
			if err := emptyPrefix(ctx, c, bucket, "bench-s3-alone/"); err != nil {
				return err
			}
			if s, err := measured(func() (sample, error) { return e.podcopyOnce(ctx, ns, "/var/log/bench/"+w.Path, "", trigger) }); err != nil {
				get(w, methodBucket).fail(err)
			} else {
				get(w, methodBucket).Samples = append(get(w, methodBucket).Samples, s)
			}
			if err := emptyPrefix(ctx, c, bucket, ns+"/"); err != nil {
				return err
			}
			fmt.Printf("  %-24s bucket round %d/%d done\n", w.Name, round+1, e.o.rounds)
		}
	}
	return nil
}

// bucketClient reaches the chart's evidence store as the agent does.
func (e *env) bucketClient(ctx context.Context) (*s3.Client, string, error) {
	port, err := os.ReadFile(filepath.Join(e.o.state, "evidence-port"))
	if err != nil {
		return nil, "", fmt.Errorf("the evidence store is not deployed (hack/deploy.sh helm): %w", err)
	}
	creds, err := e.client.CoreV1().Secrets("podcopy").Get(ctx, "podcopy-agent-evidence", metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	tls, err := e.client.CoreV1().Secrets("podcopy").Get(ctx, "podcopy-agent-evidence-tls", metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	c, err := objstore.ClientOptions{Endpoint: "https://127.0.0.1:" + strings.TrimSpace(string(port)), CA: tls.Data["ca.crt"],
		AccessKeyID: string(creds.Data["AWS_ACCESS_KEY_ID"]), SecretAccessKey: string(creds.Data["AWS_SECRET_ACCESS_KEY"])}.Client(ctx)
	return c, "evidence", err
}

// emptyPrefix deletes every version under prefix (unlocked objects).
func emptyPrefix(ctx context.Context, c *s3.Client, bucket, prefix string) error {
	p := s3.NewListObjectVersionsPaginator(c, &s3.ListObjectVersionsInput{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, v := range page.Versions {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: v.Key, VersionId: v.VersionId, BypassGovernanceRetention: aws.Bool(true)}); err != nil {
				return err
			}
		}
		for _, m := range page.DeleteMarkers {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: m.Key, VersionId: m.VersionId}); err != nil {
				return err
			}
		}
	}
	return nil
}
