// Package collect decides, for one source pod, what its podcopy request needs now (run it,
// reject it, wait, or nothing), reporting through status, Events and metrics. Sync decides
// and returns; a collection it starts runs in the executor (package executor), which syncs
// the pod again when the collection ends.
package collect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/executor"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/internal/sweep"
	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
)

// Event reasons of SPEC §2.
const (
	ReasonStarted   = "CollectionStarted"
	ReasonSucceeded = "CollectionSucceeded"
	ReasonFailed    = "CollectionFailed"
	ReasonRejected  = "RequestRejected"
)

// errPodDeleted is the cause a collection is cancelled with when its pod goes away.
var errPodDeleted = errors.New("source pod was deleted during the collection")

// Runner ships one collection (ship.Shipper in production).
type Runner interface {
	Run(ctx context.Context, job ship.Job) (ship.Result, error)
}

// Chooser picks the analysis pod (destination.Chooser in production).
type Chooser interface {
	Choose(ctx context.Context, requested string) (exec.Target, error)
}

// Settings are the parts of the agent configuration a collection uses. Policy is read on
// every request so a reloaded file applies at once.
type Settings struct {
	Policy func() policy.Policy
	Limits func() ship.Limits
	Dir    string
	// Compression is SPEC §5 compression: "none", "gzip" (both legs), or "auto" (gzip when
	// the source is read through the podcopy helper, whose codec is fast; none with the
	// container's own tar, whose gzip is slower than the link: bench/results).
	Compression string
	Agent       manifest.Agent
	// Attempts bounds the attempts of a once collection (SPEC §5 retry.attempts; 0 means 1).
	Attempts int
	// Source is SPEC §5 source.mode: how files are read when a pod has no podcopy/source
	// ("" means auto).
	Source request.Source
	// Quota is destination.quota: checked in the analysis pod before a once collection.
	Quota destination.Quota
	// Custody signs every once collection's custody record (nil: unsigned).
	Custody *custody.PrivateKey
	// Bucket receives every once collection too (nil: no bucket; destination.s3).
	Bucket *objstore.Store
	// Mode says where a namespace's collections go: destination.ModePod, ModeBucket or
	// ModeBoth (destination.mode and destination.namespaceModes; nil: both when Bucket is
	// set, else the pod).
	Mode func(namespace string) string
}

func (s Settings) attempts() int { return max(s.Attempts, 1) }

// Handler syncs pods. It is safe for concurrent use on different pods.
type Handler struct {
	Runner   Runner
	Chooser  Chooser
	Status   status.Writer
	Recorder record.EventRecorder
	Metrics  *metrics.Metrics
	Settings Settings
	// Clock is the handler's time: status times, retries, progress, follow ticks (the real
	// clock when nil; tests use k8s.io/utils/clock/testing's fake).
	Clock clock.WithTicker
	// Exec runs follow mode's commands (the Runner's own executor in production).
	Exec exec.Executor
	// RetryBase is the first backoff between attempts (2s when zero).
	RetryBase time.Duration
	// ProgressInterval is how often a Running status shows progress (2s when zero).
	ProgressInterval time.Duration
	// Helpers starts the podcopy helper for containers read with podcopy/source=helper
	// (or auto, when the container has no tar or sh).
	Helpers Helpers
	// Work runs each collection in a goroutine of its own, within SPEC §5 concurrency (its
	// slots bound once collections and follow ticks together), and requeues the pod when
	// the collection ends: Sync only decides.
	Work *executor.Executor
	// NodeState, when set, describes a node that is not Ready ("" when it is): a transient
	// failure on such a node is reported as NodeUnreachable with what the Node says.
	NodeState func(node string) string
	// PodRecords reads the pod's own records for podcopy/include (nil: not stored).
	PodRecords PodRecords

	mu     sync.Mutex
	done   map[types.UID]string        // request ids finished by this process (the cache may lag)
	finals map[types.UID]*pendingFinal // terminal statuses not written yet
}

// PodRecords gathers the pod's own records for podcopy/include (podrecord.Gatherer in
// production); cleanup is called when the collection has ended.
type PodRecords interface {
	Gather(ctx context.Context, pod *corev1.Pod, include []string) (records []ship.RecordFile, cleanup func(), err error)
}

// recordsTimeout bounds reading a pod's records through the API.
const recordsTimeout = time.Minute

// RetryError asks the caller to sync the pod again later: after After, or with the queue's
// rate limit when After is 0. It is a wait, not a failure.
type RetryError struct {
	Reason string
	After  time.Duration
}

