package follow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
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
	"github.com/podcopy/podcopy/pkg/verify"
)

// Objects of a followed file in a bucket, below its prefix (SPEC §9): objects cannot be
// appended to, so every shipped segment is an object of its own, followed by its signed
// record, which carries the SHA-256 of the previous record: the chain proves that the
// harvested file has no gap and no edit.
const (
	segmentSuffix = ".seg"
	recordSuffix  = ".intoto.json"
	endSuffix     = ".end.intoto.json"
	seqDigits     = 10
)

// EndName is the name of the closing record written when a follow ends after segment seq.
func EndName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, endSuffix) }

// parseSeq reads "<10 digits><suffix>" (and nothing longer: a name is parsed within a
// bounded length, so a planted "99999999999.seg" is just not a segment).
func parseSeq(name, suffix string) (int, bool) {
	num, ok := strings.CutSuffix(name, suffix)
	if !ok || len(num) != seqDigits || strings.Trim(num, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	return n, err == nil && n > 0
}

// SegmentName is segment seq's object name below the followed file's prefix; RecordName its
// record's.
func SegmentName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, segmentSuffix) }

// RecordName is the name of segment seq's signed record.
func RecordName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, recordSuffix) }

// ParseRecordName reads the sequence number of a record's name.
func ParseRecordName(name string) (int, bool) {
	if strings.HasSuffix(name, endSuffix) {
		return 0, false
	}
	return parseSeq(name, recordSuffix)
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
	// SegmentVersion is the segment object's version id in a bucket with versioning.
	SegmentVersion string `json:"segmentVersion,omitempty"`
}

