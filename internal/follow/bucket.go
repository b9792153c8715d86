package follow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/source"
)

// Objects of a followed file in a bucket, below its prefix (SPEC §9): objects cannot be
// appended to, so every shipped segment is an object of its own, followed by its signed
// record, which carries the SHA-256 of the previous record: the chain proves that the
// harvested file has no gap and no edit.
// ParseRecordName reads the sequence number of a segment record's name.
func ParseRecordName(name string) (int, bool) {
	kind, n := layout.ChainObject(name)
	return n, kind == layout.ChainRecord
}

// SegmentPredicate is what a segment's record says (custody.SegmentPredicate); its Source
// is the checkpoint (source.Checkpoint) the segment starts at, as JSON.
type SegmentPredicate = custody.SegmentPredicate

// BucketSink is a Sink that writes a followed file to a bucket as signed, chained
// segments. The file argument of its methods is the file's key prefix (ending in "/");
// state and the exec target are not used.
type BucketSink struct {
	Store *objstore.Store
	Key   *custody.PrivateKey
	// Describe fills in the predicate's pod, container and path for a prefix.
	Describe func(prefix string) SegmentPredicate
	// Now is the time written in records.
	Now func() string

	mu     sync.Mutex
	chains map[string]chain
}

// chain is where a followed file's segments stand.
type chain struct {
	seq        int    // the last segment's number
	prev       string // its record's SHA-256
	size       int64  // bytes in all segments
	checkpoint source.Checkpoint
	closed     int // the last segment a closing record names
}

// Probe reads the last recorded segment under prefix: the checkpoint after it and the
// harvested size. A segment without its record is absent (its upload was cut).
func (b *BucketSink) Probe(ctx context.Context, _ exec.Target, prefix, _ string) (source.Checkpoint, int64, bool, error) {
	last := 0
	p := s3.NewListObjectsV2Paginator(b.Store.Client, &s3.ListObjectsV2Input{Bucket: aws.String(b.Store.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return source.Checkpoint{}, 0, false, &objstore.Error{Err: err}
		}
		for _, o := range page.Contents {
			if n, ok := ParseRecordName(strings.TrimPrefix(aws.ToString(o.Key), prefix)); ok && n > last {
				last = n
			}
		}
	}
	if last == 0 {
		b.set(prefix, chain{})
		return source.Checkpoint{}, 0, false, nil
	}
	out, err := b.Store.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Store.Bucket), Key: aws.String(prefix + layout.RecordName(last))})
	if err != nil {
		return source.Checkpoint{}, 0, false, &objstore.Error{Err: err}
	}
	raw, err := io.ReadAll(io.LimitReader(out.Body, 1<<20))
	_ = out.Body.Close()
	if err != nil {
		return source.Checkpoint{}, 0, false, &objstore.Error{Err: err}
	}
	// The agent's own record: its signature is checked with its own key (or, certified, its
	// signer's roots: the key of the agent before a restart is gone), so a record planted in
	// the bucket cannot move the checkpoint.
	if _, err := b.Key.Ready(ctx); err != nil {
		return source.Checkpoint{}, 0, false, err
	}
	rec, err := custody.Verify(ctx, raw, b.Key.Trust())
	if err != nil {
		return source.Checkpoint{}, 0, false, fmt.Errorf("the last segment record under %s: %w", prefix, err)
	}
	var sp SegmentPredicate
	if err := json.Unmarshal(rec.Raw, &sp); err != nil {
		return source.Checkpoint{}, 0, false, err
	}
	sum := sha256.Sum256(raw)
	var cp source.Checkpoint
	if err := json.Unmarshal(sp.Source, &cp); err != nil {
		return source.Checkpoint{}, 0, false, fmt.Errorf("the last segment record under %s: its checkpoint: %w", prefix, err)
	}
	cp.Offset += sp.Length
	c := chain{seq: sp.Seq, prev: hex.EncodeToString(sum[:]), size: sp.DestOffset + sp.Length, checkpoint: cp}
	b.set(prefix, c)
	return cp, c.size, true, nil
}