func (e *RetryError) Error() string { return e.Reason }

// RequeueAfter is when the controller syncs the pod again (0: its rate limit).
func (e *RetryError) RequeueAfter() time.Duration { return e.After }

// Sync handles the request on pod, if any. A *RetryError means "try again later".
func (h *Handler) Sync(ctx context.Context, pod *corev1.Pod) error {
	if pending, err := h.writePendingFinal(ctx, pod); pending && err != nil {
		return err
	}
	if h.Work.Running(pod.UID) {
		return nil // its end syncs the pod again (a deleted pod's is stopped by Forget)
	}
	if pod.DeletionTimestamp != nil {
		_ = h.stopFollow(pod.UID, executor.End{Final: true}) // its last tick and final status are the loop's own
		if !request.HasRequest(pod) || !strings.Contains(pod.Annotations[request.AnnotationCollectOn], request.OnTermination) {
			return nil
		}
		// podcopy/collect-on: termination: the grace period is the time left to collect.
	}
	if !request.HasRequest(pod) {
		_ = h.stopFollow(pod.UID, executor.End{Why: "podcopy/collect was removed"}) // the loop writes why it ended
		return nil
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("pod", pod.Namespace+"/"+pod.Name)
	st, _ := status.Get(pod)
	req, err := request.Parse(pod, h.Settings.Policy())
	if err != nil {
		if err := h.stopFollow(pod.UID, executor.End{Why: "the request changed"}); err != nil {
			return err
		}
		id := request.RawID(pod)
		if st.Done(id) || h.finished(pod.UID, id) {
			return nil
		}
		log.Info("request rejected", "reason", err.Error())
		return h.reject(ctx, pod, id, err.Error())
	}
	id := req.ID()
	if req.Mode == request.ModeFollow {
		return h.syncFollow(ctx, log, pod, req, st)
	}
	if err := h.stopFollow(pod.UID, executor.End{Why: "podcopy/mode changed"}); err != nil {
		return err
	}
	occ, why := occasion(pod, req)
	if why != "" {
		if st.Occasion != "" && st.Done(st.Request) {
			return nil // an earlier occasion's result stays on show until the next occasion
		}
		return h.pending(ctx, pod, st, id, why)
	}
	req.Occasion = occ
	id = req.ID()
	if st.Done(id) || h.finished(pod.UID, id) {
		return nil
	}
	if wait := h.untilNextAttempt(pod.UID, st, id); wait > 0 {
		return &RetryError{Reason: "the next attempt is at " + st.NextAttemptTime, After: wait}
	}
	if wait := notReady(pod, req.Container); wait != "" {
		return h.pending(ctx, pod, st, id, wait)
	}
	dst, err := h.choose(ctx, pod, req)
	var invalid *failure.Invalid
	var notReadyDst *destination.NotReadyError
	switch {
	case errors.As(err, &invalid):
		return h.reject(ctx, pod, id, err.Error())
	case errors.As(err, &notReadyDst):
		if werr := h.pending(ctx, pod, st, id, err.Error()); werr != nil {
			return werr
		}
		return &RetryError{Reason: err.Error()}
	case err != nil:
		return err
	}
	h.Work.Start(ctx, pod.UID, pod.Namespace+"/"+pod.Name, func(ctx context.Context) error {
		return h.collect(ctx, log, pod, req, dst, st)
	}, func(ctx context.Context, position int) {
		if st.Request == id && st.Phase == status.Running {
			return // a retry or an interrupted attempt: its Running status keeps the attempt count
		}
		why := fmt.Sprintf("waiting for a free collection slot on node %s: %s in line (concurrency=%d)", pod.Spec.NodeName, ordinal(position), h.Work.Slots())
		if err := h.pending(ctx, pod, st, id, why); err != nil {
			log.Error(err, "recording the wait for a slot")
		}
	})
	return nil
}

// ordinal is 1st, 2nd, 3rd, 4th, ...
func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// choose is the analysis pod a collection goes to (none with destination.mode bucket).
func (h *Handler) choose(ctx context.Context, pod *corev1.Pod, req request.Request) (exec.Target, error) {
	if h.noPod(pod.Namespace) {
		return exec.Target{}, nil
	}
	return h.Chooser.Choose(ctx, req.Destination)
}

// bucketParallel is how many small objects of a collection may be in flight to the bucket.
const bucketParallel = 16

// modeFor is where ns's collections go: pod, bucket or both (always pod without a bucket).
func (h *Handler) modeFor(ns string) string {
	switch {
	case h.Settings.Bucket == nil:
		return destination.ModePod
	case h.Settings.Mode == nil:
		return destination.ModeBoth
	}
	return h.Settings.Mode(ns)
}

// noPod reports whether ns's collections go to the bucket only.
func (h *Handler) noPod(ns string) bool { return h.modeFor(ns) == destination.ModeBucket }

// pending records that request id waits, unless the status already says so.
func (h *Handler) pending(ctx context.Context, pod *corev1.Pod, st status.Status, id, why string) error {
	if st.Request == id && st.Phase == status.Pending && st.Message == why {
		return nil
	}
	return h.Status.Write(ctx, pod, status.Status{Request: id, Phase: status.Pending, Reason: failure.Waiting, Message: why})
}

// occasion says whether a deferred request (podcopy/collect-on) runs now: the occasion it
// runs on ("" for a request that is not deferred), or why it waits.
func occasion(pod *corev1.Pod, req request.Request) (occ, wait string) {
	if len(req.CollectOn) == 0 {
		return "", ""
	}
	if pod.DeletionTimestamp != nil && request.Has(req.CollectOn, request.OnTermination) {
		return request.OnTermination, ""
	}
	if request.Has(req.CollectOn, request.OnRestart) {
		for _, cs := range slices.Concat(pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses) {
			if cs.Name == req.Container && cs.RestartCount > 0 {
				return fmt.Sprintf("%s-%d", request.OnRestart, cs.RestartCount), ""
			}
		}
	}
	var on []string
	for _, o := range req.CollectOn {
		switch o {
		case request.OnTermination:
			on = append(on, "the pod's termination")
		case request.OnRestart:
			on = append(on, "a restart of container "+req.Container)
		}
	}
	return "", fmt.Sprintf("waiting for %s (%s)", strings.Join(on, " or "), request.AnnotationCollectOn)
}

// notReady says why the pod's container cannot be read from yet ("" when it can).
func notReady(pod *corev1.Pod, container string) string {
	if pod.Status.Phase != corev1.PodRunning {
		return fmt.Sprintf("waiting for the pod to be Running (phase %s)", pod.Status.Phase)
	}
	for _, cs := range slices.Concat(pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses) {
		if cs.Name == container {
			if cs.State.Running == nil {
				return fmt.Sprintf("waiting for container %s to be running", container)
			}
			return ""
		}
	}
	return fmt.Sprintf("waiting for container %s to start", container)
}

func (h *Handler) clock() clock.WithTicker {
	if h.Clock != nil {
		return h.Clock
	}
	return clock.RealClock{}
}

func (h *Handler) now() time.Time { return h.clock().Now() }

func (h *Handler) finished(uid types.UID, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done[uid] == id
}

func (h *Handler) markFinished(uid types.UID, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done == nil {
		h.done = map[types.UID]string{}
	}
	h.done[uid] = id
}

// Forget drops what the handler remembers of a pod and stops its collection; call it when
// the pod is deleted.
func (h *Handler) Forget(uid types.UID) {
	h.mu.Lock()
	delete(h.done, uid)
	delete(h.finals, uid)
	h.mu.Unlock()
	h.Work.Forget(uid, errPodDeleted)
	_ = h.stopFollow(uid, executor.End{}) // the pod is gone: no last tick, no status
}

// event records an Event on pod; its message quotes what containers and annotations said,
// so control characters are escaped.
func (h *Handler) event(pod *corev1.Pod, typ, reason, msg string) {
	h.Recorder.Event(pod, typ, reason, status.Printable(msg))
}

func (h *Handler) reject(ctx context.Context, pod *corev1.Pod, id, msg string) error {
	now := h.now().UTC().Format(time.RFC3339)
	h.event(pod, corev1.EventTypeWarning, ReasonRejected, msg)
	h.Metrics.Collections.WithLabelValues(metrics.ResultRejected).Inc()
	h.markFinished(pod.UID, id)
	return h.Status.Write(ctx, pod, status.Status{Request: id, Phase: status.Rejected, Reason: failure.InvalidRequest, Message: msg, CompletionTime: now})
}

// untilNextAttempt is how long request id waits for its next attempt, which the status
// schedules after a transient failure (0: it may run now).
func (h *Handler) untilNextAttempt(uid types.UID, st status.Status, id string) time.Duration {
	if st.Request != id || st.Phase != status.Running || st.NextAttemptTime == "" || h.Work.Running(uid) {
		return 0
	}
	next, err := time.Parse(time.RFC3339, st.NextAttemptTime)
	if err != nil {
		return 0
	}
	return next.Sub(h.now())
}

// collect runs one attempt of request req. A transient failure with attempts left does not
// wait here: the Running status records when the next attempt is due (nextAttemptTime) and
// a *RetryError asks the controller to sync the pod again then (cert-manager's pattern: the
// delay comes from the status, so a restarted agent keeps the schedule).
func (h *Handler) collect(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, dst exec.Target, prev status.Status) error {
	id := req.ID()
	attempt := 1
	// Sync starts no collection while one of the pod's runs in this process: a Running
	// status here is an earlier attempt's.
	if prev.Request == id && prev.Phase == status.Running {
		attempt = max(prev.Attempt, 1) + 1
		// Without nextAttemptTime, a Running status that no collection of this process backs
		// means the agent that wrote it stopped mid-way: its staging directory is swept, and
		// the attempt counts. With it, this is the attempt the status scheduled.
		if prev.NextAttemptTime == "" {
			log.Info("resolving a Running status that no live collection backs", "collection", prev.Collection, "attempt", attempt)
			h.discardStaging(ctx, log, pod, dst, prev.Collection)
			if attempt > h.Settings.attempts() {
				return h.finish(ctx, log, pod, id, status.Status{Request: id, Phase: status.Failed, Collection: prev.Collection,
					Destination: prev.Destination, StartTime: prev.StartTime, Attempt: prev.Attempt,
					CompletionTime: h.now().UTC().Format(time.RFC3339), Reason: failure.Interrupted,
					Message: fmt.Sprintf("collection %s was interrupted (its agent stopped) and retry.attempts=%d is used up; change podcopy/trigger to run it again", prev.Collection, h.Settings.attempts())})
			}
		}
	}
	st, err := h.attempt(ctx, log, pod, req, dst, attempt, prev.Collection)
	switch {
	case err != nil && (errors.Is(err, errStatusNotWritten) || errors.Is(err, errNotReserved)):
		return err // nothing ran: the queue retries the sync
	case st.Phase == "":
		return nil // the pod was deleted
	case st.Phase != status.Failed || attempt >= h.Settings.attempts() || !failure.Transient(err) || ctx.Err() != nil:
		return h.finish(ctx, log, pod, id, st)
	}
	h.Metrics.CollectionRetries.Inc()
	now := h.now()
	due := now.Add(h.retryDelay(attempt))
	if s := due.Truncate(time.Second); !s.Equal(due) {
		due = s.Add(time.Second) // the status has whole seconds: never earlier than the backoff
	}
	wait, next := due.Sub(now), due.UTC().Format(time.RFC3339)
	log.Info("collection failed transiently; the next attempt is scheduled", "attempt", attempt, "at", next, "error", err.Error())
	st.Phase, st.CompletionTime, st.NextAttemptTime = status.Running, "", next
	st.Message = fmt.Sprintf("attempt %d of %d failed: %s; the next attempt at %s", attempt, h.Settings.attempts(), st.Message, next)
	// The next attempt is due only once this status has landed: while the API server does not
	// answer, the queue retries the sync, and that attempt first needs its own Running write,
	// so an outage does not use up attempts.
	if err := h.Status.Write(ctx, pod, st); err != nil {
		return fmt.Errorf("recording the next attempt of %s: %w", st.Collection, err)
	}
	return &RetryError{Reason: st.Message, After: wait}
}

// errNotReserved: the namespace's quota could not be asked in the analysis pod, so nothing
// ran.
var errNotReserved = errors.New("the namespace's quota could not be reserved")

// quotaChunk is what a collection's reservation of destination.quota.bytes grows by.
const quotaChunk = 64 << 20

// reserve takes the collection's share of its namespace's quota in the analysis pod
// (destination.quota): nil when no quota applies; a *sweep.QuotaError when it is used up
// (published collections, the bytes in the namespace's directory, and every other
// collection in flight, on any node, by its reservation).
func (h *Handler) reserve(ctx context.Context, pod *corev1.Pod, job ship.Job) (*reservation, error) {
	q := h.Settings.Quota
	if !q.Enabled() || h.Exec == nil || job.NoPod {
		return nil, nil
	}
	maxBytes, err := q.BytesValue()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotReserved, err)
	}
	name, err := job.Layout.Reservation(job.Header.Collection)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotReserved, err)
	}
	r := &reservation{pod: analysis.Pod{Exec: h.Exec, Target: job.Destination}, req: analysis.Reservation{
		NamespaceDir: job.Layout.NamespaceDir(), Ledger: job.Layout.Ledger(), Name: name,
		MaxCollections: q.Collections, MaxBytes: maxBytes,
		Stale: h.Settings.Limits().AttemptDeadline() + 5*time.Minute, // past any live attempt
	}}
	if maxBytes > 0 {
		r.req.Bytes = quotaChunk
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	g, err := r.pod.Reserve(cctx, r.req)
	if err != nil {
		return nil, fmt.Errorf("%w: in analysis pod %s: %w", errNotReserved, r.pod, err)
	}
	switch g.Refused {
	case "collections":
		return nil, &sweep.QuotaError{Reason: fmt.Sprintf("namespace %s holds %d collections in the analysis pod (published or in flight), destination.quota.collections=%d; remove some (or wait for retention) and change podcopy/trigger to run it again",
			pod.Namespace, g.Count, q.Collections)}
	case "bytes":
		return nil, &sweep.QuotaError{Reason: fmt.Sprintf("namespace %s uses %d bytes in the analysis pod (published or reserved by collections in flight), destination.quota.bytes=%s; remove some collections (or wait for retention) and change podcopy/trigger to run it again",
			pod.Namespace, g.Used, q.Bytes)}
	}
	r.req.Bytes = g.Bytes
	return r, nil
}

