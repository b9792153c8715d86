// Package metrics defines podcopy's Prometheus metrics (SPEC §6) on its own registry.
package metrics

import (
	"context"
	"net/http"
	"strings"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Results of a collection.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultRejected  = "rejected"
)

// Metrics holds every podcopy metric.
type Metrics struct {
	Registry           *prometheus.Registry
	Collections        *prometheus.CounterVec
	CollectionDuration prometheus.Histogram
	ShippedBytes       prometheus.Counter
	ShippedFiles       prometheus.Counter
	SkippedEntries     *prometheus.CounterVec
	Inflight           prometheus.Gauge
	// SourceSpooled is what the source spools hold now; SourceSpoolWaits counts the times
	// a source waited for a full one (the destination slower than the spool could hide).
	SourceSpooled    prometheus.Gauge
	SourceSpoolWaits prometheus.Counter
	FollowLag        *prometheus.GaugeVec
	FollowLostBytes  prometheus.Counter
	FollowRotations  *prometheus.CounterVec
	// CollectionRetries counts attempts that were run again after a transient failure.
	CollectionRetries prometheus.Counter
	// StalePartialsRemoved counts staging directories removed by the stale sweep.
	StalePartialsRemoved prometheus.Counter
	// RetentionRemoved counts published collections removed by destination.retention.
	RetentionRemoved prometheus.Counter
	// UploadsAborted counts multipart uploads in the bucket the janitor aborted (left by
	// collections cut off before they could abort their own).
	UploadsAborted prometheus.Counter
	// JanitorLeader is 1 while this agent holds the janitor's Lease (runs the sweep and
	// retention), 0 otherwise.
	JanitorLeader prometheus.Gauge
	// StatusWriteRetries counts final status writes that had to be retried.
	StatusWriteRetries prometheus.Counter
	// APIRequests counts the agent's requests to the API server: REST calls by HTTP method
	// (watches included, as one request each), exec sessions as "exec".
	APIRequests *prometheus.CounterVec
	// AgentInfo is 1, labelled with the agent's node ("" for all nodes) and version: which
	// agent a scrape reached.
	AgentInfo *prometheus.GaugeVec
	// JanitorRuns counts the janitor's rounds (sweep, retention, uploads) this agent ran:
	// under the Lease, one agent's count grows at a time.
	JanitorRuns prometheus.Counter
	// NodeLost counts requests this agent marked Failed because their pod's node was lost.
	NodeLost prometheus.Counter
}

// Kinds of follow rotations.
const (
	RotationRename   = "rename"
	RotationTruncate = "truncate"
)

// New registers all metrics, plus the Go and process collectors, on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Collections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcopy_collections_total", Help: "Collections by result.",
		}, []string{"result"}),
		CollectionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "podcopy_collection_duration_seconds", Help: "Time from start to manifest written, for collections that ran.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		ShippedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_shipped_bytes_total", Help: "File bytes written to analysis pods.",
		}),
		ShippedFiles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_shipped_files_total", Help: "Files written to analysis pods.",
		}),
		SkippedEntries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcopy_skipped_entries_total", Help: "Source entries not written, by type.",
		}, []string{"type"}),
		Inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podcopy_inflight_collections", Help: "Collections running now.",
		}),
		SourceSpooled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podcopy_source_spool_bytes", Help: "Bytes of source streams read and waiting for the destination (memory and the spool directory).",
		}),
		SourceSpoolWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_source_spool_waits_total", Help: "Times a source stream waited because its spool was full (the destination slower for longer than the spool holds).",
		}),
		FollowLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podcopy_follow_lag_bytes", Help: "Bytes in a followed source file not yet shipped.",
		}, []string{"namespace", "pod", "container", "path"}),
		FollowLostBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_follow_lost_bytes_total", Help: "Bytes of followed files known to be gone before they could be read (truncated or deleted past the checkpoint).",
		}),
		FollowRotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcopy_follow_rotations_total", Help: "Rotations of followed files, by kind (rename: a new file at the path; truncate: the file shrank or was rewritten).",
		}, []string{"kind"}),
		CollectionRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_collection_retries_total", Help: "Collection attempts run again after a transient failure (API server, kubelet or runtime unavailable, stream cut, no progress).",
		}),
		StalePartialsRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_stale_partials_removed_total", Help: "Staging directories older than destination.staleAfter removed from analysis pods.",
		}),
		RetentionRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_retention_removed_collections_total", Help: "Published collections removed from analysis pods by destination.retention (keepLast, maxAge).",
		}),
		UploadsAborted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_bucket_uploads_aborted_total",
			Help: "Multipart uploads in the bucket that no live collection owned, aborted by the janitor.",
		}),
		JanitorLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podcopy_janitor_leader", Help: "1 while this agent holds the janitor's Lease (it runs the staging sweep and retention for every analysis pod).",
		}),
		StatusWriteRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_status_write_retries_total", Help: "Retries of a final podcopy/status write that failed (it is retried until it lands).",
		}),
		APIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podcopy_api_requests_total", Help: "Requests to the API server: REST calls by HTTP method, exec sessions as exec.",
		}, []string{"method"}),
		AgentInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podcopy_agent_info", Help: "1, labelled with the node whose pods this agent collects (empty: every node) and its version.",
		}, []string{"node", "version"}),
		JanitorRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_janitor_runs_total", Help: "Rounds of the janitor (staging sweep, retention, stale uploads) this agent ran; only the Lease holder runs them.",
		}),
		NodeLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "podcopy_node_lost_requests_total", Help: "Requests marked Failed (reason NodeLost) by this agent because their pod's node was not Ready for nodeLostAfter.",
		}),
	}
	for _, r := range []string{ResultSucceeded, ResultFailed, ResultRejected} {
		m.Collections.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.SourceSpooled, m.SourceSpoolWaits)
	m.Registry.MustRegister(m.Collections, m.CollectionDuration, m.ShippedBytes, m.ShippedFiles,
		m.SkippedEntries, m.Inflight, m.FollowLag, m.FollowLostBytes, m.FollowRotations,
		m.CollectionRetries, m.StalePartialsRemoved, m.RetentionRemoved, m.UploadsAborted, m.JanitorLeader, m.StatusWriteRetries, m.APIRequests,
		m.AgentInfo, m.JanitorRuns, m.NodeLost,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CountRequests wraps a client's transport (rest.Config.Wrap) to count its requests.
func (m *Metrics) CountRequests(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		m.APIRequests.WithLabelValues(strings.ToLower(req.Method)).Inc()
		return rt.RoundTrip(req)
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// CountExecs wraps an executor to count its exec sessions.
func (m *Metrics) CountExecs(e exec.Executor) exec.Executor {
	return countedExecutor{Executor: e, n: m.APIRequests.WithLabelValues("exec")}
}

type countedExecutor struct {
	exec.Executor
	n prometheus.Counter
}

func (c countedExecutor) Exec(ctx context.Context, req exec.Request) error {
	c.n.Inc()
	return c.Executor.Exec(ctx, req)
}
