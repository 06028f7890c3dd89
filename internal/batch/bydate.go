package batch

import (
	"context"
	"fmt"
	"sort"

	"github.com/phasegate/phasegate/internal/docid"
)

// MaxPerDate bounds the batches OfDate reads: a date has one or two (a
// rerun), so more means something else is wrong and the first ones show it.
const MaxPerDate = 10

// OfDate returns the status of a game date's batches, oldest first. The
// query is an equality on one field, which Firestore indexes by itself.
func (t *Tracker) OfDate(ctx context.Context, gameDate string) ([]*Status, error) {
	snaps, err := t.Firestore.Collection(t.Config.Names().Coll(Collection)).Where(FieldGameDate, "==", gameDate).
		Select(FieldBatchID).Limit(MaxPerDate).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("batch: batches of %s: %w", gameDate, err)
	}
	out := make([]*Status, 0, len(snaps))
	for _, snap := range snaps {
		id, _ := snap.Data()[FieldBatchID].(string)
		if id == "" || docid.Encode(id) != snap.Ref.ID {
			id = snap.Ref.ID // the coordinator writes batch_id; an id it did not encode is raw
		}
		st, err := t.Status(ctx, id, StatusOptions{})
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartTime.Before(out[j].StartTime) })
	return out, nil
}
