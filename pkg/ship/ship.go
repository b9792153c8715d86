// Package ship streams files from a source container to the analysis pod: tar in the source,
// validation and hashing in the agent, a fresh tar into the destination's staging directory,
// published under its final name only when complete.
package ship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/podcopy/podcopy/pkg/analysis"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/source"
	"github.com/podcopy/podcopy/pkg/spool"
)

// RecordSize is tar's record size; the destination stream is padded to a whole record so
// GNU tar finishes without waiting for stdin EOF (and stdin is closed as well).
const RecordSize = 10240

// DefaultStall is how long a collection may make no progress (no byte read from the source,
// none accepted by the destination) before it fails.
const DefaultStall = 60 * time.Second

// Limits bound one collection.
type Limits struct {
	MaxBytes int64
	MaxFiles int
	// Deadline bounds one attempt from its first exec to its publication (policy.deadline;
	// DeadlineFor(MaxBytes) when zero).
	Deadline time.Duration
	// MaxManifestBytes bounds the manifest (policy.maxManifestBytes; 0: no bound).
	MaxManifestBytes int64
	// MaxFollowBytes caps what one followed pod's harvested files may hold in all
	// (policy.maxFollowBytes; 0: no cap). Not used by once collections.
	MaxFollowBytes int64
}

// Per-entry overhead of the source-bytes budget: a header block, a PAX header of up to two
// blocks plus a name of PATH_MAX, and the data's padding.
const (
	budgetPerEntry = 6 << 10
	budgetBase     = 16 << 20
	overheadText   = "16 MiB + 6 KiB per permitted entry (4 × policy.maxFiles)"
)

// SourceBudget is how many bytes the source may send for one collection (0: no bound when
// maxBytes is unbounded): policy.maxBytes plus tar's overhead for every entry the archive
// may hold. Entries that are not collected count too, so a source cannot keep a worker
// busy with data nobody asked for.
func (l Limits) SourceBudget() int64 {
	if l.MaxBytes <= 0 {
		return 0
	}
	return l.MaxBytes + budgetBase + int64(entriesPerFile)*int64(max(l.MaxFiles, 0))*budgetPerEntry
}

// Floor of the default deadline: a collection of maxBytes may take this long plus
// maxBytes at FloorThroughput (2 MiB/s, 25–50× below what the local cluster measured).
const (
	FloorThroughput = 2 << 20
	DeadlineBase    = 2 * time.Minute
)

// DeadlineFor is the default policy.deadline for maxBytes: DeadlineBase plus maxBytes at
// FloorThroughput (1 GiB: 10m32s).
func DeadlineFor(maxBytes int64) time.Duration {
	if maxBytes <= 0 {
		return time.Hour
	}
	return DeadlineBase + time.Duration(maxBytes/FloorThroughput)*time.Second
}

// AttemptDeadline is how long one attempt may run: Deadline, or DeadlineFor(MaxBytes).
func (l Limits) AttemptDeadline() time.Duration { return l.deadline() }

func (l Limits) deadline() time.Duration {
	if l.Deadline > 0 {
		return l.Deadline
	}
	return DeadlineFor(l.MaxBytes)
}

// Job is one collection to run.
type Job struct {
	// Header is the manifest header; CompletionTime is filled in by Run.
	Header      manifest.Header
	Paths       []string
	Source      exec.Target
	Destination exec.Target
	// Layout is the source pod's tree in the analysis pod: the only place paths there are built.
	Layout layout.Layout
	Policy policy.Policy
	Limits Limits
	Gzip   bool
	// Reader runs the reads in the source container: its own tar when nil (source.Shell),
	// or the podcopy helper (source.Helper) for containers with no tar. Its Kind is how the
	// custody record says the files were read.
	Reader source.Reader
	// Progress, when set, is updated as files are written (read it from another goroutine).
	Progress *Progress
	// Custody, when set, signs the collection's custody record (package custody), written
	// beside the manifest and published with it.
	Custody *custody.PrivateKey
	// Bucket, when set, receives every object of the collection too (package objstore):
	// files as they stream, then the manifest, then the custody record.
	Bucket Bucket
	// NoPod writes to the bucket only: no analysis pod leg at all (Destination unused).
	NoPod bool
	// Records are the pod's own records (podcopy/include), stored after the files and
	// before the manifest, which lists them with their SHA-256 (the custody record signs them).
	Records []RecordFile
	// Quota, when set, holds the source namespace's quota in the analysis pod: before each
	// file is written, the collection's bytes so far plus the file's must be reserved.
	Quota Quota
}

