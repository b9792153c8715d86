package collect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/internal/sweep"
	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
	corev1 "k8s.io/api/core/v1"
)

// work is what the executor runs for the handler (package executor owns its goroutines):
// it reads the handler's configuration and does; the handler only decides.
type work struct{ *Handler }

// onceWork runs a once collection: its attempts, quota reservation, source, progress and
// terminal status.
type onceWork struct{ work }

// recordsTimeout bounds reading a pod's records through the API.
const recordsTimeout = time.Minute

// bucketParallel is how many small objects of a collection may be in flight to the bucket.
const bucketParallel = 16

// collect runs one attempt of request req. A transient failure with attempts left does not
// wait here: the Running status records when the next attempt is due (nextAttemptTime) and
// a *RetryError asks the controller to sync the pod again then (cert-manager's pattern: the
// delay comes from the status, so a restarted agent keeps the schedule).
func (h onceWork) collect(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, dst exec.Target, prev status.Status) error {
	id := req.ID()
	attempt := 1
	// Sync starts no collection while one of the pod's runs in this process: a Running
	// status here is an earlier attempt's.
	if prev.Request == id && prev.Phase == status.Running {
		attempt = max(prev.Attempt, 1) + 1
		// The earlier attempt's staging directory goes first, whoever ran it: its agent
		// removes it when the attempt fails, but an agent stopped during that removal (a
		// rolling upgrade under load: e2e TestUpgradeUnderLoad) leaves it to this one.
		h.discardStaging(ctx, log, pod, dst, prev.Collection)
		// Without nextAttemptTime, a Running status that no collection of this process backs
		// means the agent that wrote it stopped mid-way, and the attempt counts. With it,
		// this is the attempt the status scheduled.
		if prev.NextAttemptTime == "" {
			log.Info("resolving a Running status that no live collection backs", "collection", prev.Collection, "attempt", attempt)
			if attempt > h.Settings.attempts() {
				h.Metrics.Failures.WithLabelValues(failure.Interrupted).Inc()
				return h.finish(ctx, log, pod, id, status.Status{Request: id, Phase: status.Failed, Collection: prev.Collection,
					Destination: prev.Destination, StartTime: prev.StartTime, Attempt: prev.Attempt,
					CompletionTime: h.now().UTC().Format(time.RFC3339), Reason: failure.Interrupted,
					Message: fmt.Sprintf("collection %s was interrupted (its agent stopped) and retry.attempts=%d is used up; change podcopy/trigger to run it again", prev.Collection, h.Settings.attempts())})
			}
		}
	}
	st, err := h.attempt(ctx, log, pod, req, dst, attempt, prev.Collection)
	if st.Phase == status.Failed || st.Phase == status.Rejected {
		h.Metrics.Failures.WithLabelValues(st.Reason).Inc()
	}
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
func (h onceWork) reserve(ctx context.Context, pod *corev1.Pod, job ship.Job) (*reservation, error) {
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
func (h onceWork) discardStaging(ctx context.Context, log logr.Logger, pod *corev1.Pod, dst exec.Target, id string) {
	if h.Exec == nil || id == "" || h.Settings.noPod(pod.Namespace) {
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
func (h onceWork) retryDelay(attempt int) time.Duration {
	base := h.RetryBase
	if base == 0 {
		base = 2 * time.Second
	}
	return min(base<<(attempt-1), 30*time.Second)
}

// attempt runs one attempt and returns the status it ended in (Phase "" when the pod was
// deleted), reporting through Events, metrics and the log.
func (h onceWork) attempt(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, dst exec.Target, attempt int, previous string) (status.Status, error) {
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
func (h onceWork) startAfter(ctx context.Context, previous string) (time.Time, error) {
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
// status is written; until then finalStatuses keeps it and a *RetryError asks
// the controller to sync the pod again, when the write is tried again (with backoff): no
// goroutine of its own, and no run of the request in between.
func (h onceWork) finish(ctx context.Context, log logr.Logger, pod *corev1.Pod, id string, st status.Status) error {
	switch st.Phase {
	case status.Succeeded:
		h.Metrics.Collections.WithLabelValues(metrics.ResultSucceeded).Inc()
	case status.Failed:
		h.Metrics.Collections.WithLabelValues(metrics.ResultFailed).Inc()
	case status.Rejected:
		h.Metrics.Collections.WithLabelValues(metrics.ResultRejected).Inc()
	}
	return h.finals.write(logr.NewContext(ctx, log), h.Status, pod, id, st)
}

func (h onceWork) job(pod *corev1.Pod, req request.Request, dst exec.Target, start time.Time) (ship.Job, error) {
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
	if b := h.Settings.Bucket; b != nil && h.Settings.modeFor(pod.Namespace) != destination.ModePod {
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
		NoPod:       h.Settings.noPod(pod.Namespace),
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

// runJob runs job with the source the request asks for. With auto, a container without tar
// or sh is read once more through the helper, and an Event says so.
func (h onceWork) runJob(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, job ship.Job) (ship.Result, error) {
	mode := h.Settings.sourceMode(req)
	if mode == request.SourceHelper || (mode == request.SourceAuto && h.Work.Toolless(pod.UID, req.Container)) {
		if err := h.withHelper(ctx, pod, req, &job); err != nil {
			return ship.Result{}, err
		}
		return h.Runner.Run(ctx, job)
	}
	res, err := h.Runner.Run(ctx, job)
	cmd, missing := missingTools(err)
	if !missing {
		return res, err
	}
	if mode != request.SourceAuto {
		return res, &ship.PermanentError{Err: fmt.Errorf("%w; podcopy/source=%s reads with the container's own %s: use podcopy/source=helper (or auto) for a container without it", err, mode, cmd)}
	}
	h.Work.MarkToolless(pod.UID, req.Container)
	h.event(pod, corev1.EventTypeNormal, ReasonHelperFallback,
		fmt.Sprintf("container %s has no %s; reading through the podcopy helper (podcopy/source=auto)", req.Container, cmd))
	log.Info("the container lacks a tool; reading through the podcopy helper", "missing", cmd)
	if err := h.withHelper(ctx, pod, req, &job); err != nil {
		return ship.Result{}, fmt.Errorf("container %s has no %s, and the podcopy helper could not start: %w", req.Container, cmd, err)
	}
	return h.Runner.Run(ctx, job)
}

// withHelper points job at the helper reading req's container.
func (h onceWork) withHelper(ctx context.Context, pod *corev1.Pod, req request.Request, job *ship.Job) error {
	target, r, err := h.helperReader(ctx, pod, req.Container, job.Policy.DenyPaths)
	if err != nil {
		return err
	}
	job.Source, job.Reader = target, r
	job.Gzip = job.Gzip || h.Settings.Compression == "auto"
	return nil
}
