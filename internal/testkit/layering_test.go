// Package testkit_test holds the repository's layering (docs/architecture.md): what may
// import what, checked from `go list` of the module's own packages.
package testkit_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering: pkg/ (what another program may import) imports nothing of internal/; no
// product package imports the test helpers (internal/testkit); cmd/ is imported by nobody.
func TestLayering(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}", "github.com/podcopy/podcopy/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/podcopy/podcopy/"
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		pkg = strings.TrimPrefix(pkg, mod)
		if strings.HasPrefix(pkg, "e2e") || strings.HasPrefix(pkg, "internal/testkit") || strings.HasPrefix(pkg, "hack/") {
			continue
		}
		seen++
		for _, imp := range strings.Split(imports, ",") {
			imp, ours := strings.CutPrefix(imp, mod)
			if !ours {
				continue
			}
			switch {
			case strings.HasPrefix(pkg, "pkg/") && strings.HasPrefix(imp, "internal/"):
				t.Errorf("%s imports %s: pkg/ may not depend on internal/", pkg, imp)
			case strings.HasPrefix(imp, "internal/testkit"):
				t.Errorf("%s imports the test helpers %s", pkg, imp)
			case strings.HasPrefix(imp, "cmd/"):
				t.Errorf("%s imports the command %s", pkg, imp)
			}
		}
	}
	if seen < 20 {
		t.Fatalf("go list named only %d packages:\n%s", seen, out)
	}
}