// Quota is a collection's reservation of its namespace's quota in the analysis pod
// (destination.quota.bytes).
type Quota interface {
	// Reserve makes sure total bytes are reserved for the collection, growing its
	// reservation when needed: ok false when the quota does not leave them (the collection
	// fails with QuotaExceeded, reason saying what was left); err when it could not be
	// asked.
	Reserve(ctx context.Context, total int64) (ok bool, reason string, err error)
}

// RecordFile is one pod record to store: its manifest entry (Name, Kind, Container,
// Truncated, Error; Size and SHA256 are filled in as it is written) and how to read it
// (nil when Error says why there is none).
type RecordFile struct {
	manifest.Record
	Open func() (io.ReadCloser, int64, error)
}

// Bucket is an object store a collection's objects are written to (objstore.Upload).
type Bucket interface {
	// Create starts object key of size bytes; Close completes it.
	Create(ctx context.Context, key string, size int64) (io.WriteCloser, error)
	// Put writes object key whole from data (a bundle), whose SHA-256 is sum; it does not
	// keep data.
	Put(ctx context.Context, key string, data []byte, sum [sha256.Size]byte) error
	// Copy makes dst a copy of src, an object of this collection (a hard link).
	Copy(ctx context.Context, dst, src string) error
	// Wait waits for the objects still in flight and returns the first of their errors.
	Wait(ctx context.Context) error
	// Abort ends the collection's uploads still open (a failed collection).
	Abort(ctx context.Context)
	// Version is the version id the store gave object key, once complete ("": none).
	Version(key string) string
}

// Progress is how far a running collection is. Expected is the collection's size when it
// is known early (one requested file: its size once its header arrives), else 0.
type Progress struct {
	Files, Bytes, Expected atomic.Int64
}

// progressCounter counts bytes into a Progress.
type progressCounter struct{ p *Progress }

func (w progressCounter) Write(b []byte) (int, error) {
	w.p.Bytes.Add(int64(len(b)))
	return len(b), nil
}

// CollectionDir is <dir>/<namespace>/<pod>/<collection id>, or "" when the id is malformed
// (Run then fails).
func (j Job) CollectionDir() string {
	d, _ := j.Layout.Collection(j.Header.Collection)
	return d
}

// Result is what a finished collection shipped.
type Result struct {
	Totals manifest.Totals
	// SkippedByType counts skipped entries per SPEC skip type.
	SkippedByType map[string]int
	// Warning is set when tar reported a warning (GNU tar exit 1) on a complete stream.
	Warning string
	// Completion is when the manifest was written.
	Completion time.Time
	// ManifestSHA256 is the hex SHA-256 of manifest.json as written.
	ManifestSHA256 string
	// CustodyKeyID is the id of the key that signed the custody record ("": unsigned).
	CustodyKeyID string
}

// Shipper runs collections through an Executor.
type Shipper struct {
	Exec exec.Executor
	// SourceRoot is "/" in production; tests point it at a directory.
	SourceRoot string
	// SpoolDir holds manifest spool files ("" for os.TempDir()).
	SpoolDir string
	// Spool bounds what all collections in flight spool together (nil: no bound).
	Spool *manifest.SpoolBudget
	// Clock is the shipper's time: completion times and the heartbeat (the real clock when
	// nil; tests use k8s.io/utils/clock/testing's fake).
	Clock clock.WithTicker
	// Stall is the progress watchdog (DefaultStall when zero).
	Stall time.Duration
	// Heartbeat is how often a collection in flight refreshes its staging directory's
	// modification time (0: never). Set it well below destination.staleAfter.
	Heartbeat time.Duration
	// SourceSpool bounds the disk (in SpoolDir) one collection's source stream may wait in
	// while the destination is slower than the source (DefaultSourceSpool when zero); past
	// it the source waits.
	SourceSpool int64
	// SpoolMeter is told what the source spools hold (metrics; zero: nothing).
	SpoolMeter SpoolMeter
	// SpoolFullWait bounds how long the source may wait on a full spool before the
	// collection fails with SpoolFull (DefaultSpoolFullWait when zero; negative: no bound).
	SpoolFullWait time.Duration
	// Bundles says how a bucket packs small files (DefaultBundles when nil).
	Bundles *BundleOptions
}

func (s *Shipper) spoolFullWait() time.Duration {
	switch {
	case s.SpoolFullWait < 0:
		return 0
	case s.SpoolFullWait == 0:
		return DefaultSpoolFullWait
	}
	return s.SpoolFullWait
}

func (s *Shipper) bundles() BundleOptions {
	if s.Bundles != nil {
		return *s.Bundles
	}
	return DefaultBundles
}

