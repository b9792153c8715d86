package manifest

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/podcopy/podcopy/internal/testkit/golden"
)

// TestManifestGolden: manifest.json is a contract file (SPEC §3): the bytes the Builder writes
// for a collection with every field set are compared with a golden file.
func TestManifestGolden(t *testing.T) {
	t.Parallel()
	b, err := NewBuilder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	files := []File{
		{Path: "/var/log/mysql/slow.log", Size: 1048576, Mode: "0640", ModTime: "2026-12-02T09:59:58Z",
			SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		{Path: "/var/log/mysql/name with\nnewline", Size: 0, Mode: "0600", ModTime: "2026-12-02T09:00:00Z",
			SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, f := range files {
		if err := b.AddFile(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddSkipped(Skipped{Path: "/var/log/mysql/current", Type: "symlink", Reason: "symlinks are not followed (target /var/log/mysql/slow.log)"}); err != nil {
		t.Fatal(err)
	}
	b.SetTransfer("gzip", 1054720, 20480)
	h := Header{
		Collection: "20261202T100000Z-1a2b3c4d",
		Request:    Request{ID: "5e2d", Paths: []string{"/var/log/mysql/slow.log", "/var/log/mysql/name*"}, Mode: "once"},
		Source: Source{Namespace: "shop", Pod: "mysql-0", UID: "0b6c7a52-1111-4c3e-9d7e-2f1c0e7d9a10", Container: "mysql",
			ContainerID: "containerd://4f2e", Node: "node2", Image: "mysql:8.4", ImageID: "docker.io/library/mysql@sha256:abcd"},
		Destination: Destination{Namespace: "podcopy", Pod: "podcopy-analysis-0", Container: "store", Dir: "/collect/shop/mysql-0/20261202T100000Z-1a2b3c4d",
			Bucket: "s3://evidence/shop/mysql-0/20261202T100000Z-1a2b3c4d/", Retention: &Retention{Mode: "COMPLIANCE", RetainUntil: "2027-12-02T10:00:00Z", LegalHold: true}},
		Agent:          Agent{Version: "v1.0.0", Node: "node2"},
		StartTime:      "2026-12-02T10:00:00Z",
		CompletionTime: "2026-12-02T10:00:01Z",
		RequestedBy:    "alice@example.com",
		RequestOrigin:  "update",
	}
	size, r, err := b.Finish(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || int64(len(got)) != size {
		t.Fatalf("read %d of %d: %v", len(got), size, err)
	}
	golden.Check(t, filepath.Join("testdata", "manifest.golden.json"), got)
}
