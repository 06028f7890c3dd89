package effect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Write is one document of an atomic commit.
type Write struct {
	Ref *firestore.DocumentRef
	// Create makes a new document; the commit fails if it exists.
	Create map[string]any
	// Update changes these fields of an existing document, under Pre.
	Update []firestore.Update
	Pre    []firestore.Precondition
	// Merge sets these fields, creating the document when missing; with
	// server transforms (a maximum) it needs no read and no precondition,
	// and a replayed commit applies it again harmlessly.
	Merge map[string]any
}

// ErrConflict is returned (wrapped) by Commit when a precondition failed or
// a created document existed: someone else wrote first, so the caller reads
// again and decides again.
var ErrConflict = errors.New("effect: document changed under us")

// Commit applies ws atomically, in one Commit RPC, and returns each
// write's update time. Several writes go in a WriteBatch: the Commit RPC
// without a transaction is as atomic as one with it, and the writes'
// preconditions do the concurrency control, so the transaction would only
// add its BeginTransaction RPC (and, with reads, locks that contending
// writers queue behind). WriteBatch is deprecated in favour of transactions
// and BulkWriter, neither of which is one atomic RPC.
func Commit(ctx context.Context, fs *firestore.Client, ws ...Write) ([]time.Time, error) {
	b := fs.Batch() //nolint:staticcheck // the one atomic single-RPC commit the client offers (see above)
	for _, w := range ws {
		switch {
		case w.Create != nil:
			b.Create(w.Ref, w.Create)
		case w.Merge != nil:
			b.Set(w.Ref, w.Merge, firestore.MergeAll)
		default:
			b.Update(w.Ref, w.Update, w.Pre...)
		}
	}
	wrs, err := b.Commit(ctx)
	if err != nil {
		return nil, classify(err)
	}
	times := make([]time.Time, len(ws))
	for i, wr := range wrs {
		if i < len(times) {
			times[i] = wr.UpdateTime
		}
	}
	return times, nil
}

func classify(err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.AlreadyExists, codes.NotFound, codes.Aborted:
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return fmt.Errorf("effect: commit: %w", err)
}
