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
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/executor"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
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

	finals finalStatuses // requests this process ended, and terminal statuses not written yet
}

// PodRecords gathers the pod's own records for podcopy/include (podrecord.Gatherer in
// production); cleanup is called when the collection has ended.
type PodRecords interface {
	Gather(ctx context.Context, pod *corev1.Pod, include []string) (records []ship.RecordFile, cleanup func(), err error)
}

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
	if pending, err := h.finals.retry(ctx, h.Status, h.Metrics, pod); pending && err != nil {
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
		if st.Done(id) || h.finals.finished(pod.UID, id) {
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
	if st.Done(id) || h.finals.finished(pod.UID, id) {
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
		return onceWork{work{h}}.collect(ctx, log, pod, req, dst, st)
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
	if h.Settings.noPod(pod.Namespace) {
		return exec.Target{}, nil
	}
	return h.Chooser.Choose(ctx, req.Destination)
}

// modeFor is where ns's collections go: pod, bucket or both (always pod without a bucket).
func (s Settings) modeFor(ns string) string {
	switch {
	case s.Bucket == nil:
		return destination.ModePod
	case s.Mode == nil:
		return destination.ModeBoth
	}
	return s.Mode(ns)
}

// noPod reports whether ns's collections go to the bucket only.
func (s Settings) noPod(ns string) bool { return s.modeFor(ns) == destination.ModeBucket }

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

// Forget drops what the handler remembers of a pod and stops its collection; call it when
// the pod is deleted.
func (h *Handler) Forget(uid types.UID) {
	h.finals.forget(uid)
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
	h.Metrics.Failures.WithLabelValues(failure.InvalidRequest).Inc()
	h.finals.markFinished(pod.UID, id)
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
