package status

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/podcopy/podcopy/internal/testkit/golden"
)

// TestStatusGolden: the podcopy/status annotation is a contract (SPEC §2): a status with every
// field set marshals to the golden file's bytes, and the golden file reads back to it.
func TestStatusGolden(t *testing.T) {
	t.Parallel()
	st := Status{Request: "5e2d", Phase: Failed, Collection: "20261202T100000Z-1a2b3c4d", Files: 2, Bytes: 1048576, Skipped: 1,
		Destination: "podcopy/podcopy-analysis-0/store:/collect/shop/mysql-0/20261202T100000Z-1a2b3c4d",
		Message:     "node node2 is lost: not Ready since 2026-12-02T10:00:30Z", StartTime: "2026-12-02T10:00:00Z",
		CompletionTime: "2026-12-02T10:02:00Z", Attempt: 2, NextAttemptTime: "2026-12-02T10:00:04Z", ExpectedBytes: 2097152, RequestedBy: "alice@example.com",
		RequestOrigin: "update", Reason: "NodeLost", ManifestSHA256: "9f86", CustodyKeyID: "6752",
		Bucket: "s3://evidence/shop/mysql-0/20261202T100000Z-1a2b3c4d/", RetentionMode: "GOVERNANCE",
		RetainUntil: "2026-12-03T10:00:00Z", LegalHold: true}
	got, err := json.Marshal(st) // the annotation's bytes, as PatchWriter writes them
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden.Check(t, filepath.Join("testdata", "status.golden.json"), got)
	var back Status
	if err := json.Unmarshal(got, &back); err != nil || back != st {
		t.Fatalf("the golden status reads back as %+v (%v)", back, err)
	}
}
