package collect

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/executor"
	"github.com/podcopy/podcopy/internal/follow"
	"github.com/podcopy/podcopy/internal/sweep"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/source"
	"github.com/podcopy/podcopy/pkg/status"
)

// Event reasons of follow mode, beyond SPEC §2's.
const (
	ReasonFollowRotated  = "FollowRotated"
	ReasonFollowDataLost = "FollowDataLost"
	ReasonFollowStopped  = "FollowStopped"
)

// followTickTimeout bounds one follow tick. A segment ships at most policy.maxBytes, so a
// healthy tick ends well within it.
const followTickTimeout = 5 * time.Minute

// syncFollow starts following pod's request unless it already runs; another request of
// the pod that was followed is stopped first.
func (h *Handler) syncFollow(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, st status.Status) (retErr error) {
	id := req.ID()
	if (st.Request == id && (st.Phase == status.Rejected || (st.Phase == status.Failed && (st.Reason == failure.LimitExceeded || st.Reason == failure.QuotaExceeded)))) || h.finals.finished(pod.UID, id) {
		return nil // refused, or ended at its cap or the quota (another agent's, or before a restart)
	}
	if !req.Until.IsZero() {
		left := req.Until.Sub(h.now())
		if left <= 0 {
			return h.followUntilPassed(ctx, pod, req, st)
		}
		// The follow runs until then; the controller syncs the pod again at that time.
		defer func() {
			if retErr == nil {
				retErr = &RetryError{Reason: "the follow ends at " + req.Until.UTC().Format(time.RFC3339), After: left}
			}
		}()
	}
	if h.followingID(pod.UID) == id {
		return nil
	}
	if err := h.stopFollow(pod.UID, executor.End{Why: "the request changed"}); err != nil {
		return err
	}
	if wait := notReady(pod, req.Container); wait != "" {
		return h.pending(ctx, pod, st, id, wait)
	}
	var invalid *failure.Invalid
	if _, err := h.Chooser.Choose(ctx, req.Destination); errors.As(err, &invalid) {
		return h.reject(ctx, pod, id, err.Error())
	}
	log.Info("following", "paths", req.Paths, "interval", req.IntervalDuration().String())
	p := pod.DeepCopy()
	h.Work.StartLoop(ctx, pod.UID, id, func(ctx context.Context, stop <-chan struct{}, end func() executor.End) {
		followWork{work{h}}.follow(ctx, log, p, req, stop, end)
	})
	return nil
}

// followUntilPassed ends a follow whose podcopy/follow-until has come: the loop ships what
// is left and records why; a follow no loop of this agent runs (another agent's, or from
// before a restart) gets its final status here.
func (h *Handler) followUntilPassed(ctx context.Context, pod *corev1.Pod, req request.Request, st status.Status) error {
	id := req.ID()
	why := fmt.Sprintf("%s %s has passed", request.AnnotationFollowUntil, req.Until.UTC().Format(time.RFC3339))
	if h.Work.HasLoop(pod.UID) {
		// The loop ships what is left and writes the final status; sync again once it has.
		if err := h.stopFollow(pod.UID, executor.End{Why: why, Final: true}); err != nil {
			return err
		}
	} else if st.Request == id && st.Phase == status.Running {
		st.Phase, st.CompletionTime, st.NextAttemptTime = status.Succeeded, h.now().UTC().Format(time.RFC3339), ""
		st.Reason, st.Message = failure.Succeeded, "follow stopped: "+why
		if err := h.Status.Write(ctx, pod, st); err != nil {
			return err
		}
	}
	h.finals.markFinished(pod.UID, id)
	return nil
}

// firstTickAfter is the wait before a follow's second tick: between half the interval and
// the interval, at random (never longer than the interval the request asked for).
func firstTickAfter(interval time.Duration) time.Duration {
	return interval - rand.N(interval/2+1)
}

// followingID is the request id pod uid follows ("" when no loop runs, or it is ending).
func (h *Handler) followingID(uid types.UID) string { return h.Work.LoopID(uid) }

// errFollowEnding asks the controller to sync the pod again shortly: its follow loop is
// ending (a last tick, the closing records, its final status), and nothing else may write
// the pod's status before it has.
var errFollowEnding = &RetryError{Reason: "the pod's follow is ending", After: time.Second}

