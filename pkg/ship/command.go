package ship

import (
	_ "embed"
	"strconv"
	"strings"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// The shell programs run in the analysis pod are fixed text, embedded from scripts/ (checked
// by shellcheck); everything the agent passes reaches them only as positional arguments.
// What runs in the source container is package source's.
var (
	//go:embed scripts/publish.sh
	publishScript string
	//go:embed scripts/stale.sh
	staleScript string
)

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
