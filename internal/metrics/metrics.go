// Package metrics defines podcopy's Prometheus metrics (SPEC §6) on its own registry.
package metrics

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
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
	// Failures counts failed attempts (retried or not) and rejected requests, by reason
	// token (SPEC §2): what the alert rules page on (DestinationFailed, QuotaExceeded, ...).
	Failures *prometheus.CounterVec
	// KeyPublished is 1 once the agent's custody public key is in the published ConfigMap,
	// 0 while it is not (verifiers cannot check its records with the published keys). It is
	// registered only by an agent that publishes its key (signing.publicKeys set).
	KeyPublished prometheus.Gauge
	// CertificateExpiry is when the agent's custody certificate expires (Unix seconds; 0
	// before the first). Registered only by an agent certified by the signer.
	CertificateExpiry prometheus.Gauge
	// Config tells how the agent's configuration file's hot reloads went.
	Config *Reloads
}

// Reloads are the metrics of one hot-reloaded file (the agent's policy, the receiver's
// profiles): reloads by result, whether the last one worked, and the loaded file's hash.
type Reloads struct {
	reloads *prometheus.CounterVec
	ok      prometheus.Gauge
	info    *prometheus.GaugeVec
}

// NewReloads registers the reload metrics of file (a label: "agent" or "profiles") on reg.
func NewReloads(reg prometheus.Registerer, file string) *Reloads {
	c := prometheus.Labels{"file": file}
	r := &Reloads{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podcopy_config_reloads_total", ConstLabels: c,
			Help: "Reloads of a hot-reloaded file by result (success: the new contents are in use; error: they were refused and the previous ones stay)."}, []string{"result"}),
		ok: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podcopy_config_last_reload_successful", ConstLabels: c,
			Help: "1 when the file's last reload (or first load) succeeded, 0 when its current contents were refused."}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "podcopy_config_info", ConstLabels: c,
			Help: "1, labelled with the SHA-256 of the file's contents in use."}, []string{"sha256"}),
	}
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("error")
	reg.MustRegister(r.reloads, r.ok, r.info)
	return r
}

// Loaded records that contents with hash sha256 are in use (first load: reload false).
func (r *Reloads) Loaded(sha256 string, reload bool) {
	if reload {
		r.reloads.WithLabelValues("success").Inc()
	}
	r.ok.Set(1)
	r.info.Reset()
	r.info.WithLabelValues(sha256).Set(1)
}

// Refused records that new contents were refused (the previous ones stay in use).
func (r *Reloads) Refused() {
	r.reloads.WithLabelValues("error").Inc()
	r.ok.Set(0)
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
	m.Failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podcopy_collection_failures_total", Help: "Failed collection attempts (retried or not) and rejected requests, by reason token (SPEC §2).",
	}, []string{"reason"})
	m.KeyPublished = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podcopy_signing_key_published", Help: "1 once this agent's custody public key is in the published ConfigMap (signing.publicKeys); 0 while it is not.",
	})
	m.CertificateExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podcopy_signing_certificate_expiry_timestamp_seconds", Help: "When this agent's custody certificate from the signer expires (Unix seconds; 0 before the first). Renewed at half its life.",
	})
	for _, r := range []string{failure.InvalidRequest, failure.LimitExceeded, failure.SourceBudgetExceeded, failure.DeadlineExceeded,
		failure.ManifestTooLarge, failure.QuotaExceeded, failure.Stalled, failure.StreamCut, failure.NotFound, failure.SourceFailed,
		failure.DestinationFailed, failure.Interrupted, failure.Unavailable, failure.NodeUnreachable, failure.Failed} {
		m.Failures.WithLabelValues(r) // every reason has a series from the start: rates begin at 0
	}
	m.Registry.MustRegister(m.Failures) // KeyPublished only where the key is published (cmd/agent)
	m.Config = NewReloads(m.Registry, "agent")
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

// Work is what the agent's executor runs and queues now (read at each scrape).
type Work struct {
	Queued                      int
	OldestRunning, OldestQueued time.Duration
}

// WatchWork registers the executor's gauges, read from stats at each scrape:
// podcopy_queued_collections, podcopy_collection_oldest_running_seconds and
// podcopy_collection_oldest_queued_seconds.
func (m *Metrics) WatchWork(stats func() Work) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podcopy_queued_collections",
			Help: "Collections waiting for a free slot (SPEC §5 concurrency)."}, func() float64 { return float64(stats().Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podcopy_collection_oldest_running_seconds",
			Help: "How long the longest-running collection in flight has run (0: none)."}, func() float64 { return stats().OldestRunning.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podcopy_collection_oldest_queued_seconds",
			Help: "How long the collection waiting longest for a slot has waited (0: none)."}, func() float64 { return stats().OldestQueued.Seconds() }),
	)
}