// reservation is one collection's share of its namespace's quota, held in the analysis
// pod's ledger until release (it implements ship.Quota).
type reservation struct {
	pod analysis.Pod
	req analysis.Reservation // Bytes: what is granted now
}

// Reserve implements ship.Quota: the reservation grows by quotaChunk (at least) when total
// passes it.
func (r *reservation) Reserve(ctx context.Context, total int64) (bool, string, error) {
	if r.req.MaxBytes <= 0 || total <= r.req.Bytes {
		return true, "", nil
	}
	want := r.req
	want.Bytes = max(total, r.req.Bytes+quotaChunk)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	g, err := r.pod.Reserve(cctx, want)
	if err != nil {
		return false, "", err
	}
	r.req.Bytes = g.Bytes
	if g.Refused != "" || total > g.Bytes {
		return false, fmt.Sprintf("%d bytes were left for it, with what is published and what other collections in flight reserved", g.Bytes), nil
	}
	return true, "", nil
}

// release drops the reservation once the collection is published or gone (a reservation
// left behind is dropped once stale).
func (r *reservation) release(ctx context.Context, log logr.Logger) {
	if r == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if err := r.pod.Release(cctx, r.req.Ledger, r.req.Name); err != nil {
		log.Error(err, "releasing the collection's quota reservation; it lapses by itself", "after", r.req.Stale.String())
	}
}