func (b *BucketSink) set(prefix string, c chain) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.chains == nil {
		b.chains = map[string]chain{}
	}
	b.chains[prefix] = c
}

func (b *BucketSink) get(prefix string) (chain, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.chains[prefix]
	return c, ok
}

// Append writes r as the next segment object, then its signed record. Either both land (the
// segment's bytes count) or the record does not (nothing counts: the next Append writes the
// same sequence number again).
func (b *BucketSink) Append(ctx context.Context, dst exec.Target, prefix, state string, start source.Checkpoint, r io.Reader) (int64, error) {
	c, ok := b.get(prefix)
	if !ok {
		if _, _, _, err := b.Probe(ctx, dst, prefix, state); err != nil {
			return 0, err
		}
		c, _ = b.get(prefix)
	}
	seq := c.seq + 1
	up := b.Store.Begin(b.Store.RetentionFor(time.Now()), 0) // a record only after its segment
	w, err := up.Create(ctx, prefix+layout.SegmentName(seq), -1)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), r)
	if err != nil {
		up.Cancel(ctx, w)
		return 0, err
	}
	if n == 0 {
		up.Cancel(ctx, w)
		return 0, nil
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	sp := b.Describe(prefix)
	if sp.Source, err = json.Marshal(start); err != nil {
		return 0, err
	}
	sp.Seq, sp.DestOffset, sp.Length, sp.Previous = seq, c.size, n, c.prev
	sp.SegmentVersion = up.Version(prefix + layout.SegmentName(seq)) // Close (no parallel objects) completed it
	if b.Now != nil {
		sp.Time = b.Now()
	}
	rec, err := custody.SealAs(ctx, b.Key, []custody.Subject{{Name: layout.SegmentName(seq), SHA256: hex.EncodeToString(h.Sum(nil))}}, custody.FollowPredicateType, sp)
	if err != nil {
		return 0, err
	}
	if err := up.Put(ctx, prefix+layout.RecordName(seq), rec, sha256.Sum256(rec)); err != nil {
		return 0, err
	}
	sum := sha256.Sum256(rec)
	cp := start
	cp.Offset += n
	b.set(prefix, chain{seq: seq, prev: hex.EncodeToString(sum[:]), size: c.size + n, checkpoint: cp})
	return n, nil
}

// Close writes the chain's closing record when the follow ends (why): signed, it names the
// last segment and its record's SHA-256, so a reader sees a tail cut after it. A chain with
// no segment, or already closed at its last segment, gets none.
func (b *BucketSink) Close(ctx context.Context, prefix, why string) error {
	c, ok := b.get(prefix)
	if !ok || c.seq == 0 || c.closed == c.seq {
		return nil
	}
	if _, err := b.Store.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Store.Bucket), Key: aws.String(prefix + layout.EndName(c.seq))}); err == nil {
		c.closed = c.seq // closed before this agent restarted: a closing record is written once
		b.set(prefix, c)
		return nil
	}
	d := b.Describe(prefix)
	ep := custody.FollowEnd{Pod: d.Pod, Container: d.Container, Path: d.Path, LastSeq: c.seq, Last: c.prev, Bytes: c.size, Why: why, Agent: d.Agent}
	if b.Now != nil {
		ep.Time = b.Now()
	}
	rec, err := custody.SealAs(ctx, b.Key, []custody.Subject{{Name: layout.RecordName(c.seq), SHA256: c.prev}}, custody.FollowEndPredicateType, ep)
	if err != nil {
		return err
	}
	if err := b.Store.Begin(b.Store.RetentionFor(time.Now()), 0).Put(ctx, prefix+layout.EndName(c.seq), rec, sha256.Sum256(rec)); err != nil {
		return err
	}
	c.closed = c.seq
	b.set(prefix, c)
	return nil
}

// Retire does nothing: a pod instance's segments are under its own UID's prefix.
func (b *BucketSink) Retire(context.Context, exec.Target, string, string, string, string) error {
	return nil
}
