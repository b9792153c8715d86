// Package golden compares contract files a test produces (manifest.json, the status
// annotation, the custody statement) with testdata golden files; `go test -update` rewrites
// them.
package golden

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// Check fails t unless got equals the file at path (after rewriting it with -update).
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("differs from %s (run with -update if intended):\n%s", path, got)
	}
}
