package ship

import (
	_ "embed"
	"strconv"
	"strings"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// The shell programs run in containers are fixed text, embedded from scripts/ (checked by
// shellcheck); everything the agent passes reaches them only as positional arguments.
var (
	//go:embed scripts/list.sh
	listScript string
	//go:embed scripts/publish.sh
	publishScript string
	//go:embed scripts/stale.sh
	staleScript string
)

// Reader is how a source container is read: the commands the agent runs in it. They print
// what the container's own tools print (the listing of scripts/list.sh, tar streams), so one
// pipeline consumes either.
type Reader interface {
	// ListCommand lists what pattern (absolute) matches, NUL-terminated.
	ListCommand(pattern string) []string
	// AncestorsCommand archives directories without their content (tar --no-recursion).
	AncestorsCommand(dirs []string) []string
	// ArchiveCommand archives paths (canonical, vetted) as tar, gzip-compressed with gzip.
	ArchiveCommand(paths []string, gzip bool) []string
}

// TarReader reads with the container's own tar (and sh for globs) below Root ("/" in
// production).
type TarReader struct{ Root string }

// ListCommand implements Reader.
func (r TarReader) ListCommand(pattern string) []string { return ListCommand(r.Root, pattern) }

// AncestorsCommand implements Reader.
func (r TarReader) AncestorsCommand(dirs []string) []string { return AncestorsCommand(r.Root, dirs) }

// ArchiveCommand implements Reader.
func (r TarReader) ArchiveCommand(paths []string, gzip bool) []string {
	return SourceCommand(r.Root, paths, gzip)
}

// ListCommand lists what pattern (absolute) matches below root, NUL-terminated.
func ListCommand(root, pattern string) []string {
	return []string{"sh", "-c", listScript, "podcopy-list", root, "." + pattern}
}

// AncestorsCommand archives the given directories themselves (not their content), so the
// agent sees which of them are symbolic links. It needs only tar.
func AncestorsCommand(root string, dirs []string) []string {
	cmd := []string{"tar", "-c", "--no-recursion", "-f", "-", "-C", root}
	for _, d := range dirs {
		cmd = append(cmd, "."+d)
	}
	return cmd
}

// SourceCommand is the argv run in the source container to archive paths (absolute,
// canonical, vetted) below root ("/" in production). It needs only tar: globs were
// expanded before, by ListCommand.
func SourceCommand(root string, paths []string, gzip bool) []string {
	cmd := []string{"tar", "-c"}
	if gzip {
		cmd = append(cmd, "-z")
	}
	cmd = append(cmd, "-f", "-", "-C", root)
	for _, p := range paths {
		cmd = append(cmd, "."+p) // "./..." can never be taken for an option
	}
	return cmd
}

// PublishCommand extracts a collection from stdin (gzip-compressed when gzip) into
// stagingRoot and renames stagingRoot/id to final once complete, printing
// CompleteMarker(id) last.
// With signed, the collection is published only with its custody record.
func PublishCommand(stagingRoot, id, final string, gzip, signed bool) []string {
	codec := "none"
	if gzip {
		codec = "gzip"
	}
	cmd := []string{"sh", "-c", publishScript, "podcopy-publish", stagingRoot, id, final, codec}
	if signed {
		cmd = append(cmd, layout.CustodyName)
	}
	return cmd
}

// CompleteMarker is the line PublishCommand prints after the rename.
func CompleteMarker(id string) string { return "podcopy-complete " + id + "\n" }

// HeartbeatCommand refreshes the modification time of a collection's staging directory
// while it is in flight (never creating it), so the stale sweep, which decides by that time,
// never removes a live collection however slowly its files arrive.
func HeartbeatCommand(staging string) []string {
	return []string{"touch", "-c", "--", staging}
}

// CleanupCommand removes a staging directory that did not complete.
func CleanupCommand(staging string) []string {
	return []string{"rm", "-rf", "--", staging}
}

// StaleCommand removes staging directories (layout.StagingName, the layout's own name for
// them) below dir older than minutes.
func StaleCommand(dir string, minutes int) []string {
	return []string{"sh", "-c", staleScript, "podcopy-stale", dir, layout.StagingName, strconv.Itoa(minutes)}
}

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
