package batch

import (
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"

	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/logging"
)

// SweepItem is what the sweep did with one batch.
type SweepItem struct {
	BatchID  string
	GameDate string
	Action   string // ActionCompleted, ActionResumed, ActionInFlight, ActionDone or "" (still open)
	Status   string // success | partial, when completed or resumed
	Reason   string // all_players | stalled | max_age
	Players  int64
	Expected int64
	Err      string
}

// SweepReport sums up one sweep over batches.
type SweepReport struct {
	Visited   int
	Completed int // published by this sweep, resumed ones included
	InFlight  int
	Errors    int
	Items     []SweepItem
}

// Sweep visits open batches (is_complete == false) whose start_time lies
// within lookBack, newest first, at most max of them, and completes those
// that are due: every expected player in (success, including a batch whose
// last completion skipped the shard read); stalled for cfg.Batch.StallAfter
// at StallMinPercent or more (partial, stall_reason "stalled"); older than
// MaxAge (partial, "max_age"); or a completion claimed and still owed
// (its publish is the effect log's). Each completion is decided by a
// conditional write, so concurrent sweeps decide it once. An open batch's
// capped legacy array is brought up to date. The query needs the composite index
// (is_complete ASC, start_time DESC). The error is the query's: a batch the
// sweep could not finish is logged at ERROR and counted in the report's
// Errors (its item's Err), as the next sweep retries it.
func (t *Tracker) Sweep(ctx context.Context, lookBack time.Duration, max int) (SweepReport, error) {
	var rep SweepReport
	now := t.Clock.Now()
	snaps, err := t.Firestore.Collection(t.Config.Names().Coll(Collection)).
		Where(FieldComplete, "==", false).
		Where(FieldStartTime, ">=", now.Add(-lookBack)).
		OrderBy(FieldStartTime, firestore.Desc).Limit(max).
		Documents(ctx).GetAll()
	if err != nil {
		return rep, fmt.Errorf("batch sweep: query open batches: %w", err)
	}
	rep.Items = make([]SweepItem, len(snaps))
	var g errgroup.Group
	g.SetLimit(max1(t.Config.Sweep.Concurrency))
	for i, snap := range snaps {
		st := decodeState(snap)
		id := st.batchID
		if id == "" || docid.Encode(id) != snap.Ref.ID {
			id = snap.Ref.ID // the coordinator writes batch_id; an id it did not encode is raw
		}
		g.Go(func() error {
			bctx := logging.WithLabels(ctx, "batch_id", id, "game_date", st.gameDate, "correlation_id", st.corrID)
			r, err := t.finish(bctx, id, nil, SourceSweep)
			if err == nil && r.Action == ActionNone && ModeFor(t.Config.Batch, id) == ModeDualSubReads {
				// Still open: bring its capped array up to date, whatever
				// became of the instances that recorded its completions.
				err = t.mergeAll(bctx, id)
			}
			item := SweepItem{BatchID: id, GameDate: st.gameDate, Action: r.Action, Status: r.Status, Reason: r.Reason,
				Players: r.Players, Expected: st.expected}
			if err != nil {
				item.Err = err.Error()
				t.Log.ErrorContext(bctx, "batch sweep failed for a batch; the next sweep retries", "error", err.Error())
			} else if r.Action == ActionCompleted || r.Action == ActionResumed || r.Action == ActionDone {
				t.cache.markComplete(id)
			}
			if r.Action == ActionCompleted || r.Action == ActionResumed {
				t.Log.InfoContext(bctx, "batch completed by the sweep", "status", r.Status, "reason", r.Reason,
					"completed_players", r.Players, "expected_players", st.expected)
			}
			rep.Items[i] = item
			return nil
		})
	}
	_ = g.Wait()
	rep.Visited = len(snaps)
	for _, it := range rep.Items {
		switch {
		case it.Err != "":
			rep.Errors++
		case it.Action == ActionCompleted || it.Action == ActionResumed:
			rep.Completed++
		case it.Action == ActionInFlight:
			rep.InFlight++
		}
	}
	return rep, nil
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// markComplete tells every cached view of batchID that it is complete.
func (c *cache) markComplete(batchID string) {
	prefix := docid.Encode(batchID) + "\x00"
	c.mu.Lock()
	var ms []*meta
	// One key per mode (as meta builds them); matching by prefix alone would
	// also take batch ids that extend this one with "\x00".
	for _, mode := range []Mode{ModeLegacy, ModeDualArrayReads, ModeDualSubReads, ModeSubOnly} {
		if m, ok := c.m[prefix+mode.String()]; ok {
			ms = append(ms, m)
		}
	}
	c.mu.Unlock()
	for _, m := range ms {
		select {
		case <-m.ready:
			if m.err == nil {
				m.setComplete()
			}
		default:
		}
	}
}

// String summarises the report for the sweep's log line.
func (r SweepReport) String() string {
	return fmt.Sprintf("visited=%d completed=%d in_flight=%d errors=%d", r.Visited, r.Completed, r.InFlight, r.Errors)
}

// ForSweep adapts a Tracker to the scheduled sweep's batch pass, whose
// interface returns the report as a fmt.Stringer.
type ForSweep struct{ T *Tracker }

// Sweep runs Tracker.Sweep.
func (s ForSweep) Sweep(ctx context.Context, lookBack time.Duration, max int) (fmt.Stringer, error) {
	r, err := s.T.Sweep(ctx, lookBack, max)
	return r, err
}