// discardStaging removes the staging directory a previous agent's interrupted collection id
// left in the analysis pod (the sweep would, after destination.staleAfter).
func (h *Handler) discardStaging(ctx context.Context, log logr.Logger, pod *corev1.Pod, dst exec.Target, id string) {
	if h.Exec == nil || id == "" || h.noPod(pod.Namespace) {
		return
	}
	l, err := layout.New(h.Settings.Dir, pod.Namespace, pod.Name)
	if err != nil {
		return
	}
	staging, err := l.Staging(id)
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := (analysis.Pod{Exec: h.Exec, Target: dst}).Discard(cctx, staging); err != nil {
		log.Error(err, "removing the interrupted collection's staging directory; the sweep will", "path", staging)
	}
}

// errStatusNotWritten: the Running status could not be written, so nothing ran.
var errStatusNotWritten = errors.New("the Running status could not be written")

// retryDelay is the backoff before attempt+1: 2s, 4s, 8s, ... (RetryBase doubling) at
// most 30s.
func (h *Handler) retryDelay(attempt int) time.Duration {
	base := h.RetryBase
	if base == 0 {
		base = 2 * time.Second
	}
	return min(base<<(attempt-1), 30*time.Second)
}

// attempt runs one attempt and returns the status it ended in (Phase "" when the pod was
// deleted), reporting through Events, metrics and the log.
func (h *Handler) attempt(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, dst exec.Target, attempt int, previous string) (status.Status, error) {
	id := req.ID()
	start, err := h.startAfter(ctx, previous)
	if errors.Is(err, errPodDeleted) {
		return status.Status{}, nil
	}
	if err != nil {
		return status.Status{Request: id, Phase: status.Failed, Reason: failure.Reason(err), Message: err.Error(), CompletionTime: h.now().UTC().Format(time.RFC3339)}, err
	}
	job, err := h.job(pod, req, dst, start)
	if err != nil {
		return status.Status{Request: id, Phase: status.Rejected, Reason: failure.InvalidRequest, Message: err.Error(), CompletionTime: start.Format(time.RFC3339)}, err
	}
	quota, err := h.reserve(ctx, pod, job)
	if qe := (*sweep.QuotaError)(nil); errors.As(err, &qe) {
		now := h.now().UTC().Format(time.RFC3339)
		h.event(pod, corev1.EventTypeWarning, ReasonFailed, "collection refused: "+qe.Reason)
		log.Info("collection refused by the namespace's quota", "reason", qe.Reason)
		return status.Status{Request: id, Phase: status.Failed, Reason: failure.QuotaExceeded,
			Message: qe.Reason, StartTime: now, CompletionTime: now, RequestedBy: req.RequestedBy, RequestOrigin: req.Origin}, err
	}
	if err != nil {
		return status.Status{}, err
	}
	defer quota.release(ctx, log)
	if quota != nil {
		job.Quota = quota
	}
	log = log.WithValues("collection", job.Header.Collection, "destination", dst.String(), "bucket", job.Header.Destination.Bucket, "attempt", attempt)
	st := status.Status{Request: id, Phase: status.Running, Collection: job.Header.Collection, RequestedBy: req.RequestedBy, RequestOrigin: req.Origin,
		StartTime: start.Format(time.RFC3339), Attempt: attempt, Bucket: job.Header.Destination.Bucket, Alert: req.Alert, Occasion: req.Occasion}
	if !job.NoPod {
		st.Destination = fmt.Sprintf("%s:%s", dst, job.CollectionDir())
	}
	if r := job.Header.Destination.Retention; r != nil {
		st.RetentionMode, st.RetainUntil, st.LegalHold = r.Mode, r.RetainUntil, r.LegalHold
	}
	if err := h.Status.Write(ctx, pod, st); err != nil {
		return st, fmt.Errorf("%w: %w", errStatusNotWritten, err)
	}
	why := ""
	if a := req.Alert; a != nil {
		why = fmt.Sprintf(" for %s alert %q (id %s)", a.Source, a.Rule, a.ID)
	}
	if req.Occasion != "" {
		why += " on " + req.Occasion
	}
	h.event(pod, corev1.EventTypeNormal, ReasonStarted,
		fmt.Sprintf("collecting %v from container %s into %s (attempt %d)%s", req.Paths, req.Container, where(st), attempt, why))
	log.Info("collection started", "paths", req.Paths)

	h.Metrics.Inflight.Inc()
	job.Progress = &ship.Progress{}
	stopProgress := h.reportProgress(ctx, pod, st, job.Progress)
	var res ship.Result
	if len(req.Include) > 0 && h.PodRecords != nil {
		var done func()
		gctx, stop := context.WithTimeout(ctx, recordsTimeout)
		job.Records, done, err = h.PodRecords.Gather(gctx, pod, req.Include)
		stop()
		defer done()
	}
	if err == nil {
		res, err = h.runJob(ctx, log, pod, req, job)
	}
	stopProgress() // no Running write may land after the terminal status
	h.Metrics.Inflight.Dec()
	// Stopped from above: Forget (the pod was deleted) or the controller's shutdown.
	cause := context.Cause(ctx)

	st.CompletionTime = h.now().UTC().Format(time.RFC3339)
	st.Files, st.Bytes, st.Skipped = res.Totals.Files, res.Totals.Bytes, res.Totals.Skipped
	if err != nil {
		if errors.Is(cause, errPodDeleted) {
			log.Info("collection stopped: pod deleted")
			h.Metrics.Collections.WithLabelValues(metrics.ResultFailed).Inc()
			return status.Status{}, nil
		}
		msg := err.Error()
		if cause != nil { // cancelled from above (the controller's shutdown): its cause says why
			msg, err = cause.Error(), cause
		}
		st.Phase, st.Message, st.Reason = status.Failed, msg, failure.Reason(err)
		if !failure.Permanent(st.Reason) && st.Reason != failure.Interrupted && h.NodeState != nil {
			if why := h.NodeState(pod.Spec.NodeName); why != "" {
				st.Reason, st.Message = failure.NodeUnreachable, why+": "+msg
				err = failure.New(failure.NodeUnreachable, err)
			}
		}
		h.event(pod, corev1.EventTypeWarning, ReasonFailed, fmt.Sprintf("collection %s (attempt %d) failed: %s", job.Header.Collection, attempt, msg))
		log.Error(err, "collection failed")
		return st, err
	}
	elapsed := h.now().Sub(start) // until the analysis pod's tar has exited, not just the manifest written
	h.Metrics.CollectionDuration.Observe(elapsed.Seconds())
	h.Metrics.ShippedBytes.Add(float64(res.Totals.Bytes))
	h.Metrics.ShippedFiles.Add(float64(res.Totals.Files))
	for typ, n := range res.SkippedByType {
		h.Metrics.SkippedEntries.WithLabelValues(typ).Add(float64(n))
	}
	st.Phase, st.Reason, st.ManifestSHA256, st.CustodyKeyID = status.Succeeded, failure.Succeeded, res.ManifestSHA256, res.CustodyKeyID
	st.Message = fmt.Sprintf("collected %d files (%d bytes), skipped %d, in %s", res.Totals.Files, res.Totals.Bytes, res.Totals.Skipped, elapsed.Round(time.Millisecond))
	evType := corev1.EventTypeNormal
	if res.Warning != "" {
		st.Message += "; warning: " + res.Warning
		evType = corev1.EventTypeWarning
	}
	signed := "unsigned"
	if res.CustodyKeyID != "" {
		signed = "custody record signed by key " + res.CustodyKeyID
	}
	h.event(pod, evType, ReasonSucceeded, fmt.Sprintf("collection %s: %s; manifest at %s, sha256 %s; %s", job.Header.Collection, st.Message, manifestAt(st), res.ManifestSHA256, signed))
	log.Info("collection succeeded", "files", res.Totals.Files, "bytes", res.Totals.Bytes, "skipped", res.Totals.Skipped, "seconds", elapsed.Seconds())
	return st, nil
}