func (s *Shipper) sourceSpool() int64 {
	if s.SourceSpool > 0 {
		return s.SourceSpool
	}
	return DefaultSourceSpool
}

// HeartbeatFor is the heartbeat for a stale sweep of staleAfter: a quarter of it, at least
// ten seconds.
func HeartbeatFor(staleAfter time.Duration) time.Duration {
	return max(staleAfter/4, 10*time.Second)
}

// LimitError is a collection that exceeded policy limits. Token is its reason token
// (failure.LimitExceeded when empty).
type LimitError struct {
	Reason string
	Token  string
}

func (e *LimitError) Error() string { return e.Reason }

// Transient is false: the same request passes the same limit again (failure.Retrier).
func (e *LimitError) Transient() bool { return false }

// FailureReason implements failure.Reasoned.
func (e *LimitError) FailureReason() string {
	if e.Token != "" {
		return e.Token
	}
	return failure.LimitExceeded
}

// Reason tokens of the limits ship enforces.
const (
	ReasonSourceBudget = failure.SourceBudgetExceeded
	ReasonDeadline     = failure.DeadlineExceeded
	ReasonManifest     = failure.ManifestTooLarge
)

// DestinationError is a failure of the analysis pod's side (its tar, its disk, the rename).
type DestinationError struct{ Err error }

func (e *DestinationError) Error() string { return e.Err.Error() }
func (e *DestinationError) Unwrap() error { return e.Err }

// FailureReason implements failure.Reasoned.
func (e *DestinationError) FailureReason() string { return failure.DestinationFailed }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Run streams one collection into its staging directory and publishes it. On failure
// nothing is left under the final name and the staging directory is removed (best effort;
// the agent's stale sweep removes what this could not).
func (s *Shipper) Run(ctx context.Context, job Job) (Result, error) {
	id := job.Header.Collection
	job.Reader = s.reader(job)
	final, err := job.Layout.Collection(id)
	if err != nil {
		return Result{}, err
	}
	if _, err := job.Layout.Staging(id); err != nil {
		return Result{}, err
	}
	if !job.NoPod {
		job.Header.Destination.Dir = final
	}
	return s.run(ctx, job, final)
}

// cleanup removes a failed collection's staging directory, retrying for up to a minute: the
// failure is often the API server or kubelet going away, and they come back.
func (s *Shipper) cleanup(ctx context.Context, dst exec.Target, staging string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	delay := 500 * time.Millisecond
	for {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		err := analysis.Pod{Exec: s.Exec, Target: dst}.Discard(cctx, staging)
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 8*time.Second)
	}
}

func (s *Shipper) run(ctx context.Context, job Job, final string) (Result, error) {
	d := job.Limits.deadline()
	deadline := &LimitError{Token: ReasonDeadline, Reason: fmt.Sprintf(
		"the collection did not finish within policy.deadline=%s (sized from policy.maxBytes at %d MiB/s when not set); nothing was published", d, FloorThroughput>>20)}
	ctx, cancelDeadline := context.WithTimeoutCause(ctx, d, deadline)
	defer cancelDeadline()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wd := newWatchdog(s.stall(), cancel)
	defer wd.stop()
	p, err := s.plan(ctx, job)
	if err != nil {
		return Result{}, err
	}
	if len(p.paths) == 0 {
		return Result{}, permanent("nothing left to read: %s", describeSkipped(p.skipped))
	}
	srcR, srcW := spool.New(s.SpoolDir, s.sourceSpool(), s.SpoolMeter, s.spoolFullWait(), s.clock(), func(error) {
		cancel(&SpoolFullError{Max: s.sourceSpool(), Wait: s.spoolFullWait()})
	})
	defer srcR.CloseWithError(nil) // its file goes with it
	// Cancelled (the deadline, the watchdog, the caller): every read of the source fails at
	// once with the cause, whether or not its exec honours its context, so no copy loop
	// outlives it (each destination does the same for its own writes).
	stopClosing := context.AfterFunc(ctx, func() { srcR.CloseWithError(context.Cause(ctx)) })
	defer stopClosing()
	var src sync.WaitGroup
	src.Go(func() {
		err := s.Exec.Exec(ctx, exec.Request{Target: job.Source, Command: job.Reader.ArchiveCommand(p.paths, job.Gzip), Stdout: wd.writer(srcW)})
		if ctx.Err() != nil {
			// Stopped by the other side or the caller: that cause is the error, not this exit.
			srcW.CloseWithError(context.Cause(ctx))
			return
		}
		srcW.CloseWithError(sourceError(err))
	})
	dst := s.destinationFor(ctx, job, final, cancel, wd)
	res, procErr := s.process(ctx, job, p, srcR, dst)
	if procErr != nil {
		cancel(procErr)
		srcR.CloseWithError(procErr)
	}
	dstErr := dst.Finish(procErr)
	src.Wait()
	if err := s.outcome(ctx, deadline, wd, procErr, dstErr); err != nil {
		if derr := dst.Discard(context.WithoutCancel(ctx)); derr != nil {
			err = fmt.Errorf("%w (and %v)", err, derr)
		}
		return res, err
	}
	return res, nil
}

