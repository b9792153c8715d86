package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/layout"
)

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
	latest   Version
	versions int
	// oldest is the first version written (""); written: whether any version is not a
	// delete marker.
	oldest  string
	written bool
	first   time.Time
}

// Chain reads every segment of a followed file's chain in order, from versions (the listing
// of every version below its prefix, names relative to it; open reads one): each record is verified with keys and must be of
// want; each segment is read at the version its record names and checked against it;
// each record is linked to the one before; the closing record, when there is one, binds the
// chain's end. It writes the harvested file's bytes to w (nil: verify only). A delete
// marker or a second version over a record, and a newer version over a recorded segment,
// are problems. Names are parsed within a bounded length and gaps are reported as ranges,
// so the work follows what the bucket holds, not what a name claims.
func Chain(ctx context.Context, where string, want ChainIdentity, trust custody.Trust, versions []Version, open Opener, w io.Writer) (ChainReport, error) {
	var rep ChainReport
	buf := make([]byte, 256<<10)
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
		kind, n := layout.ChainObject(name)
		if kind == layout.ChainEnd {
			if o.latest.DeleteMarker || o.versions > 1 {
				problem("%s: a delete marker or a second version over a closing record", name)
			}
			endSeq = max(endSeq, n)
			continue
		}
		if kind != layout.ChainRecord {
			if kind != layout.ChainSegment {
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
		return rep, fmt.Errorf("%s holds no segment", where)
	}
	var end *custody.FollowEnd
	if endSeq > 0 {
		ep, err := readEnd(ctx, open, layout.EndName(endSeq), objects[layout.EndName(endSeq)].oldest, trust)
		switch {
		case err != nil:
			problem("closing record %s: %v", layout.EndName(endSeq), err)
		case ep.LastSeq != endSeq || !want.matches(ep.Pod, ep.Container, ep.Path):
			problem("closing record %s is not this chain's (of %s/%s %s %s, segment %d)", layout.EndName(endSeq), ep.Pod.Namespace, ep.Pod.Name, ep.Container, ep.Path, ep.LastSeq)
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
		raw, err := readAll(ctx, open, layout.RecordName(seq), objects[layout.RecordName(seq)].oldest, 1<<20)
		if err != nil {
			return rep, err
		}
		rec, err := custody.Verify(ctx, raw, trust)
		if err != nil {
			problem("segment %d: %v", seq, err)
			prev = ""
			continue
		}
		var sp custody.SegmentPredicate
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
		seg := objects[layout.SegmentName(seq)]
		if !segments[seq] || seg == nil {
			problem("segment %d (bytes %d-%d): its object is missing", seq, sp.DestOffset, sp.DestOffset+sp.Length)
			offset = sp.DestOffset + sp.Length
			continue
		}
		if v := sp.SegmentVersion; v != "" && seg.latest.VersionID != v {
			problem("segment %d: %s is not the recorded version %s (a newer version or a delete marker over it)", seq, layout.SegmentName(seq), v)
		}
		body, err := open(ctx, layout.SegmentName(seq), sp.SegmentVersion)
		if err != nil {
			return rep, err
		}
		n, got, err := hashCopy(w, io.LimitReader(body, sp.Length+1), buf)
		_ = body.Close()
		if err != nil {
			return rep, err
		}
		if got != rec.Subjects[layout.SegmentName(seq)] || n != sp.Length {
			problem("segment %d (bytes %d-%d): sha256 %s, its record signed %s", seq, sp.DestOffset, sp.DestOffset+sp.Length, got, rec.Subjects[layout.SegmentName(seq)])
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
func readEnd(ctx context.Context, open Opener, name, version string, trust custody.Trust) (custody.FollowEnd, error) {
	var ep custody.FollowEnd
	raw, err := readAll(ctx, open, name, version, 1<<20)
	if err != nil {
		return ep, err
	}
	rec, err := custody.Verify(ctx, raw, trust)
	if err != nil {
		return ep, err
	}
	if rec.PredicateType != custody.FollowEndPredicateType {
		return ep, fmt.Errorf("a %s, not a closing record", rec.PredicateType)
	}
	return ep, json.Unmarshal(rec.Raw, &ep)
}

// readAll reads version of name, at most max bytes.
func readAll(ctx context.Context, open Opener, name, version string, max int64) ([]byte, error) {
	body, err := open(ctx, name, version)
	if err != nil {
		return nil, err
	}
	defer func() { _ = body.Close() }()
	b, err := io.ReadAll(io.LimitReader(body, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s is larger than %d bytes", name, max)
	}
	return b, err
}
