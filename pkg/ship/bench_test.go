package ship

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
)

// benchArchive is a source tar stream of files totalling size bytes.
func benchArchive(b *testing.B, files int, size int) []byte {
	b.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := random(size / files)
	for i := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("./var/log/f%05d", i), Mode: 0o644, Size: int64(len(data))}); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkPipeline is the agent's own work per byte: read the source tar, validate, SHA-256,
// write the destination tar (and the manifest). Compare with BenchmarkSHA256 of the same
// bytes: `go test -bench . -benchmem ./pkg/ship`.
func BenchmarkPipeline(b *testing.B) {
	for _, c := range []struct{ files, size int }{{1, 64 << 20}, {1000, 64 << 20}} {
		b.Run(fmt.Sprintf("files=%d/size=%dMiB", c.files, c.size>>20), func(b *testing.B) {
			src := benchArchive(b, c.files, c.size)
			job := Job{Header: manifest.Header{Collection: "20261122T100000Z-abcdef12", Source: manifest.Source{Container: "app"}}, Paths: []string{"/var/log"}, Layout: testLayout(b),
				Source:      exec.Target{Namespace: "ns", Pod: "p", Container: "app"},
				Destination: exec.Target{Namespace: "d", Pod: "a", Container: "s"}, Policy: policy.Default()}
			s := &Shipper{SpoolDir: b.TempDir()}
			b.SetBytes(int64(c.size))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.process(b.Context(), job, plan{}, bytes.NewReader(src), newTarStream(io.Discard, func(bool) {})); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSHA256 is the floor: hashing the same bytes and nothing else.
func BenchmarkSHA256(b *testing.B) {
	data := random(64 << 20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		h := sha256.New()
		_, _ = h.Write(data)
		_ = h.Sum(nil)
	}
}
