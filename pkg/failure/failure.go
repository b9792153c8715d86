// Package failure is podcopy's one vocabulary for why something did not work: a reason
// token (SPEC §9: the status's reason, the Event's message prefix, a metric label) that an
// error carries, and the classifier every caller uses to read it.
package failure

import (
	"context"
	"errors"
	"fmt"
)

// Reason tokens. They are part of the contract (podcopy/status "reason"): add, never rename.
const (
	// Succeeded is the reason of a collection that ended well.
	Succeeded = "Collected"
	// Waiting: the request waits for its pod, container or analysis pod.
	Waiting = "Waiting"
	// InvalidRequest: the annotations were refused (SPEC §1).
	InvalidRequest = "InvalidRequest"
	// LimitExceeded: policy.maxBytes or policy.maxFiles (or the entry bound) was passed.
	LimitExceeded = "LimitExceeded"
	// SourceBudgetExceeded: the source sent more bytes than the budget (maxBytes plus
	// header overhead), counting entries that were not collected.
	SourceBudgetExceeded = "SourceBudgetExceeded"
	// DeadlineExceeded: the collection ran longer than policy.deadline.
	DeadlineExceeded = "DeadlineExceeded"
	// ManifestTooLarge: the manifest would pass policy.maxManifestBytes.
	ManifestTooLarge = "ManifestTooLarge"
	// QuotaExceeded: the namespace's quota at the destination is used up.
	QuotaExceeded = "QuotaExceeded"
	// Stalled: nothing moved for the progress watchdog's period.
	Stalled = "Stalled"
	// StreamCut: the source's archive ended without its end marker.
	StreamCut = "StreamCut"
	// SpoolFull: the destination took nothing while the source's spool stayed full for
	// its bound; the source's stream was ended before anything on the way cut it.
	SpoolFull = "SpoolFull"
	// NotFound: a requested literal path is not in the container.
	NotFound = "NotFound"
	// SourceFailed: the reading command in the source container failed.
	SourceFailed = "SourceFailed"
	// DestinationFailed: the analysis pod's side failed (its tar, its disk, the rename).
	DestinationFailed = "DestinationFailed"
	// Interrupted: the agent stopped (shutdown, or a restart found the collection unfinished).
	Interrupted = "Interrupted"
	// Unavailable: the API server, kubelet or runtime could not be reached.
	Unavailable = "Unavailable"
	// NodeUnreachable: the pod's node could not be reached: the API server could not dial
	// its kubelet, or the Node is not Ready. Retried like Unavailable.
	NodeUnreachable = "NodeUnreachable"
	// NodeLost: the pod's node has not been Ready for nodeLostAfter; the collection could
	// not end there and another agent (the janitor's Lease holder) recorded so.
	NodeLost = "NodeLost"
	// Unsigned: the custody record could not be signed: the agent has no certificate from the
	// signer (refused, or unreachable), or no timestamp. Retried: nothing was published.
	Unsigned = "Unsigned"
	// Failed is the reason of a failure no other token describes.
	Failed = "Failed"
)

// Reasoned is an error that knows its reason token.
type Reasoned interface {
	error
	FailureReason() string
}

// Error is an error with a reason token.
type Error struct {
	Token string
	Err   error
}

// New wraps err with token.
func New(token string, err error) *Error { return &Error{Token: token, Err: err} }

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// FailureReason implements Reasoned.
func (e *Error) FailureReason() string { return e.Token }

// Reason is the token of the outermost Reasoned error in err's chain; Interrupted for a
// cancelled context; Failed otherwise.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var r Reasoned
	if errors.As(err, &r) {
		if t := r.FailureReason(); t != "" {
			return t
		}
	}
	if errors.Is(err, context.Canceled) {
		return Interrupted
	}
	return Failed
}

// Permanent reports whether a failure with this token cannot be fixed by running again
// (a bound was passed, a path is missing, the request is invalid): it is not retried.
func Permanent(token string) bool {
	switch token {
	case InvalidRequest, LimitExceeded, SourceBudgetExceeded, DeadlineExceeded, ManifestTooLarge, QuotaExceeded, NotFound:
		return true
	}
	return false
}

// Invalid is input that must be refused, not retried (a request's annotations, a
// destination the pod may not have): reason InvalidRequest; its message says what to change.
type Invalid struct{ Reason string }

func (e *Invalid) Error() string { return e.Reason }

// FailureReason is InvalidRequest.
func (e *Invalid) FailureReason() string { return InvalidRequest }

// Invalidf is an *Invalid with a formatted message.
func Invalidf(format string, args ...any) error {
	return &Invalid{Reason: fmt.Sprintf(format, args...)}
}

// Retrier is an error that knows whether running again may help: a command killed from
// outside may, one that exited on its own may not.
type Retrier interface {
	error
	Transient() bool
}

// Transient reports whether a failure may pass when run again (SPEC §5 retry.attempts): the
// API server, kubelet or runtime was unavailable, the stream was cut, or nothing moved. The
// first error in err's chain that is a Retrier decides; else a permanent token, a
// cancellation (the agent stopping) or no error at all is not transient, and anything else
// is.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var r Retrier
	if errors.As(err, &r) {
		return r.Transient()
	}
	return !Permanent(Reason(err)) && !errors.Is(err, context.Canceled)
}
