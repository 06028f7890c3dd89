package batch

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Summary is a batch's outcome as a range of dates shows it.
type Summary struct {
	BatchID     string
	GameDate    string
	Expected    int64
	Completed   int64 // distinct players (see InRange for how)
	Complete    bool
	Status      string // success | partial, once phasegate completed it
	StartTime   time.Time
	CompletedAt time.Time // zero while open
}

// InRange lists the batches of the game dates from through to
// (YYYY-MM-DD), at most limit, in reads that grow with the batches and never
// with their players: one range query on game_date (its automatic
// single-field index), then one BatchGet of the counter shards of those
// still open. A completed batch is counted from its own document —
// completed_count, written with its completion claim, or the running
// coordinator's array — so no completion is read. An open one counts its
// shards, or its array where that is larger (legacy mode, or the running
// coordinator's batch); a batch mixing both mid-migration shows the larger,
// and Status?batch_id= the exact union.
func (t *Tracker) InRange(ctx context.Context, from, to string, limit int) ([]Summary, error) {
	snaps, err := t.Firestore.Collection(t.Config.Names().Coll(Collection)).
		Where(FieldGameDate, ">=", from).Where(FieldGameDate, "<=", to).Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("batch: batches from %s to %s: %w", from, to, err)
	}
	out := make([]Summary, len(snaps))
	var shardRefs []*firestore.DocumentRef
	owner := map[string]int{} // shard path → the summary it counts for
	for i, snap := range snaps {
		st := decodeState(snap)
		id := st.batchID
		if id == "" || docid.Encode(id) != snap.Ref.ID {
			id = snap.Ref.ID // the coordinator writes batch_id; an id it did not encode is raw
		}
		out[i] = Summary{BatchID: id, GameDate: st.gameDate, Expected: st.expected, Complete: st.complete,
			Status: st.status, StartTime: st.start, CompletedAt: st.completionTime}
		switch {
		case st.payload != "":
			out[i].Completed = st.completedCount
		case st.complete:
			out[i].Completed = int64(len(distinct(st.array)))
		default:
			out[i].Completed = int64(len(distinct(st.array)))
			for k := range st.shards() {
				ref := snap.Ref.Collection(ShardsSub).Doc(strconv.Itoa(k))
				owner[ref.Path] = i
				shardRefs = append(shardRefs, ref)
			}
		}
	}
	if err := t.countShards(ctx, shardRefs, owner, out); err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].GameDate != out[j].GameDate {
			return out[i].GameDate < out[j].GameDate
		}
		return out[i].StartTime.Before(out[j].StartTime)
	})
	return out, nil
}

// countShards sums the open batches' shards in one BatchGet and keeps, for
// each, the larger of that sum and its array's count.
func (t *Tracker) countShards(ctx context.Context, refs []*firestore.DocumentRef, owner map[string]int, out []Summary) error {
	if len(refs) == 0 {
		return nil
	}
	snaps, err := t.Firestore.GetAll(ctx, refs)
	if err != nil {
		return fmt.Errorf("batch: counter shards: %w", err)
	}
	sums := map[int]int64{}
	for _, s := range snaps {
		if s.Exists() {
			sums[owner[s.Ref.Path]] += takeover.Int(s.Data()[shardCount])
		}
	}
	for i, n := range sums {
		out[i].Completed = max(out[i].Completed, n)
	}
	return nil
}
