package ship

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/podcopy/podcopy/internal/testkit/hostile"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
)

// FuzzProcess feeds arbitrary bytes as the source's tar stream. Whatever arrives, the agent
// must not panic, and every entry it writes must be a regular file or directory below the
// collection directory, padded to whole records.
func FuzzProcess(f *testing.F) {
	seed := func(entries ...tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			data := []byte("payload")
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(data))
			}
			_ = tw.WriteHeader(&h)
			if h.Typeflag == tar.TypeReg {
				_, _ = tw.Write(data)
			}
		}
		_ = tw.Close()
		return buf.Bytes()
	}
	f.Add(seed(tar.Header{Typeflag: tar.TypeReg, Name: "./var/log/a", Mode: 0o644}))
	f.Add(seed(tar.Header{Typeflag: tar.TypeDir, Name: "./var/log/d/", Mode: 0o755}, tar.Header{Typeflag: tar.TypeReg, Name: "./var/log/d/../../../etc/x"}))
	f.Add(seed(tar.Header{Typeflag: tar.TypeSymlink, Name: "./var/log/l", Linkname: "/"}, tar.Header{Typeflag: tar.TypeReg, Name: "/var/log/l/x"}))
	f.Add(seed(tar.Header{Typeflag: tar.TypeLink, Name: "./var/log/h", Linkname: "/etc/shadow"}, tar.Header{Typeflag: tar.TypeChar, Name: "./var/log/c"}))
	f.Add([]byte("not a tar stream at all"))
	for _, kind := range []string{hostile.SparseGNU, hostile.SparsePAX, hostile.Crafted, hostile.LongNames} {
		var b bytes.Buffer
		if err := hostile.Write(&b, kind, "/var/log"); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		job := Job{
			Header:      manifest.Header{Collection: "20261122T100000Z-abcdef12", Source: manifest.Source{Container: "app"}},
			Paths:       []string{"/var/log"},
			Source:      exec.Target{Namespace: "ns", Pod: "p", Container: "app"},
			Destination: exec.Target{Namespace: "d", Pod: "a", Container: "s"},
			Layout:      testLayout(t),
			Policy:      policy.Default(),
			Limits:      Limits{MaxBytes: 1 << 20, MaxFiles: 100},
		}
		var out bytes.Buffer
		s := &Shipper{SpoolDir: t.TempDir()}
		// Each input is bounded in time: an archive that makes the agent spin (a sparse
		// entry's endless holes) fails here instead of hanging the fuzzer.
		done := make(chan error, 1)
		go func() {
			_, err := s.process(t.Context(), job, plan{}, bytes.NewReader(src), newTarStream(&out, func(bool) {}))
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				return
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("an input of %d bytes kept the agent busy for 20 s", len(src))
		}
		if out.Len()%RecordSize != 0 {
			t.Fatalf("output %d bytes, not whole records", out.Len())
		}
		tr := tar.NewReader(&out)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("agent wrote an unreadable archive: %v", err)
			}
			const id = "20261122T100000Z-abcdef12/"
			switch h.Typeflag {
			case tar.TypeReg, tar.TypeDir:
			case tar.TypeLink: // a hard link to a file of this collection
				if !strings.HasPrefix(h.Linkname, id+"app/") || strings.Contains(h.Linkname, "..") {
					t.Fatalf("agent wrote a link %q -> %q", h.Name, h.Linkname)
				}
			default:
				t.Fatalf("agent wrote entry type %q (%s)", h.Typeflag, h.Name)
			}
			if !strings.HasPrefix(h.Name, id) || strings.Contains(h.Name, "..") || h.Mode&^0o777 != 0 {
				t.Fatalf("agent wrote %q mode %o outside the collection directory", h.Name, h.Mode)
			}
		}
	})
}
