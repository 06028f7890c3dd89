package errs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestKindOf(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		kind   Kind
		reason string
	}{
		{"nil", nil, Other, ""},
		{"plain", errors.New("x"), Other, ""},
		{"invalid", Invalidf("bad_date", "date %q", "x"), Invalid, "bad_date"},
		{"wrapped invalid", fmt.Errorf("gate: %w", Invalidf("bad_name", "n")), Invalid, "bad_name"},
		{"outer kind wins", E(Transient, "publish_failed", Invalidf("inner", "i")), Transient, "publish_failed"},
		{"reasonless kind inherits reason", E(Transient, "", E(Other, "firestore", errors.New("x"))), Transient, "firestore"},
		{"grpc unavailable", status.Error(codes.Unavailable, "down"), Transient, ""},
		{"grpc aborted wrapped", fmt.Errorf("write: %w", status.Error(codes.Aborted, "contention")), Transient, ""},
		{"grpc invalid argument", status.Error(codes.InvalidArgument, "no"), Other, ""},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), Transient, ""},
		{"other kind falls through to grpc", E(Other, "firestore", status.Error(codes.Unavailable, "down")), Transient, "firestore"},
		{"duplicate", E(Duplicate, "duplicate_completion", nil), Duplicate, "duplicate_completion"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.kind {
				t.Errorf("KindOf = %v, want %v", got, tt.kind)
			}
			if got := ReasonOf(tt.err); got != tt.reason {
				t.Errorf("ReasonOf = %q, want %q", got, tt.reason)
			}
		})
	}
}