// stopFollow tells uid's loop to end as end says (the first word counts; the loop writes
// why it ended) and never waits for it: errFollowEnding while it runs, nil once it has
// ended (or there was none). A removed request, another request or mode: End{Why}; a
// terminating pod: End{Final} (ship what it has left); the pod gone: End{}.
func (h *Handler) stopFollow(uid types.UID, end executor.End) error {
	if h.Work.StopLoop(uid, end) {
		return nil
	}
	return errFollowEnding
}

// StopFollowing stops every follow loop after its current tick and waits for them; call it
// when the agent shuts down (the loops' context bounds how long a tick may still take).
// Checkpoints live in the analysis pod, so the next agent continues where these stopped.
func (h *Handler) StopFollowing() { h.Work.StopLoops() }

// follow ships each interval until stopped.
func (h followWork) follow(ctx context.Context, log logr.Logger, pod *corev1.Pod, req request.Request, stop <-chan struct{}, end func() executor.End) {
	start := h.now().UTC()
	dest, err := layout.New(h.Settings.Dir, pod.Namespace, pod.Name)
	if err != nil { // names the API server accepted: only a bad destination.dir gets here
		log.Error(err, "cannot follow")
		return
	}
	dir, err := dest.FollowDir(req.Container)
	if err != nil {
		log.Error(err, "cannot follow")
		return
	}
	set := &follow.Set{
		Paths:      req.Paths,
		Source:     h.followSource(pod, req),
		Sink:       follow.ExecSink{Exec: h.Exec},
		UID:        string(pod.UID),
		Layout:     func(p string) (string, string, error) { return dest.FollowFile(req.Container, p) },
		Retired:    func(p, uid string) (string, string, error) { return dest.RetiredFollowFile(req.Container, p, uid) },
		Allow:      func(p string) error { return h.Settings.Policy().Check(p) },
		MaxSegment: h.Settings.Limits().MaxBytes, // a large backlog ships over several ticks
	}
	// To a bucket, a followed file is a chain of signed segments (its own checkpoint, from
	// the bucket): the only destination with destination.mode bucket, a second one with both.
	var bucket *follow.Set
	if b := h.Settings.Bucket; b != nil && h.Settings.Custody != nil && h.Settings.modeFor(pod.Namespace) != destination.ModePod {
		bucket = &follow.Set{
			Paths:  req.Paths,
			Source: set.Source,
			Sink:   &follow.BucketSink{Store: b, Key: h.Settings.Custody, Describe: h.describeSegments(pod, req.Container), Now: func() string { return h.now().UTC().Format(time.RFC3339) }},
			UID:    string(pod.UID),
			Layout: func(p string) (string, string, error) {
				prefix, err := dest.FollowObjectPrefix(req.Container, p, string(pod.UID))
				return prefix, "", err
			},
			Allow:      set.Allow,
			MaxSegment: set.MaxSegment,
		}
	}
	noPod := h.Settings.noPod(pod.Namespace)
	if noPod {
		set, bucket = bucket, nil
	}
	t := &followTick{h: h, stop: stop, end: end, log: log, pod: pod, req: req, set: set, mirror: bucket, noPod: noPod, dir: dir,
		viaHelper: h.Settings.sourceMode(req) == request.SourceHelper,
		last:      status.Status{Request: req.ID(), Phase: status.Running, Collection: "follow", StartTime: start.Format(time.RFC3339), RequestedBy: req.RequestedBy, RequestOrigin: req.Origin}}
	h.event(pod, corev1.EventTypeNormal, ReasonStarted,
		fmt.Sprintf("following %v in container %s every %s", req.Paths, req.Container, req.IntervalDuration()))
	// The first tick runs now; the second comes after a random part of the interval (half to
	// all of it), so the follows an agent resumes after a restart do not tick together; then
	// every interval.
	interval := req.IntervalDuration()
	next := h.clock().NewTimer(firstTickAfter(interval))
	defer next.Stop()
	defer t.cleanup()
	for {
		t.run(ctx)
		if t.capped != "" {
			t.closeChains(ctx, t.capped)
			t.failed(ctx, t.capped)
			h.finals.markFinished(pod.UID, req.ID())
			return
		}
		select {
		case <-stop:
			how := end()
			if how.Final {
				t.run(ctx)
			}
			if how.Why != "" {
				t.closeChains(ctx, how.Why)
			}
			t.stopped(ctx, how.Why)
			return
		case <-ctx.Done():
			return
		case <-next.C():
			next.Reset(interval)
		}
	}
}