// outcome is a collection's error from what stopped it: the watchdog, the deadline, the
// destination, or process.
func (s *Shipper) outcome(ctx context.Context, deadline error, wd *watchdog, procErr, dstErr error) error {
	if stalled := wd.fired(); stalled != nil {
		return stalled
	}
	var reported *DestinationError
	var full *SpoolFullError
	if cause := context.Cause(ctx); errors.As(cause, &reported) || errors.As(cause, &full) || cause == deadline {
		return cause
	}
	switch {
	case dstErr != nil && (procErr == nil || errors.Is(procErr, dstErr) || errors.Is(procErr, io.ErrClosedPipe) || errors.Is(procErr, errDestinationStopped)):
		return dstErr
	case procErr != nil:
		return procErr
	}
	return nil
}

// heartbeat touches the staging directory every s.Heartbeat until ctx ends (run cancels it
// once both legs are done). A failed touch is not the
// collection's failure; the watchdog and the legs report what matters.
func (s *Shipper) heartbeat(ctx context.Context, dst exec.Target, staging string) {
	t := s.clock().NewTicker(s.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		hctx, cancel := context.WithTimeout(ctx, s.Heartbeat)
		_ = analysis.Pod{Exec: s.Exec, Target: dst}.Heartbeat(hctx, staging)
		cancel()
	}
}

// errDestinationStopped is what the source side sees when the analysis pod's exec ended
// first; the destination's own error is then the reason.
var errDestinationStopped = errors.New("analysis pod stopped reading")

func describeSkipped(sk []manifest.Skipped) string {
	var parts []string
	for _, s := range sk {
		parts = append(parts, s.Path+": "+s.Reason)
	}
	return strings.Join(parts, "; ")
}

// reader is how job's source container is read: job.Reader, else its own tar below
// SourceRoot.
func (s *Shipper) reader(job Job) source.Reader {
	if job.Reader != nil {
		return job.Reader
	}
	return source.Shell{Root: s.SourceRoot}
}

func (s *Shipper) clock() clock.WithTicker {
	if s.Clock != nil {
		return s.Clock
	}
	return clock.RealClock{}
}

func (s *Shipper) now() time.Time { return s.clock().Now() }

func (s *Shipper) stall() time.Duration {
	if s.Stall > 0 {
		return s.Stall
	}
	return DefaultStall
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// sourceError carries the source's exit into the pipe: nil means a clean EOF.
func sourceError(err error) error {
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &sourceExit{exit}
	}
	return fmt.Errorf("reading from source container: %w", err)
}

// sourceExit is a non-zero exit of the source tar, delivered after all its output.
type sourceExit struct{ *exec.ExitError }

func (e *sourceExit) Error() string { return "source tar: " + e.ExitError.Error() }

// FailureReason implements failure.Reasoned.
func (e *sourceExit) FailureReason() string { return failure.SourceFailed }

// PermanentError is a failure that running again cannot fix (a missing file, nothing left
// to read, a refused name).
type PermanentError struct {
	Err   error
	Token string // failure.Failed when empty
}

func (e *PermanentError) Error() string { return e.Err.Error() }

// Transient is false: running again cannot fix it (failure.Retrier).
func (e *PermanentError) Transient() bool { return false }
func (e *PermanentError) Unwrap() error   { return e.Err }

// FailureReason implements failure.Reasoned.
func (e *PermanentError) FailureReason() string {
	if e.Token != "" {
		return e.Token
	}
	return failure.Reason(e.Err)
}

func permanent(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...), Token: failure.NotFound}
}

// lineWatcher keeps what is written (at most max bytes) and calls onLine with each complete
// line as it arrives.
type lineWatcher struct {
	mu     sync.Mutex
	buf    []byte
	max    int
	seen   int
	onLine func(string)
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf)+len(p) > w.max {
		return 0, errors.New("output too long")
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf[w.seen:], '\n')
		if i < 0 {
			return len(p), nil
		}
		w.onLine(string(w.buf[w.seen : w.seen+i]))
		w.seen += i + 1
	}
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