// EndPredicate is what a chain's closing record says (predicate type
// custody.FollowEndPredicateType): the followed file, and the last segment and its record's
// SHA-256, so a tail cut after it is seen.
type EndPredicate struct {
	Pod       custody.Pod `json:"pod"`
	Container string      `json:"container"`
	Path      string      `json:"path"`
	LastSeq   int         `json:"lastSeq"`
	Last      string      `json:"last"`
	Bytes     int64       `json:"bytes"`
	Why       string      `json:"why,omitempty"`
	Time      string      `json:"time"`
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
	if err := up.Wait(ctx); err != nil {
		return 0, err
	}
	sp.SegmentVersion = up.Version(prefix + SegmentName(seq))
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

// Close writes the chain's closing record when the follow ends (why): signed, it names the
// last segment and its record's SHA-256, so a reader sees a tail cut after it. A chain with
// no segment, or already closed at its last segment, gets none.
func (b *BucketSink) Close(ctx context.Context, prefix, why string) error {
	c, ok := b.get(prefix)
	if !ok || c.seq == 0 || c.closed == c.seq {
		return nil
	}
	if _, err := b.Store.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.Store.Bucket), Key: aws.String(prefix + EndName(c.seq))}); err == nil {
		c.closed = c.seq // closed before this agent restarted: a closing record is written once
		b.set(prefix, c)
		return nil
	}
	d := b.Describe(prefix)
	ep := EndPredicate{Pod: d.Pod, Container: d.Container, Path: d.Path, LastSeq: c.seq, Last: c.prev, Bytes: c.size, Why: why}
	if b.Now != nil {
		ep.Time = b.Now()
	}
	rec, err := custody.SealAs(ctx, b.Key, []custody.Subject{{Name: RecordName(c.seq), SHA256: c.prev}}, custody.FollowEndPredicateType, ep)
	if err != nil {
		return err
	}
	if err := b.Store.Begin(b.Store.RetentionFor(time.Now()), 0).Put(ctx, prefix+EndName(c.seq), rec); err != nil {
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

// ChainReport is what reassembling a followed file's segments found.
type ChainReport struct {
	Segments int
	Bytes    int64
	// Problems name each break: a missing segment or record, a digest or chain mismatch, a
	// record of another followed file, a delete marker or an overwritten object, a tail cut
	// after the closing record.
	Problems []string
	// Closed is true when a closing record binds the chain's end (at ClosedAt); segments
	// after it are a follow resumed since, whose tail is not bound yet.
	Closed   bool
	ClosedAt int
}

// ChainIdentity is the followed file a chain must be of: what its prefix names.
type ChainIdentity struct {
	Namespace, Pod, UID, Container, Path string
}

// objectState is one name's versions in a listing.
type objectState struct {
	latest   verify.Version
	versions int
	// oldest is the first version written (""); written: whether any version is not a
	// delete marker.
	oldest  string
	written bool
	first   time.Time
}

// Reassemble reads every segment of the chain under prefix in order, from versions (the
// listing of every version below it): each record is verified with keys and must be of
// want; each segment is read at the version its record names and checked against it;
// each record is linked to the one before; the closing record, when there is one, binds the
// chain's end. It writes the harvested file's bytes to w (nil: verify only). A delete
// marker or a second version over a record, and a newer version over a recorded segment,
// are problems. Names are parsed within a bounded length and gaps are reported as ranges,
// so the work follows what the bucket holds, not what a name claims.
func Reassemble(ctx context.Context, c *s3.Client, bucket, prefix string, want ChainIdentity, keys []*custody.PublicKey, versions []verify.Version, w io.Writer) (ChainReport, error) {
	var rep ChainReport
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	objects := map[string]*objectState{}
	for _, v := range versions {
		o := objects[v.Name]
		if o == nil {
			o = &objectState{latest: v}
			objects[v.Name] = o
		}
		o.versions++
		if v.Latest {
			o.latest = v
		}
		if !v.DeleteMarker && (!o.written || !v.ModTime.After(o.first)) { // listings are newest first
			o.oldest, o.first, o.written = v.VersionID, v.ModTime, true
		}
	}
	records, segments := map[int]bool{}, map[int]bool{}
	endSeq := 0
	var seqs []int
	seen := map[int]bool{}
	for _, name := range slices.Sorted(maps.Keys(objects)) {
		o := objects[name]
		if n, ok := parseSeq(name, endSuffix); ok {
			if o.latest.DeleteMarker || o.versions > 1 {
				problem("%s: a delete marker or a second version over a closing record", name)
			}
			endSeq = max(endSeq, n)
			continue
		}
		n, isRecord := ParseRecordName(name)
		if !isRecord {
			var isSegment bool
			if n, isSegment = parseSeq(name, segmentSuffix); !isSegment {
				problem("%s: not an object of a followed file's chain", name)
				continue
			}
			segments[n] = !o.latest.DeleteMarker || o.versions > 1 // a recorded version may be under a marker
		} else {
			// The agent writes a record once: its first version is read (Object Lock keeps it
			// under a marker or a newer version), and anything over it is named.
			switch {
			case o.latest.DeleteMarker:
				problem("segment %d: a delete marker hides its record %s (tampering: Object Lock keeps the original, read here)", n, name)
			case o.versions > 1:
				problem("segment %d: its record %s has %d versions (the agent writes a record once; the first is read)", n, name, o.versions)
			}
			records[n] = o.written
		}
		if !seen[n] {
			seen[n] = true
			seqs = append(seqs, n)
		}
	}
	if endSeq > 0 {
		seqs = append(seqs, endSeq) // the closing record's last segment must be there
	}
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	if len(seqs) == 0 {
		return rep, fmt.Errorf("s3://%s/%s holds no segment", bucket, prefix)
	}
	var end *EndPredicate
	if endSeq > 0 {
		ep, err := readEnd(ctx, c, bucket, prefix+EndName(endSeq), keys)
		switch {
		case err != nil:
			problem("closing record %s: %v", EndName(endSeq), err)
		case ep.LastSeq != endSeq || !want.matches(ep.Pod, ep.Container, ep.Path):
			problem("closing record %s is not this chain's (of %s/%s %s %s, segment %d)", EndName(endSeq), ep.Pod.Namespace, ep.Pod.Name, ep.Container, ep.Path, ep.LastSeq)
		default:
			end = &ep
			rep.Closed, rep.ClosedAt = true, endSeq
		}
	}
	prev, offset, next := "", int64(0), 1
	sums := map[int]string{}
	for _, seq := range seqs {
		if seq > next {
			problem("segments %d to %d: neither record nor object (the chain is cut: bytes from offset %d on cannot be proven)", next, seq-1, offset)
			prev = ""
		}
		next = seq + 1
		if !records[seq] {
			problem("segment %d: its record is missing (the chain is broken: bytes from offset %d on cannot be proven)", seq, offset)
			prev = ""
			continue
		}
		raw, err := get(ctx, c, bucket, prefix+RecordName(seq), objects[RecordName(seq)].oldest, 1<<20)
		if err != nil {
			return rep, err
		}
		rec, err := custody.Verify(ctx, raw, keys)
		if err != nil {
			problem("segment %d: %v", seq, err)
			prev = ""
			continue
		}
		var sp SegmentPredicate
		if rec.PredicateType != custody.FollowPredicateType || json.Unmarshal(rec.Raw, &sp) != nil || sp.Seq != seq {
			problem("segment %d: its record is not this segment's", seq)
			prev = ""
			continue
		}
		if !want.matches(sp.Pod, sp.Container, sp.Path) {
			problem("segment %d: its record is of %s/%s (uid %s) %s %s, not this chain's (copied from another prefix)", seq, sp.Pod.Namespace, sp.Pod.Name, sp.Pod.UID, sp.Container, sp.Path)
			prev = ""
			continue
		}
		sum := sha256.Sum256(raw)
		sums[seq] = hex.EncodeToString(sum[:])
		if seq > 1 && prev != "" && sp.Previous != prev {
			problem("segment %d: its record names a previous record %s, but segment %d's is %s", seq, sp.Previous, seq-1, prev)
		}
		if sp.DestOffset != offset && len(rep.Problems) == 0 {
			problem("segment %d starts at %d, after %d bytes", seq, sp.DestOffset, offset)
		}
		prev = sums[seq]
		seg := objects[SegmentName(seq)]
		if !segments[seq] || seg == nil {
			problem("segment %d (bytes %d-%d): its object is missing", seq, sp.DestOffset, sp.DestOffset+sp.Length)
			offset = sp.DestOffset + sp.Length
			continue
		}
		if v := sp.SegmentVersion; v != "" && seg.latest.VersionID != v {
			problem("segment %d: %s is not the recorded version %s (a newer version or a delete marker over it)", seq, SegmentName(seq), v)
		}
		body, err := getBody(ctx, c, bucket, prefix+SegmentName(seq), sp.SegmentVersion)
		if err != nil {
			return rep, err
		}
		n, got, err := copyHashed(w, io.LimitReader(body, sp.Length+1))
		_ = body.Close()
		if err != nil {
			return rep, err
		}
		if got != rec.Subjects[SegmentName(seq)] || n != sp.Length {
			problem("segment %d (bytes %d-%d): sha256 %s, its record signed %s", seq, sp.DestOffset, sp.DestOffset+sp.Length, got, rec.Subjects[SegmentName(seq)])
		}
		rep.Segments++
		rep.Bytes += n
		offset = sp.DestOffset + sp.Length
	}
	if end != nil {
		if got := sums[end.LastSeq]; got != end.Last {
			problem("the closing record binds segment %d's record %s, but the bucket holds %s: the chain's tail was cut or replaced", end.LastSeq, end.Last, nonEmpty(got))
		}
	}
	return rep, nil
}

// matches is true when a record names this chain's followed file.
func (id ChainIdentity) matches(p custody.Pod, container, path string) bool {
	return p.Namespace == id.Namespace && p.Name == id.Pod && p.UID == id.UID && container == id.Container && path == id.Path
}

func nonEmpty(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// readEnd reads and verifies a closing record.
func readEnd(ctx context.Context, c *s3.Client, bucket, key string, keys []*custody.PublicKey) (EndPredicate, error) {
	var ep EndPredicate
	raw, err := get(ctx, c, bucket, key, "", 1<<20)
	if err != nil {
		return ep, err
	}
	rec, err := custody.Verify(ctx, raw, keys)
	if err != nil {
		return ep, err
	}
	if rec.PredicateType != custody.FollowEndPredicateType {
		return ep, fmt.Errorf("a %s, not a closing record", rec.PredicateType)
	}
	return ep, json.Unmarshal(rec.Raw, &ep)
}

// copyHashed copies r to w (nil: nowhere), hashing it.
func copyHashed(w io.Writer, r io.Reader) (int64, string, error) {
	h := sha256.New()
	dst := io.Writer(h)
	if w != nil {
		dst = io.MultiWriter(w, h)
	}
	n, err := io.Copy(dst, r)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// getBody opens version (""; the latest) of key.
func getBody(ctx context.Context, c *s3.Client, bucket, key, version string) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if version != "" {
		in.VersionId = aws.String(version)
	}
	out, err := c.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	return out.Body, nil
}

func get(ctx context.Context, c *s3.Client, bucket, key, version string, max int64) ([]byte, error) {
	body, err := getBody(ctx, c, bucket, key, version)
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("s3://%s/%s does not exist", bucket, key)
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = body.Close() }()
	b, err := io.ReadAll(io.LimitReader(body, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("s3://%s/%s is larger than %d bytes", bucket, key, max)
	}
	return b, err
}