// followWork runs a follow loop: a tick each interval until stopped, and the records and
// status that end it.
type followWork struct{ work }

// followTick holds one follow loop's state between ticks.
type followTick struct {
	h followWork
	// stop is closed when the loop is to end, as end says.
	stop <-chan struct{}
	end  func() executor.End
	log  logr.Logger
	pod  *corev1.Pod
	req  request.Request
	set  *follow.Set
	// mirror follows the same files into the bucket too (destination mode both); with mode
	// bucket, set is the bucket's and noPod is set.
	mirror *follow.Set
	noPod  bool
	dir    string        // the follow directory in the analysis pod
	last   status.Status // as last written
	// viaHelper: the files are read through the podcopy helper (asked for, or auto fell back
	// to it); helperReady: set.Source points at a helper that last worked.
	viaHelper, helperReady bool
	// capped says why following must end, cappedReason its reason token: the pod's
	// harvested files reached policy.maxFollowBytes (LimitExceeded), or its namespace's
	// destination.quota.bytes (QuotaExceeded).
	capped, cappedReason string
	// The namespace's usage in the analysis pod when last measured (at quotaAt, when the
	// follow's files held quotaBase bytes): between measures, what the follow adds is counted
	// on top of it.
	quotaUsage sweep.Usage
	quotaAt    time.Time
	quotaBase  int64
}

// quotaRemeasure is how often a follow measures its namespace's usage in the analysis pod
// (what other pods and agents wrote); its own bytes it counts at every tick.
const quotaRemeasure = time.Minute

// quotaLeft is what the namespace's destination.quota.bytes leaves this tick (0: no bound),
// or why following must end because it is used up.
func (t *followTick) quotaLeft(ctx context.Context, dst exec.Target) (left int64, stop string) {
	h := t.h
	limit, err := h.Settings.Quota.BytesValue()
	if err != nil || limit <= 0 || t.noPod || h.Exec == nil {
		return 0, ""
	}
	grown := t.last.Bytes - t.quotaBase
	if t.quotaAt.IsZero() || h.now().Sub(t.quotaAt) >= quotaRemeasure || t.quotaUsage.Bytes+grown >= limit {
		u, err := sweep.Measure(ctx, h.Exec, dst, h.Settings.Dir, t.pod.Namespace)
		if err != nil {
			t.log.Error(err, "measuring the namespace's usage for its quota; following on")
			return 0, ""
		}
		t.quotaUsage, t.quotaAt, t.quotaBase, grown = u, h.now(), t.last.Bytes, 0
	}
	used := t.quotaUsage.Bytes + grown
	if used >= limit {
		return 0, fmt.Sprintf("namespace %s uses %d bytes in the analysis pod, destination.quota.bytes=%s; following ended (remove some collections or raise the quota, and change podcopy/trigger to follow again)",
			t.pod.Namespace, used, h.Settings.Quota.Bytes)
	}
	return limit - used, ""
}

