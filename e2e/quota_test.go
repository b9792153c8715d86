//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/status"
)

// The e2e agent's destination.quota.collections and destination.retention.keepLast
// (charts/podcopy/ci/local-values.yaml).
const (
	e2eQuotaCollections = 12
	e2eKeepLast         = 5
)

// collectN runs n collections of pod one after the other and returns their statuses.
func collectN(t *testing.T, ns, pod string, n int) []status.Status {
	t.Helper()
	var out []status.Status
	prev, _ := getStatus(t, ns, pod)
	for i := range n {
		annotate(t, ns, pod, map[string]string{"podcopy/collect": "/var/log/q.log", "podcopy/trigger": fmt.Sprint(i)})
		st := waitFinal(t, ns, pod, prev.Request)
		prev = st
		out = append(out, st)
	}
	return out
}

// TestQuotaAndRetention (issue 20): a namespace that holds destination.quota.collections is
// refused the next collection before anything is written, with reason QuotaExceeded and an
// Event; retention keeps a pod's last keepLast collections and removes the oldest.
func TestQuotaAndRetention(t *testing.T) {
	t.Parallel()
	t.Run("quota", func(t *testing.T) {
		t.Parallel()
		ns := namespace(t)
		pods := []string{"q1", "q2", "q3"}
		for _, p := range pods {
			sourcePod(t, ns, p, imageBusybox, "mkdir -p /var/log && echo quota > /var/log/q.log")
		}
		done := make(chan []status.Status, len(pods))
		per := e2eQuotaCollections / len(pods) // at most keepLast each: retention keeps them all
		for _, p := range pods {
			go func() { done <- collectN(t, ns, p, per) }()
		}
		for range pods {
			for _, st := range <-done {
				if st.Phase != status.Succeeded {
					t.Fatalf("under the quota: %+v", st)
				}
			}
		}
		st := collectN(t, ns, "q1", 1)[0]
		t.Logf("collection %d of the namespace: %s %s: %s", e2eQuotaCollections+1, st.Phase, st.Reason, st.Message)
		if st.Phase != status.Failed || st.Reason != failure.QuotaExceeded || !strings.Contains(st.Message, "destination.quota.collections=12") {
			t.Fatalf("over the quota: %+v", st)
		}
		waitFor(t, 30*time.Second, "the quota's Event", func(ctx context.Context) (bool, error) {
			for _, e := range events(t, ns, "q1") {
				if strings.Contains(e, "collection refused") && strings.Contains(e, "destination.quota.collections") {
					return true, nil
				}
			}
			return false, nil
		})
		if st.Collection != "" {
			t.Fatalf("a refused collection has an id: %+v", st)
		}
	})
	t.Run("retention", func(t *testing.T) {
		t.Parallel()
		logJanitorOnFailure(t)
		ns := namespace(t)
		sourcePod(t, ns, "r", imageBusybox, "mkdir -p /var/log && echo keep > /var/log/q.log")
		sts := collectN(t, ns, "r", e2eKeepLast+2)
		dst := analysis(t)
		dir := "/collect/" + ns + "/r"
		// The sweep runs every minute (staleAfter 1m): the two oldest go, the newest stay.
		waitFor(t, 3*time.Minute, "retention to remove the two oldest collections", func(ctx context.Context) (bool, error) {
			out, err := run(t, dst, "ls", dir)
			if err != nil {
				return false, nil
			}
			for _, st := range sts[:2] {
				if strings.Contains(out, st.Collection) {
					return false, nil
				}
			}
			return true, nil
		})
		out := mustRun(t, dst, "ls", dir)
		for _, st := range sts[2:] {
			if !strings.Contains(out, st.Collection) {
				t.Fatalf("retention removed %s, one of the last %d: %s", st.Collection, e2eKeepLast, out)
			}
		}
		t.Logf("after retention %s holds: %s", dir, strings.Join(strings.Fields(out), " "))
		// The janitor runs on whichever agent holds its Lease (with two nodes, either).
		holder := janitorNode(t)
		m := scrapeNode(t, holder)
		if n := m["podcopy_retention_removed_collections_total"]; n < 2 {
			t.Fatalf("podcopy_retention_removed_collections_total = %v on the Lease holder's agent (%s)", n, holder)
		}
		if m["podcopy_janitor_leader"] != 1 {
			t.Fatalf("the agent on %s, named by the Lease, does not say it holds it: podcopy_janitor_leader = %v", holder, m["podcopy_janitor_leader"])
		}
	})
}