// startAfter is when a collection of the pod whose previous collection (attempt) is
// previous starts: now, or the second after previous's start when that is not over yet.
// Collection ids name their start to the second, and retention keeps a pod's last
// collections by id, so a pod's ids must grow with every collection, however fast its
// requests come (a wait of at most a second).
func (h *Handler) startAfter(ctx context.Context, previous string) (time.Time, error) {
	now := h.now().UTC()
	if len(previous) < len(collectionTimeFormat) {
		return now, nil
	}
	t, err := time.Parse(collectionTimeFormat, previous[:len(collectionTimeFormat)])
	if err != nil {
		return now, nil
	}
	next := t.Add(time.Second)
	if now.Truncate(time.Second).Before(next) {
		h.clock().Sleep(next.Sub(now)) // under a second
		if err := context.Cause(ctx); err != nil {
			return time.Time{}, err
		}
		if now = h.now().UTC(); now.Before(next) {
			now = next
		}
	}
	return now, nil
}

// collectionTimeFormat is the start time that begins a collection id (request.CollectionID).
const collectionTimeFormat = "20060102T150405Z"

// finish records a terminal status. The request counts as finished here only once that
// status is written; until then the handler keeps it (pendingFinal) and a *RetryError asks
// the controller to sync the pod again, when the write is tried again (with backoff): no
// goroutine of its own, and no run of the request in between.
func (h *Handler) finish(ctx context.Context, log logr.Logger, pod *corev1.Pod, id string, st status.Status) error {
	switch st.Phase {
	case status.Succeeded:
		h.Metrics.Collections.WithLabelValues(metrics.ResultSucceeded).Inc()
	case status.Failed:
		h.Metrics.Collections.WithLabelValues(metrics.ResultFailed).Inc()
	case status.Rejected:
		h.Metrics.Collections.WithLabelValues(metrics.ResultRejected).Inc()
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
	err := h.Status.Write(wctx, pod, st)
	cancel()
	if err == nil {
		h.markFinished(pod.UID, id)
		return nil
	}
	log.Error(err, "writing the final status failed; retrying until it lands", "phase", st.Phase)
	h.mu.Lock()
	if h.finals == nil {
		h.finals = map[types.UID]*pendingFinal{}
	}
	h.finals[pod.UID] = &pendingFinal{id: id, st: st, delay: finalRetryBase}
	h.mu.Unlock()
	return &RetryError{Reason: "the final status of " + st.Collection + " is not written yet", After: finalRetryBase}
}

// Final status writes: each bounded in time, retried from finalRetryBase doubling to
// finalRetryMax.
const (
	finalWriteTimeout = 10 * time.Second
	finalRetryBase    = time.Second
	finalRetryMax     = 30 * time.Second
)

// pendingFinal is a terminal status not written yet, and the delay before the next try.
type pendingFinal struct {
	id    string
	st    status.Status
	delay time.Duration
}

// writePendingFinal tries again to write pod's pending terminal status, if it has one. It
// returns done=false when there is none; else the error the sync returns (a *RetryError
// while it does not land, nil once it has, or the pod is gone or replaced).
func (h *Handler) writePendingFinal(ctx context.Context, pod *corev1.Pod) (done bool, err error) {
	h.mu.Lock()
	pf := h.finals[pod.UID]
	h.mu.Unlock()
	if pf == nil {
		return false, nil
	}
	h.Metrics.StatusWriteRetries.Inc()
	wctx, cancel := context.WithTimeout(ctx, finalWriteTimeout)
	err = h.Status.Write(wctx, pod, pf.st)
	cancel()
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		h.mu.Lock()
		pf.delay = min(2*pf.delay, finalRetryMax)
		after := pf.delay
		h.mu.Unlock()
		return true, &RetryError{Reason: "the final status of " + pf.st.Collection + " is not written yet: " + err.Error(), After: after}
	}
	// Written, or NotFound/Conflict: the pod is gone or replaced (UID precondition).
	h.mu.Lock()
	delete(h.finals, pod.UID)
	h.mu.Unlock()
	h.markFinished(pod.UID, pf.id)
	logr.FromContextOrDiscard(ctx).Info("final status written after retries", "pod", pod.Namespace+"/"+pod.Name, "phase", pf.st.Phase)
	return true, nil
}