func (t *followTick) run(ctx context.Context) {
	h := t.h
	st := t.last
	var dst exec.Target
	var err error
	if !t.noPod {
		if dst, err = h.Chooser.Choose(ctx, t.req.Destination); err != nil {
			st.Message = "waiting for the destination: " + err.Error()
			t.write(ctx, st, "")
			return
		}
	}
	if t.viaHelper && !t.helperReady {
		src, err := h.helperSource(ctx, t.pod, t.req.Container)
		if err != nil {
			st.Message = "starting the podcopy helper: " + err.Error()
			t.write(ctx, st, st.Message)
			return
		}
		t.set.Source, t.helperReady = src, true
		if t.mirror != nil {
			t.mirror.Source = src
		}
	}
	left, stop := t.quotaLeft(ctx, dst)
	if stop != "" {
		t.capped, t.cappedReason = stop, failure.QuotaExceeded
		return
	}
	t.set.Budget = left
	var problems []string
	var total int64
	withData := 0
	// A tick has a deadline: a stalled exec fails it (the checkpoint in the analysis pod says
	// what landed) instead of holding the loop and the agent's shutdown.
	// A tick counts within concurrency, as a collection does. A stop that asks for no last
	// tick ends the wait for a slot at once.
	wctx, endWait := context.WithCancel(ctx)
	go func() {
		select {
		case <-t.stop:
			if !t.end().Final {
				endWait()
			}
		case <-wctx.Done():
		}
	}()
	release, err := h.Work.Acquire(wctx)
	endWait()
	if err != nil {
		return // stopped, or the agent is stopping
	}
	tctx, cancel := context.WithTimeout(ctx, followTickTimeout)
	reports, err := t.set.Tick(tctx, dst)
	if t.mirror != nil && err == nil {
		mirrored, merr := t.mirror.Tick(tctx, exec.Target{})
		if merr != nil {
			problems = append(problems, "bucket: "+merr.Error())
		}
		for _, fr := range mirrored {
			if fr.Err != nil {
				problems = append(problems, fmt.Sprintf("bucket: %s: %v", fr.Path, fr.Err))
			}
		}
	}
	cancel()
	release()
	if cmd, missing := tickMissingTools(err, reports); missing && !t.viaHelper && h.Settings.sourceMode(t.req) == request.SourceAuto {
		t.viaHelper = true
		h.event(t.pod, corev1.EventTypeNormal, ReasonHelperFallback,
			fmt.Sprintf("container %s has no %s; following through the podcopy helper (podcopy/source=auto)", t.req.Container, cmd))
		t.log.Info("the container lacks a tool; following through the podcopy helper", "missing", cmd)
		t.run(ctx) // once more, through the helper (nothing was shipped: nothing could be read)
		return
	}
	if t.viaHelper && tickFailed(err, reports) {
		t.helperReady = false // find (or start) the helper again next tick
	}
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, fr := range reports {
		if problem := t.record(fr); problem != "" {
			problems = append(problems, problem)
		}
		if !fr.Dropped {
			total += fr.DestSize
			if fr.DestSize > 0 {
				withData++
			}
		}
	}
	if !t.noPod {
		st.Destination = fmt.Sprintf("%s:%s", dst, t.dir)
	}
	if b := h.Settings.Bucket; b != nil && (t.noPod || t.mirror != nil) {
		st.Bucket = "s3://" + b.Bucket + "/" + path.Join(t.pod.Namespace, t.pod.Name, layout.FollowName, t.req.Container) + "/"
	}
	st.Files, st.Bytes = withData, total
	if lim := h.Settings.Limits().MaxFollowBytes; lim > 0 && total >= lim {
		t.capped = fmt.Sprintf("the pod's harvested files hold %d bytes, policy.maxFollowBytes=%d; following ended (raise the limit and change podcopy/trigger to follow again)", total, lim)
		t.cappedReason = failure.LimitExceeded
	}
	st.Message = fmt.Sprintf("following %d file(s) every %s", len(t.set.Followed()), t.req.IntervalDuration())
	warning := ""
	if len(problems) > 0 {
		warning = strings.Join(problems, "; ")
		st.Message += "; " + warning
	}
	t.write(ctx, st, warning)
}

// record turns one file's tick into metrics, Events and logs; it returns the file's problem.
func (t *followTick) record(fr follow.FileReport) string {
	h, pod := t.h, t.pod
	labels := []string{pod.Namespace, pod.Name, t.req.Container, fr.Path}
	fr.Record(h.Metrics, labels...)
	if fr.Dropped {
		h.Metrics.FollowLag.DeleteLabelValues(labels...)
		if fr.Err != nil { // the policy now denies it
			t.log.Info("file dropped", "path", fr.Path, "reason", fr.Err.Error())
			return fmt.Sprintf("%s: %v", fr.Path, fr.Err)
		}
		t.log.Info("file no longer matches; finished and dropped", "path", fr.Path)
		return ""
	}
	normal, warning := fr.Events(fr.Path)
	if normal != "" {
		h.event(pod, corev1.EventTypeNormal, ReasonFollowRotated, normal)
	}
	if warning != "" {
		h.event(pod, corev1.EventTypeWarning, ReasonFollowDataLost, warning)
	}
	if normal != "" || warning != "" {
		t.log.Info("followed file changed", "path", fr.Path, "rotations", fr.Rotations, "truncations", fr.Truncations, "lostBytes", fr.Lost)
	}
	switch {
	case fr.Err != nil:
		t.log.Error(fr.Err, "follow tick failed", "path", fr.Path)
		return fmt.Sprintf("%s: %v", fr.Path, fr.Err)
	case fr.Missing != "":
		return fr.Missing
	}
	return ""
}

