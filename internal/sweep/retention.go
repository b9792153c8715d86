package sweep

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
)

// Usage is what one source namespace holds in an analysis pod.
type Usage = analysis.Usage

// Measure reads namespace ns's usage below dir in the analysis pod dst.
func Measure(ctx context.Context, ex exec.Executor, dst exec.Target, dir, ns string) (Usage, error) {
	l, err := layout.New(dir, ns, "x") // the namespace's directory is the parent of any pod's root
	if err != nil {
		return Usage{}, err
	}
	nsDir := l.NamespaceDir()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	u, err := analysis.Pod{Exec: ex, Target: dst}.Usage(ctx, nsDir)
	if err != nil {
		return Usage{}, fmt.Errorf("measuring namespace %s in analysis pod %s: %w", ns, dst, err)
	}
	return u, nil
}

// QuotaError is a collection refused because its namespace's quota is used up.
type QuotaError struct{ Reason string }

func (e *QuotaError) Error() string { return e.Reason }

// FailureReason implements failure.Reasoned.
func (e *QuotaError) FailureReason() string { return failure.QuotaExceeded }

// collection is one published collection found in an analysis pod.
type collection struct{ ns, pod, id string }

// parseCollections reads collections.sh's output: only paths the layout itself would build
// are believed (a name that is not a namespace, pod or collection id is ignored).
func parseCollections(dir string, out []byte) []collection {
	var cs []collection
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), strings.TrimSuffix(dir, "/")+"/")
		parts := strings.Split(rest, "/")
		if !ok || len(parts) != 4 || parts[3] != layout.ManifestName {
			continue
		}
		l, err := layout.New(dir, parts[0], parts[1])
		if err != nil {
			continue
		}
		if _, err := l.Collection(parts[2]); err != nil {
			continue
		}
		cs = append(cs, collection{ns: parts[0], pod: parts[1], id: parts[2]})
	}
	return cs
}

// expired picks what retention removes: per pod, all but the newest keep (0: keep all) and
// every collection that started before cutoff (zero: none). Collection ids start with their
// UTC start time, so they sort by age.
func expired(cs []collection, keep int, cutoff time.Time) []collection {
	byPod := map[[2]string][]string{}
	for _, c := range cs {
		k := [2]string{c.ns, c.pod}
		byPod[k] = append(byPod[k], c.id)
	}
	var out []collection
	limit := ""
	if !cutoff.IsZero() {
		limit = cutoff.UTC().Format("20060102T150405Z")
	}
	for k, ids := range byPod {
		slices.Sort(ids)
		for i, id := range ids {
			old := limit != "" && id[:len(limit)] < limit
			if old || (keep > 0 && i < len(ids)-keep) {
				out = append(out, collection{ns: k[0], pod: k[1], id: id})
			}
		}
	}
	slices.SortFunc(out, func(a, b collection) int { return strings.Compare(a.ns+"/"+a.pod+"/"+a.id, b.ns+"/"+b.pod+"/"+b.id) })
	return out
}

// retain applies Retention in the analysis pod t and returns how many collections it removed.
func (s Sweeper) retain(ctx context.Context, log logr.Logger, t exec.Target) int {
	out := &exec.Output{Max: 64 << 20}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	dst := analysis.Pod{Exec: s.Exec, Target: t}
	err := dst.Collections(cctx, s.Dir, out)
	cancel()
	if err != nil {
		log.Error(err, "listing collections for retention", "destination", t.String())
		return 0
	}
	var cutoff time.Time
	if s.Retention.MaxAge > 0 {
		cutoff = s.now().Add(-s.Retention.MaxAge)
	}
	gone := expired(parseCollections(s.Dir, out.Bytes()), s.Retention.KeepLast, cutoff)
	removed := 0
	for batch := range slices.Chunk(gone, 64) {
		var dirs []string
		for _, c := range batch {
			l, err := layout.New(s.Dir, c.ns, c.pod)
			if err != nil {
				continue
			}
			p, err := l.Collection(c.id)
			if err != nil {
				continue
			}
			dirs = append(dirs, p)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := dst.Remove(cctx, dirs)
		cancel()
		if err != nil {
			log.Error(err, "removing collections past retention", "destination", t.String())
			continue
		}
		for _, p := range dirs {
			log.Info("removed a collection past retention", "destination", t.String(), "path", p,
				"keepLast", s.Retention.KeepLast, "maxAge", s.Retention.MaxAge.String())
		}
		removed += len(dirs)
	}
	if s.RetentionRemoved != nil {
		s.RetentionRemoved.Add(float64(removed))
	}
	return removed
}