func (h *Handler) job(pod *corev1.Pod, req request.Request, dst exec.Target, start time.Time) (ship.Job, error) {
	id := req.ID()
	dest, err := layout.New(h.Settings.Dir, pod.Namespace, pod.Name)
	if err != nil {
		return ship.Job{}, err
	}
	src := manifest.Source{Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), Container: req.Container, Node: pod.Spec.NodeName}
	for _, c := range pod.Spec.Containers {
		if c.Name == req.Container {
			src.Image = c.Image
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == req.Container {
			src.ImageID, src.ContainerID = cs.ImageID, cs.ContainerID
		}
	}
	dstHeader := manifest.Destination{Namespace: dst.Namespace, Pod: dst.Pod, Container: dst.Container}
	var bucket ship.Bucket
	if b := h.Settings.Bucket; b != nil && h.modeFor(pod.Namespace) != destination.ModePod {
		dstHeader.Bucket = "s3://" + b.Bucket + "/" + dest.ObjectPrefix(request.CollectionID(start, id))
		r := b.RetentionFor(start)
		if r != nil {
			dstHeader.Retention = &manifest.Retention{Mode: r.Mode, LegalHold: r.LegalHold}
			if !r.RetainUntil.IsZero() {
				dstHeader.Retention.RetainUntil = r.RetainUntil.Format(time.RFC3339)
			}
		}
		bucket = b.Begin(r, bucketParallel)
	}
	job := ship.Job{
		Header: manifest.Header{
			Collection:    request.CollectionID(start, id),
			Request:       manifest.Request{ID: id, Paths: req.Paths, Mode: string(req.Mode)},
			Source:        src,
			Destination:   dstHeader,
			Agent:         h.Settings.Agent,
			StartTime:     start.Format(time.RFC3339),
			RequestedBy:   req.RequestedBy,
			RequestOrigin: req.Origin,
			Alert:         req.Alert,
			Occasion:      req.Occasion,
		},
		Paths:       req.Paths,
		Source:      exec.Target{Namespace: pod.Namespace, Pod: pod.Name, Container: req.Container},
		Destination: dst,
		Layout:      dest,
		Policy:      h.Settings.Policy(),
		Limits:      h.Settings.Limits(),
		Gzip:        h.Settings.Compression == "gzip",
		Custody:     h.Settings.Custody,
		Bucket:      bucket,
		NoPod:       h.noPod(pod.Namespace),
	}
	if !job.NoPod {
		job.Header.Destination.Dir = job.CollectionDir()
	}
	return job, nil
}

// where names a collection's destinations for Events: the analysis pod's directory and/or
// the bucket's prefix.
func where(st status.Status) string {
	switch {
	case st.Destination != "" && st.Bucket != "":
		return st.Destination + " and " + st.Bucket
	case st.Bucket != "":
		return st.Bucket
	}
	return st.Destination
}

// manifestAt names where a collection's manifest.json is.
func manifestAt(st status.Status) string {
	var at []string
	if st.Destination != "" {
		at = append(at, st.Destination+"/manifest.json")
	}
	if st.Bucket != "" {
		at = append(at, st.Bucket+"manifest.json")
	}
	return strings.Join(at, " and ")
}
