package bus

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/effect"
)

// Sink performs publish effects: one Publish RPC per try, through p (the
// breaker), to the effect's destination topic.
type Sink struct {
	P      Publisher
	Topics []string // the lanes: every topic phasegate publishes effects to
}

// Perform publishes r once. A try whose outcome is unknown — a timeout,
// or an answer that may have come after Pub/Sub took the message — is
// ambiguous: the effect log records it before any retry, so a copy it may
// cause is counted. An open breaker never sent anything.
func (s Sink) Perform(ctx context.Context, r *effect.Record) effect.Result {
	id, err := s.P.Publish(ctx, r.Destination, r.Data, r.Attributes)
	switch {
	case err == nil:
		return effect.Result{Outcome: effect.Performed, Ref: id}
	case errors.Is(err, ErrOpen):
		return effect.Result{Outcome: effect.NotAsked, Err: err}
	}
	return effect.Result{Outcome: effect.Unavailable, Err: err, Ambiguous: ambiguous(err)}
}

// Lanes returns the topics.
func (s Sink) Lanes() []string { return s.Topics }

// ambiguous reports whether a failed publish may still have been taken:
// the request was sent and no definite refusal came back.
func ambiguous(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Unavailable, codes.Unknown, codes.Internal, codes.Canceled, codes.Aborted:
		return true
	}
	return false
}
