package ship

import (
	"strings"

	"github.com/podcopy/podcopy/pkg/pathname"
)

// Prune drops literal paths that lie inside another requested literal path, so that no file
// is archived twice. Input must be sorted (the request sorts its paths).
func Prune(paths []string) []string {
	var out []string
	for _, p := range paths {
		covered := false
		for _, q := range out {
			if !pathname.IsGlob(q) && !pathname.IsGlob(p) && (p == q || strings.HasPrefix(p, q+"/")) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}
