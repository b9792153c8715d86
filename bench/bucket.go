package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/objstore"
)

// methodBucket is podcopy writing to the evidence store's bucket with no analysis pod: one
// exec leg (the source's) instead of two.
const methodBucket = "podcopy into the bucket, no analysis pod (spdy)"

// bucketRows measures podcopy into the bucket for the 1 GiB and 10,000-file workloads: the
// bench namespace in bucket mode, Object Lock off so each round's objects can be removed.
func (e *env) bucketRows(ctx context.Context, ns string, ws []workload, get func(workload, string) *result, trigger *int) error {
	fmt.Println("agent: destination bucket only (evidence store), exec.transport=spdy")
	if err := e.helm(ctx, "config.exec.transport=spdy", "config.compression=none", "config.policy.maxBytes=4Gi", "config.policy.maxFiles=200000",
		"config.destination.namespaceModes."+ns+"=bucket", "config.destination.s3.objectLock.mode=", "config.destination.s3.objectLock.days=0"); err != nil {
		return err
	}
	c, bucket, err := e.bucketClient(ctx)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.Gzip || w.Source != "" || !e.o.selected(w.Name) || (w.Name != "1 GiB random" && w.Name != "10,000 files of 1 KiB") {
			continue
		}
		for round := range e.o.rounds {
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
