// Package ship streams files from a source container to the analysis pod: tar in the source,
// validation and hashing in the agent, a fresh tar into the destination.
package ship

import (
	"path"
	"strings"

	"github.com/podcopy/podcopy/pkg/request"
)

// globScript expands glob patterns in the source container and execs tar on the matches.
// It is a constant: patterns arrive only as positional arguments and, with IFS empty, an
// unquoted pattern undergoes pathname expansion and nothing else, so no annotation text is
// ever parsed as shell code. Arguments: root, "z" or "", then the patterns (relative to root,
// each starting with "./" so that no match can be taken for an option).
const globScript = `IFS=
root=$1 z=$2
shift 2
cd "$root" || exit 2
n=$#
for pat do
  m=0
  for f in $pat; do
    if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; m=1; fi
  done
  if [ "$m" = 0 ]; then printf 'podcopy: %s: no such file or directory (nothing matches)\n' "${pat#.}" >&2; exit 2; fi
done
shift "$n"
if [ "$z" = z ]; then exec tar -c -z -f - "$@"; fi
exec tar -c -f - "$@"
`

// SourceCommand is the argv run in the source container to archive paths (absolute, already
// validated) below root ("/" in production). Literal paths need only tar in the image; globs
// need sh as well.
func SourceCommand(root string, paths []string, gzip bool) []string {
	rel := make([]string, 0, len(paths))
	hasGlob := false
	for _, p := range Prune(paths) {
		rel = append(rel, "./"+strings.TrimPrefix(p, "/"))
		hasGlob = hasGlob || request.IsGlob(p)
	}
	if hasGlob {
		z := ""
		if gzip {
			z = "z"
		}
		return append([]string{"sh", "-c", globScript, "podcopy-collect", root, z}, rel...)
	}
	cmd := []string{"tar", "-c"}
	if gzip {
		cmd = append(cmd, "-z")
	}
	cmd = append(cmd, "-f", "-", "-C", root)
	return append(cmd, rel...)
}

// Prune drops literal paths that lie inside another requested literal path, so that no file
// is archived twice. Input must be sorted (request.Parse sorts).
func Prune(paths []string) []string {
	var out []string
	for _, p := range paths {
		covered := false
		for _, q := range out {
			if !request.IsGlob(q) && !request.IsGlob(p) && (p == q || strings.HasPrefix(p, q+"/")) {
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

// DestinationCommand extracts a tar stream from stdin below dir.
func DestinationCommand(dir string) []string {
	return []string{"tar", "-x", "-f", "-", "-C", dir}
}

// CleanupCommand removes a collection directory that did not complete.
func CleanupCommand(dir string) []string {
	return []string{"rm", "-rf", "--", path.Clean(dir)}
}
