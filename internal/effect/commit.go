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
}

// ErrConflict is returned (wrapped) by Commit when a precondition failed or
// a created document existed: someone else wrote first, so the caller reads
// again and decides again.
var ErrConflict = errors.New("effect: document changed under us")

// Commit applies ws atomically and returns each write's update time. One
// write is one RPC. Several go in a transaction without reads, which takes
// no locks (the preconditions do the concurrency control) and costs one
// BeginTransaction more.
func Commit(ctx context.Context, fs *firestore.Client, ws ...Write) ([]time.Time, error) {
	if len(ws) == 1 {
		w := ws[0]
		var (
			wr  *firestore.WriteResult
			err error
		)
		if w.Create != nil {
			wr, err = w.Ref.Create(ctx, w.Create)
		} else {
			wr, err = w.Ref.Update(ctx, w.Update, w.Pre...)
		}
		if err != nil {
			return nil, classify(err)
		}
		return []time.Time{wr.UpdateTime}, nil
	}
	var resp firestore.CommitResponse
	err := fs.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		for _, w := range ws {
			var err error
			if w.Create != nil {
				err = tx.Create(w.Ref, w.Create)
			} else {
				err = tx.Update(w.Ref, w.Update, w.Pre...)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}, firestore.MaxAttempts(1), firestore.WithCommitResponseTo(&resp))
	if err != nil {
		return nil, classify(err)
	}
	times := make([]time.Time, len(ws))
	if wrs, err := resp.WriteResults(); err == nil && len(wrs) == len(ws) {
		for i, wr := range wrs {
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
