package custody

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"iter"
	"runtime"
	"strings"
	"testing"

	"github.com/podcopy/podcopy/pkg/manifest"
)

// manySubjects yields n subjects, the same each time it is read.
func manySubjects(n int) iter.Seq[Subject] {
	return func(yield func(Subject) bool) {
		for i := range n {
			sum := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
			if !yield(Subject{Name: fmt.Sprintf("app/var/log/many/f%06d", i), SHA256: hex.EncodeToString(sum[:])}) {
				return
			}
		}
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestSealSpooled (issue 35): with a key that signs a digest, a record of 100,000 subjects
// holds none of its statement in memory, writes the same record a verifier accepts, and
// refuses to write a statement changed on disk after it was signed. An ed25519 key must hold
// the statement (it signs the whole message) and still writes a verifiable record.
func TestSealSpooled(t *testing.T) {
	// Not parallel: it measures the heap.
	const n = 100_000
	for _, tc := range []struct {
		name     string
		key      *PrivateKey
		spooled  bool
		minBytes uint64 // what the sealed record may keep alive
	}{
		{"ecdsa-p256", ecdsaKey(t), true, 0},
		{"ed25519", mustKey(t, fixedKey), false, 10 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := liveHeap()
			s, err := SealSpooled(t.Context(), tc.key, t.TempDir(), manySubjects(n), PredicateType, PredicateFor(header(), manifest.Totals{Files: n}, "tar"))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			held := int64(liveHeap()) - int64(before)
			if tc.spooled && held > 1<<20 {
				t.Fatalf("the sealed record of %d subjects keeps %d bytes of heap alive; a spooled statement keeps none", n, held)
			}
			if !tc.spooled && held < int64(tc.minBytes) {
				t.Fatalf("an ed25519 record kept only %d bytes alive: was it spooled? then what did it sign?", held)
			}
			if (s.file != nil) != tc.spooled {
				t.Fatalf("spooled %v, want %v", s.file != nil, tc.spooled)
			}
			var out bytes.Buffer
			if _, err := s.WriteTo(&out); err != nil {
				t.Fatal(err)
			}
			if int64(out.Len()) != s.Size() {
				t.Fatalf("wrote %d bytes, Size says %d", out.Len(), s.Size())
			}
			rec, err := Verify(t.Context(), out.Bytes(), Trust{Keys: []*PublicKey{tc.key.Public()}})
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Subjects) != n || rec.Subjects["app/var/log/many/f000007"] == "" {
				t.Fatalf("%d subjects verified", len(rec.Subjects))
			}
			if !tc.spooled {
				return
			}
			// The file changed under the signature: one digit of a digest.
			at := s.size / 2
			b := make([]byte, 1)
			if _, err := s.file.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 1
			if _, err := s.file.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
			if _, err := s.WriteTo(&bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "not the one signed") {
				t.Fatalf("a statement changed on disk was written: %v", err)
			}
		})
	}
}

// A subjects sequence that yields something else the second time is refused, not signed
// (ed25519 reads it twice: once to size the statement); a spooled record reads it once.
func TestSealSpooledRefusesChangingSubjects(t *testing.T) {
	t.Parallel()
	for name, key := range map[string]*PrivateKey{"ecdsa-p256": ecdsaKey(t), "ed25519": mustKey(t, fixedKey)} {
		reads := 0
		changing := func(yield func(Subject) bool) {
			reads++
			for s := range manySubjects(10 + reads) {
				if !yield(s) {
					return
				}
			}
		}
		s, err := SealSpooled(t.Context(), key, t.TempDir(), changing, PredicateType, struct{}{})
		switch {
		case key.signsDigest() && (err != nil || reads != 1):
			t.Errorf("%s: %v after %d reads of the subjects, want one read", name, err, reads)
		case !key.signsDigest() && err != errChanged:
			t.Errorf("%s: %v, want %v", name, err, errChanged)
		}
		if s != nil {
			_ = s.Close()
		}
	}
}
