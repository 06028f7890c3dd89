package batch

import (
	"context"
	"fmt"
	"time"

	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
)

// adoptedFields are what a shadow batch takes from the running
// coordinator's batch: what it was asked to do, never its progress (the
// shadow counts the completions it receives itself).
var adoptedFields = []string{FieldBatchID, FieldGameDate, FieldExpected, FieldStartTime, FieldCorrelationID}

// adopt creates the shadow twin of the running coordinator's batch, which
// a shadow phasegate reads for its expected players and never writes
// (CONTRACT §9). A batch the coordinator has not created yet is missing
// here too: the completion answers 5xx, as live.
func (t *Tracker) adopt(ctx context.Context, batchID string) error {
	live, err := t.Firestore.Collection(Collection).Doc(docid.Encode(batchID)).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return errNoBatch
	}
	if err != nil {
		return fmt.Errorf("read the running coordinator's batch: %w", err)
	}
	data := live.Data()
	doc := map[string]any{FieldComplete: false, "adopted_at": t.Clock.Now()}
	for _, f := range adoptedFields {
		if v, ok := data[f]; ok {
			doc[f] = v
		}
	}
	if exp, ok := t.Config.Names().Expires(t.Clock.Now()); ok {
		doc[config.ExpiresField] = exp
	}
	_, err = t.batchRef(batchID).Create(ctx, doc)
	if status.Code(err) == codes.AlreadyExists {
		return nil // another instance adopted it
	}
	if err != nil {
		return fmt.Errorf("create shadow batch: %w", err)
	}
	return nil
}

// expiring adds the shadow TTL field to fields in shadow mode.
func (t *Tracker) expiring(now time.Time, fields map[string]*pb.Value) map[string]*pb.Value {
	if exp, ok := t.Config.Names().Expires(now); ok {
		fields[config.ExpiresField] = pbTime(exp)
	}
	return fields
}
