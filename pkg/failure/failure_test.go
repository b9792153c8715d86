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
