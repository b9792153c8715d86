package verify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/layout"
)

// chainStore is a followed file's objects in a versioned bucket, in memory.
type chainStore struct {
	versions []Version
	data     map[string][]byte // name@version
}

func (s *chainStore) put(name string, b []byte) string {
	v := fmt.Sprintf("v%d", len(s.versions)+1)
	for i := range s.versions {
		if s.versions[i].Name == name {
			s.versions[i].Latest = false
		}
	}
	s.versions = append(s.versions, Version{Name: name, VersionID: v, Latest: true, Size: int64(len(b))})
	s.data[name+"@"+v] = b
	return v
}

func (s *chainStore) hide(name string) {
	for i := range s.versions {
		if s.versions[i].Name == name {
			s.versions[i].Latest = false
		}
	}
	s.versions = append(s.versions, Version{Name: name, VersionID: "dm-" + name, Latest: true, DeleteMarker: true})
}

func (s *chainStore) open(_ context.Context, name, version string) (io.ReadCloser, error) {
	if version == "" {
		for _, v := range s.versions {
			if v.Name == name && v.Latest && !v.DeleteMarker {
				version = v.VersionID
			}
		}
	}
	b, ok := s.data[name+"@"+version]
	if !ok {
		return nil, fmt.Errorf("no %s@%s", name, version)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

var chainOf = ChainIdentity{Namespace: "ns", Pod: "app", UID: "uid-1", Container: "app", Path: "/var/log/f.log"}

// followed writes segments as the agent does (each a record chained to the one before) and,
// when closed, the closing record; pod names whose chain the records say they are.
func followed(t *testing.T, key *custody.PrivateKey, segments []string, closed bool, pod custody.Pod) *chainStore {
	t.Helper()
	s := &chainStore{data: map[string][]byte{}}
	prev, offset := "", int64(0)
	for i, seg := range segments {
		seq := i + 1
		v := s.put(layout.SegmentName(seq), []byte(seg))
		sp := custody.SegmentPredicate{Pod: pod, Container: "app", Path: "/var/log/f.log", Seq: seq, DestOffset: offset, Length: int64(len(seg)),
			Source: []byte(`{}`), Previous: prev, SegmentVersion: v}
		rec, err := custody.SealAs(t.Context(), key, []custody.Subject{{Name: layout.SegmentName(seq), SHA256: hexsum([]byte(seg))}}, custody.FollowPredicateType, sp)
		if err != nil {
			t.Fatal(err)
		}
		s.put(layout.RecordName(seq), rec)
		prev, offset = hexsum(rec), offset+int64(len(seg))
	}
	if closed {
		ep := custody.FollowEnd{Pod: pod, Container: "app", Path: "/var/log/f.log", LastSeq: len(segments), Last: prev, Bytes: offset}
		rec, err := custody.SealAs(t.Context(), key, []custody.Subject{{Name: layout.RecordName(len(segments)), SHA256: prev}}, custody.FollowEndPredicateType, ep)
		if err != nil {
			t.Fatal(err)
		}
		s.put(layout.EndName(len(segments)), rec)
	}
	return s
}

// TestChain: a followed file's chain is read whole and bound at both ends; every break is
// named, and names cannot make the reader loop.
func TestChain(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	pod := custody.Pod{Namespace: "ns", Name: "app", UID: "uid-1"}
	segs := []string{"one\n", "two\n", "three\n", "four\n"}
	for _, tc := range []struct {
		name   string
		store  func() *chainStore
		closed bool
		expect []string
	}{
		{name: "closed", closed: true, store: func() *chainStore { return followed(t, key, segs, true, pod) }},
		{name: "open", store: func() *chainStore { return followed(t, key, segs, false, pod) }},
		{name: "tail hidden behind delete markers", closed: true, store: func() *chainStore {
			s := followed(t, key, segs, true, pod)
			for _, n := range []string{layout.SegmentName(3), layout.RecordName(3), layout.SegmentName(4), layout.RecordName(4)} {
				s.hide(n)
			}
			return s
		}, expect: []string{"segment 3: a delete marker hides its record", "segment 4: 0000000004.seg is not the recorded version"}},
		{name: "tail removed, closing record stands", closed: true, store: func() *chainStore {
			s := followed(t, key, segs, true, pod)
			var kept []Version
			for _, v := range s.versions {
				if v.Name != layout.SegmentName(4) && v.Name != layout.RecordName(4) {
					kept = append(kept, v)
				}
			}
			s.versions = kept
			return s
		}, expect: []string{"segment 4: its record is missing", "the closing record binds segment 4's record"}},
		{name: "a chain copied from another pod", store: func() *chainStore {
			return followed(t, key, segs, false, custody.Pod{Namespace: "ns", Name: "app", UID: "uid-0"})
		}, expect: []string{"segment 1: its record is of ns/app (uid uid-0) app /var/log/f.log, not this chain's"}},
		{name: "names that claim too much", store: func() *chainStore {
			s := followed(t, key, segs, false, pod)
			s.put("99999999999.seg", []byte("x"))
			s.put("9999999999.seg", []byte("x"))
			return s
		}, expect: []string{"99999999999.seg: not an object of a followed file's chain", "segments 5 to 9999999998: neither record nor object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.store()
			var out bytes.Buffer
			rep, err := Chain(t.Context(), "s3://b/p/", chainOf, custody.Trust{Keys: []*custody.PublicKey{key.Public()}}, s.versions, s.open, &out)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Closed != tc.closed {
				t.Errorf("closed %v, want %v", rep.Closed, tc.closed)
			}
			got := strings.Join(rep.Problems, "\n")
			if len(tc.expect) == 0 {
				if got != "" || out.String() != strings.Join(segs, "") {
					t.Fatalf("problems %q, reassembled %q", got, out.String())
				}
				return
			}
			for _, e := range tc.expect {
				if !strings.Contains(got, e) {
					t.Errorf("%q not in\n%s", e, got)
				}
			}
		})
	}
}
