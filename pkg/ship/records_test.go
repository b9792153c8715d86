package ship

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// TestRunRecords: the pod's own records (podcopy/include) are written under _pod/ after
// the files, listed in the manifest with their SHA-256 and signed as subjects of the
// custody record; a record that could not be read is listed with its error, with no file;
// the alert a request answers is in the manifest and the record's predicate.
func TestRunRecords(t *testing.T) {
	t.Parallel()
	f := newFixture(t, flavors[0])
	f.write(t, "var/log/app/a.log", []byte("a\n"))
	j := f.job("/var/log/app/a.log")
	key, _, err := custody.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	j.Custody = key
	j.Header.Alert = &manifest.Alert{Source: "falco", Rule: "Terminal shell in container", ID: "u-1", Priority: "Notice"}
	j.Header.Occasion = "termination"
	body := `{"kind":"Pod"}` + "\n"
	j.Records = []RecordFile{
		{Record: manifest.Record{Name: "_pod/pod.json", Kind: "spec"}, Open: func() (io.ReadCloser, int64, error) {
			return io.NopCloser(strings.NewReader(body)), int64(len(body)), nil
		}},
		{Record: manifest.Record{Name: "_pod/logs/app.previous.log", Kind: "previous-log", Container: "app", Error: "previous terminated container not found"}},
	}
	res, err := f.shipper.Run(t.Context(), j)
	if err != nil {
		t.Fatal(err)
	}
	m := f.manifest(t, j)
	sum := sha256.Sum256([]byte(body))
	want := hex.EncodeToString(sum[:])
	if len(m.Records) != 2 || m.Records[0].SHA256 != want || m.Records[0].Size != int64(len(body)) || m.Records[1].SHA256 != "" || m.Records[1].Error == "" {
		t.Fatalf("manifest records %+v", m.Records)
	}
	if m.Alert == nil || m.Alert.Rule != "Terminal shell in container" || m.Occasion != "termination" {
		t.Fatalf("manifest alert %+v occasion %q", m.Alert, m.Occasion)
	}
	got, err := os.ReadFile(filepath.Join(f.collected(j), "_pod", "pod.json"))
	if err != nil || string(got) != body {
		t.Fatalf("stored record %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(f.collected(j), "_pod", "logs", "app.previous.log")); !os.IsNotExist(err) {
		t.Fatalf("a record that could not be read was written: %v", err)
	}
	env, err := os.ReadFile(filepath.Join(f.collected(j), custody.FileName))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := custody.Verify(t.Context(), env, custody.Trust{Keys: []*custody.PublicKey{key.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Subjects["_pod/pod.json"] != want || rec.Subjects[custody.ManifestSubject] != res.ManifestSHA256 {
		t.Fatalf("custody subjects %v", rec.Subjects)
	}
	if rec.Predicate.Alert == nil || rec.Predicate.Alert.ID != "u-1" || rec.Predicate.Occasion != "termination" {
		t.Fatalf("custody predicate alert %+v occasion %q", rec.Predicate.Alert, rec.Predicate.Occasion)
	}
}
