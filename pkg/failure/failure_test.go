package failure

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "nil", err: nil, want: ""},
		{name: "plain", err: errors.New("x"), want: Failed},
		{name: "tagged", err: New(Stalled, errors.New("x")), want: Stalled},
		{name: "wrapped", err: fmt.Errorf("reading: %w", New(DeadlineExceeded, errors.New("x"))), want: DeadlineExceeded},
		{name: "outermost wins", err: New(DestinationFailed, New(Stalled, errors.New("x"))), want: DestinationFailed},
		{name: "cancelled", err: fmt.Errorf("stop: %w", context.Canceled), want: Interrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Reason(tt.err); got != tt.want {
				t.Fatalf("Reason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{LimitExceeded, SourceBudgetExceeded, DeadlineExceeded, ManifestTooLarge, NotFound, InvalidRequest, QuotaExceeded} {
		if !Permanent(tok) {
			t.Errorf("%s is retried", tok)
		}
	}
	for _, tok := range []string{Stalled, StreamCut, Unavailable, Failed} {
		if Permanent(tok) {
			t.Errorf("%s is not retried", tok)
		}
	}
}

type retrier struct{ transient bool }

func (r retrier) Error() string   { return "r" }
func (r retrier) Transient() bool { return r.transient }

// TestTransient: the first Retrier in the chain decides; else permanent tokens and
// cancellation are not transient, anything else is.
func TestTransient(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("connection reset by peer"), true},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), false},
		{"permanent token", New(NotFound, errors.New("no such file")), false},
		{"invalid", Invalidf("bad"), false},
		{"retrier says yes", fmt.Errorf("wrapped: %w", retrier{true}), true},
		{"retrier says no under a transient token", New(Unavailable, retrier{false}), false},
		{"retrier decides before a permanent token", New(NotFound, retrier{true}), true},
	} {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("%s: Transient = %v, want %v", tt.name, got, tt.want)
		}
	}
}
