package follow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/podcopy/podcopy/internal/exec"
	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/internal/source"
	"github.com/podcopy/podcopy/pkg/custody"
)

// Objects of a followed file in a bucket, below its prefix (SPEC §9): objects cannot be
// appended to, so every shipped segment is an object of its own, followed by its signed
// record, which carries the SHA-256 of the previous record: the chain proves that the
// harvested file has no gap and no edit.
const (
	segmentSuffix = ".seg"
	recordSuffix  = ".intoto.json"
	seqDigits     = 10
)

// SegmentName is segment seq's object name below the followed file's prefix; RecordName its
// record's.
func SegmentName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, segmentSuffix) }

// RecordName is the name of segment seq's signed record.
func RecordName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, recordSuffix) }

// ParseRecordName reads the sequence number of a record's name.
func ParseRecordName(name string) (int, bool) {
	num, ok := strings.CutSuffix(name, recordSuffix)
	if !ok || len(num) != seqDigits {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	return n, err == nil && n > 0
}

// SegmentPredicate is what a segment's record says (predicate type
// custody.FollowPredicateType).
type SegmentPredicate struct {
	// Pod, Container and Path name the followed file; Agent the writer.
	Pod       custody.Pod    `json:"pod"`
	Container string         `json:"container"`
	Path      string         `json:"path"`
	Agent     map[string]any `json:"agent,omitempty"`
	// Seq numbers the segments from 1; DestOffset is where the segment starts in the
	// harvested file (the sum of the segments before it).
	Seq        int   `json:"seq"`
	DestOffset int64 `json:"destOffset"`
	Length     int64 `json:"length"`
	// Source is the checkpoint the segment starts at: the source file (inode, its prefix)
	// and offset.
	Source source.Checkpoint `json:"source"`
	// Previous is the SHA-256 of the previous segment's record ("" for the first).
	Previous string `json:"previous"`
	Time     string `json:"time"`
}

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
	out, err := b.Store.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.Store.Bucket), Key: aws.String(prefix + RecordName(last))})
	if err != nil {
		return source.Checkpoint{}, 0, false, &objstore.Error{Err: err}
	}
	raw, err := io.ReadAll(io.LimitReader(out.Body, 1<<20))
	_ = out.Body.Close()
	if err != nil {
		return source.Checkpoint{}, 0, false, &objstore.Error{Err: err}
	}
	// The agent's own record: its signature is checked with its own key, so a record
	// planted in the bucket cannot move the checkpoint.
	rec, err := custody.Verify(ctx, raw, []*custody.PublicKey{b.Key.Public()})
	if err != nil {
		return source.Checkpoint{}, 0, false, fmt.Errorf("the last segment record under %s: %w", prefix, err)
	}
	var sp SegmentPredicate
	if err := json.Unmarshal(rec.Raw, &sp); err != nil {
		return source.Checkpoint{}, 0, false, err
	}
	sum := sha256.Sum256(raw)
	cp := sp.Source
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
	w, err := up.Create(ctx, prefix+SegmentName(seq), -1)
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
	sp.Seq, sp.DestOffset, sp.Length, sp.Source, sp.Previous = seq, c.size, n, start, c.prev
	if b.Now != nil {
		sp.Time = b.Now()
	}
	rec, err := custody.SealAs(ctx, b.Key, []custody.Subject{{Name: SegmentName(seq), SHA256: hex.EncodeToString(h.Sum(nil))}}, custody.FollowPredicateType, sp)
	if err != nil {
		return 0, err
	}
	if err := up.Put(ctx, prefix+RecordName(seq), rec); err != nil {
		return 0, err
	}
	sum := sha256.Sum256(rec)
	cp := start
	cp.Offset += n
	b.set(prefix, chain{seq: seq, prev: hex.EncodeToString(sum[:]), size: c.size + n, checkpoint: cp})
	return n, nil
}

// Retire does nothing: a pod instance's segments are under its own UID's prefix.
func (b *BucketSink) Retire(context.Context, exec.Target, string, string, string, string) error {
	return nil
}

// ChainReport is what reassembling a followed file's segments found.
type ChainReport struct {
	Segments int
	Bytes    int64
	// Problems name each break: a missing segment or record, a digest or chain mismatch.
	Problems []string
}

// Reassemble reads every segment under prefix in order, verifying each record with keys,
// each segment against its record, and each record's link to the one before, and writes
// the harvested file's bytes to w (nil: verify only).
func Reassemble(ctx context.Context, c *s3.Client, bucket, prefix string, keys []*custody.PublicKey, w io.Writer) (ChainReport, error) {
	var rep ChainReport
	records := map[int]bool{}
	segments := map[int]bool{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	last := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return rep, err
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if n, ok := ParseRecordName(name); ok {
				records[n], last = true, max(last, n)
			} else if num, ok := strings.CutSuffix(name, segmentSuffix); ok {
				if n, err := strconv.Atoi(num); err == nil {
					segments[n], last = true, max(last, n)
				}
			}
		}
	}
	if last == 0 {
		return rep, fmt.Errorf("s3://%s/%s holds no segment", bucket, prefix)
	}
	prev, offset := "", int64(0)
	for seq := 1; seq <= last; seq++ {
		if !records[seq] {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d: its record is missing (the chain is broken: bytes from offset %d on cannot be proven)", seq, offset))
			prev = ""
			continue
		}
		raw, err := get(ctx, c, bucket, prefix+RecordName(seq), 1<<20)
		if err != nil {
			return rep, err
		}
		rec, err := custody.Verify(ctx, raw, keys)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d: %v", seq, err))
			prev = ""
			continue
		}
		var sp SegmentPredicate
		if rec.PredicateType != custody.FollowPredicateType || json.Unmarshal(rec.Raw, &sp) != nil || sp.Seq != seq {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d: its record is not this segment's", seq))
			continue
		}
		sum := sha256.Sum256(raw)
		if seq > 1 && prev != "" && sp.Previous != prev {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d: its record names a previous record %s, but segment %d's is %s", seq, sp.Previous, seq-1, prev))
		}
		if sp.DestOffset != offset && len(rep.Problems) == 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d starts at %d, after %d bytes", seq, sp.DestOffset, offset))
		}
		prev = hex.EncodeToString(sum[:])
		if !segments[seq] {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d (bytes %d-%d): its object is missing", seq, sp.DestOffset, sp.DestOffset+sp.Length))
			offset = sp.DestOffset + sp.Length
			continue
		}
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + SegmentName(seq))})
		if err != nil {
			return rep, err
		}
		h := sha256.New()
		dst := io.Writer(h)
		if w != nil {
			dst = io.MultiWriter(w, h)
		}
		n, err := io.Copy(dst, out.Body)
		_ = out.Body.Close()
		if err != nil {
			return rep, err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != rec.Subjects[SegmentName(seq)] || n != sp.Length {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %d (bytes %d-%d): sha256 %s, its record signed %s", seq, sp.DestOffset, sp.DestOffset+sp.Length, got, rec.Subjects[SegmentName(seq)]))
		}
		rep.Segments++
		rep.Bytes += n
		offset = sp.DestOffset + sp.Length
	}
	return rep, nil
}

func get(ctx context.Context, c *s3.Client, bucket, key string, max int64) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("s3://%s/%s does not exist", bucket, key)
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = out.Body.Close() }()
	return io.ReadAll(io.LimitReader(out.Body, max))
}
