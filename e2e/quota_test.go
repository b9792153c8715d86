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
	// Eight collections of one namespace at once, on two nodes' agents, with room for four:
	// each reserves its share in the analysis pod before it writes, so exactly four run and
	// the namespace never holds more than the quota (measured in the destination).
	t.Run("parallel", func(t *testing.T) {
		t.Parallel()
		nodes := strings.Fields(clusterEnv(t)["NODE_NAMES"])
		if len(nodes) < 2 {
			t.Skip("the local cluster has one node (NODES=1)")
		}
		ns := namespace(t)
		script := "mkdir -p /var/log && echo quota > /var/log/q.log"
		for _, p := range []string{"old1", "old2"} {
			pinnedPod(t, ns, p, nodes[0], script)
		}
		filled := e2eQuotaCollections - 4
		for _, p := range []string{"old1", "old2"} {
			collectN(t, ns, p, filled/2) // at most keepLast each: retention keeps them all
		}
		var pods []string
		for i := range 8 {
			p := fmt.Sprintf("p%d", i)
			pinnedPod(t, ns, p, nodes[i%2], script)
			pods = append(pods, p)
		}
		done := make(chan status.Status, len(pods))
		for _, p := range pods {
			go func() { done <- collectN(t, ns, p, 1)[0] }()
		}
		succeeded, refused := 0, 0
		for range pods {
			switch st := <-done; {
			case st.Phase == status.Succeeded:
				succeeded++
			case st.Phase == status.Failed && st.Reason == failure.QuotaExceeded:
				refused++
			default:
				t.Errorf("a parallel collection ended %s %s: %s", st.Phase, st.Reason, st.Message)
			}
		}
		out := mustRun(t, analysis(t), "find", "/collect/"+ns, "-mindepth", "3", "-maxdepth", "3", "-name", "manifest.json")
		held := len(strings.Fields(out))
		t.Logf("8 parallel collections on %v with room for 4: %d succeeded, %d refused (QuotaExceeded); the namespace holds %d collections", nodes[:2], succeeded, refused, held)
		if held > e2eQuotaCollections || succeeded != 4 || refused != 4 {
			t.Fatalf("the quota of %d collections was not held: %d succeeded, %d refused, %d held", e2eQuotaCollections, succeeded, refused, held)
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