// write patches the status when it changed; a new problem is also an Event.
func (t *followTick) write(ctx context.Context, st status.Status, problem string) {
	if st == t.last {
		return
	}
	if problem != "" && !strings.Contains(t.last.Message, problem) {
		t.h.event(t.pod, corev1.EventTypeWarning, ReasonFailed, "follow: "+problem)
	}
	if err := t.h.Status.Write(ctx, t.pod, st); err != nil {
		t.log.Error(err, "writing follow status")
		return
	}
	t.last = st
}

// stopped records why following ended (nothing when the agent is only shutting down).
func (t *followTick) stopped(ctx context.Context, why string) {
	if why == "" {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	st := t.last
	st.Phase = status.Succeeded
	st.CompletionTime = t.h.now().UTC().Format(time.RFC3339)
	st.Message = fmt.Sprintf("follow stopped: %s; %d bytes in the destination", why, st.Bytes)
	// The status first: whoever sees the Event must find the final status already written.
	if err := t.h.Status.Write(wctx, t.pod, st); err != nil {
		t.log.Error(err, "writing follow status")
	}
	t.h.event(t.pod, corev1.EventTypeNormal, ReasonFollowStopped, st.Message)
	t.log.Info("follow stopped", "reason", why)
}

// closeChains writes the closing record of every chain the follow kept in a bucket.
func (t *followTick) closeChains(ctx context.Context, why string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, s := range []*follow.Set{t.set, t.mirror} {
		if s == nil {
			continue
		}
		if err := s.Close(wctx, why); err != nil {
			t.log.Error(err, "closing followed chains")
		}
	}
}

// failed ends following with a Failed status (reason t.cappedReason) and a Warning Event.
func (t *followTick) failed(ctx context.Context, why string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	st := t.last
	st.Phase, st.Reason = status.Failed, t.cappedReason
	t.h.Metrics.Failures.WithLabelValues(t.cappedReason).Inc()
	st.CompletionTime = t.h.now().UTC().Format(time.RFC3339)
	st.Message = "follow stopped: " + why
	if err := t.h.Status.Write(wctx, t.pod, st); err != nil { // before the Event (see stopped)
		t.log.Error(err, "writing follow status")
	}
	t.h.event(t.pod, corev1.EventTypeWarning, ReasonFailed, st.Message)
	t.log.Info("follow stopped", "reason", why)
}

func (t *followTick) cleanup() {
	for _, p := range t.set.Followed() {
		t.h.Metrics.FollowLag.DeleteLabelValues(t.pod.Namespace, t.pod.Name, t.req.Container, p)
	}
}

// describeSegments fills in the pod, container and path of a followed file's segment
// records from its bucket prefix (<ns>/<pod>/follow/<container>/<path>/<uid>/).
func (h followWork) describeSegments(pod *corev1.Pod, container string) func(prefix string) follow.SegmentPredicate {
	base := path.Join(pod.Namespace, pod.Name, layout.FollowName, container) + "/"
	return func(prefix string) follow.SegmentPredicate {
		rel := strings.TrimSuffix(strings.TrimPrefix(prefix, base), "/"+string(pod.UID)+"/")
		return follow.SegmentPredicate{Pod: custody.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}, Container: container, Path: "/" + rel,
			Agent: map[string]any{"version": h.Settings.Agent.Version, "node": h.Settings.Agent.Node}}
	}
}

// followSource reads the request's files with the container's shell (the first tick
// switches to the helper when it is asked for, or when auto finds no shell).
func (h followWork) followSource(pod *corev1.Pod, req request.Request) source.Remote {
	return source.Remote{Exec: h.Exec, Target: exec.Target{Namespace: pod.Namespace, Pod: pod.Name, Container: req.Container}, Reader: source.Shell{}}
}

// tickMissingTools reports the command the container lacks, if a tick failed for that.
func tickMissingTools(err error, reports []follow.FileReport) (string, bool) {
	if cmd, ok := missingTools(err); ok {
		return cmd, true
	}
	for _, r := range reports {
		if cmd, ok := missingTools(r.Err); ok {
			return cmd, true
		}
	}
	return "", false
}

func tickFailed(err error, reports []follow.FileReport) bool {
	if err != nil {
		return true
	}
	for _, r := range reports {
		if r.Err != nil {
			return true
		}
	}
	return false
}
