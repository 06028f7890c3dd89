package batch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/effect"
)

// mergeEvery is the least time between two merges into one batch's capped
// array, whoever makes them: Firestore sustains about one write per second
// per document. The server's clock measures it (array_merged_at is a
// server timestamp, compared with a read's time); each instance also keeps
// itself from trying sooner by its own clock, which is a rate limit, not a
// rule, so it is the real one.
const mergeEvery = time.Second

// mergeLag keeps a merge off the newest completions. A completion's
// recorded_at is the time the store took its request, which precedes the
// commit that makes it visible, and concurrent commits become visible out
// of that order (milliseconds on the emulator): a merge that moved its
// watermark to the newest stamp it saw could pass over one committed a
// moment later with an earlier stamp. Completions younger than this wait
// for the next merge.
const mergeLag = 2 * time.Second

// mergePage bounds one query of the completions a merge reads, and
// mergePages the queries of one merge: players already in the array
// (written there by dual writes or the running coordinator) are read and
// skipped.
const (
	mergePage  = 500
	mergePages = 20
)

// arrayMerge is what one instance knows of a batch's capped array.
type arrayMerge struct {
	mu        sync.Mutex
	full      bool      // the array reached its cap: nothing more goes in
	busy      bool      // this instance is merging
	notBefore time.Time // no merge from this instance before (real clock)
}

// mergeIfDue brings the capped legacy array up to date from the request
// path, in dual-write-with-subcollection-reads mode, when this instance may
// take the batch's merge window: one merge at a time per instance, and at
// most one merge per second per batch across all of them. Otherwise it
// returns at once. The array is derived from the completions themselves,
// so nothing is lost when a merge is skipped, fails or its instance dies:
// a later request, the batch's completion or the sweep brings it up to
// date.
func (t *Tracker) mergeIfDue(ctx context.Context, m *meta) {
	a := &m.merge
	a.mu.Lock()
	if a.full || a.busy || time.Now().Before(a.notBefore) {
		a.mu.Unlock()
		return
	}
	a.busy, a.notBefore = true, time.Now().Add(mergeEvery)
	a.mu.Unlock()
	r, err := t.merge(ctx, m.batchID)
	a.mu.Lock()
	a.busy, a.full = false, a.full || r.full
	if r.wait > 0 {
		a.notBefore = time.Now().Add(r.wait)
	}
	a.mu.Unlock()
	if err != nil {
		t.Metrics.Inc("batch.array_merge_failed")
		t.Log.WarnContext(ctx, "merging completions into the capped array failed; a later merge or the sweep does it", "error", err.Error())
	}
}

// mergeResult is what one merge did.
type mergeResult struct {
	added int
	full  bool          // the array is at its cap
	more  bool          // completions remain past this merge's pages
	wait  time.Duration // the batch's merge window opens after this
}

// merge adds to the array the completions recorded since its watermark,
// in one write conditional on the batch being unchanged since it was read
// and on the last merge, by anyone, being mergeEvery old by the server's
// clock. The same write moves the watermark and counts the added players
// in array_merged (all have completion documents, which the exact count
// relies on).
func (t *Tracker) merge(ctx context.Context, batchID string) (mergeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	ref := t.batchRef(batchID)
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		return mergeResult{full: true}, nil // deleted: nothing to keep up to date
	}
	if err != nil {
		return mergeResult{}, fmt.Errorf("read batch: %w", err)
	}
	st := decodeState(snap)
	if due := st.arrayMergedAt.Add(mergeEvery); snap.ReadTime.Before(due) {
		return mergeResult{wait: due.Sub(snap.ReadTime) + jitter()}, nil
	}
	ups, effs, r, err := t.catchUp(ctx, batchID, st, snap.ReadTime.Add(-mergeLag))
	if err != nil || len(ups) == 0 {
		return r, err
	}
	made, err := t.Effects.Decide(ctx, []effect.Write{{Ref: ref, Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(st.updateTime)}}},
		effs, nil)
	if errors.Is(err, effect.ErrConflict) {
		return mergeResult{wait: jitter()}, nil // written meanwhile: read it again
	}
	if err != nil {
		return mergeResult{}, fmt.Errorf("merge into the array: %w", err)
	}
	t.Metrics.Inc("batch.array_merges")
	t.Effects.Perform(ctx, made)
	return r, nil
}

// catchUp returns the updates that bring the capped array up to date with
// the completions recorded (by server time) since its watermark and up to
// cutoff, and the cap alert when the array fills before they are all in.
// It reads the completions in pages until they run out or the array is
// full.
func (t *Tracker) catchUp(ctx context.Context, batchID string, st *state, cutoff time.Time) ([]firestore.Update, []effect.Effect, mergeResult, error) {
	if st.arrayFull {
		return nil, nil, mergeResult{full: true}, nil
	}
	in := make(map[string]bool, len(st.array))
	for _, p := range st.array {
		in[p] = true
	}
	room := t.Config.Batch.ArrayCap - len(st.array)
	wm, wmID := st.arrayWatermark, st.arrayWatermarkID
	var add []string
	var r mergeResult
	base := t.batchRef(batchID).Collection(CompletionsSub).Where(FieldRecordedAt, "<=", cutoff).
		OrderBy(FieldRecordedAt, firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc)
	for pages := 0; ; pages++ {
		q := base
		if !wm.IsZero() {
			q = q.StartAfter(wm, wmID)
		}
		it := q.Limit(mergePage).Documents(ctx)
		n := 0
		for {
			snap, err := it.Next()
			if errors.Is(err, iterator.Done) {
				break
			}
			if err != nil {
				it.Stop()
				return nil, nil, mergeResult{}, fmt.Errorf("read completions since the array's watermark: %w", err)
			}
			n++
			p, _ := snap.Data()[FieldPlayer].(string)
			at, _ := snap.Data()[FieldRecordedAt].(time.Time)
			if !in[p] {
				if room == 0 {
					r.full = true
					break
				}
				in[p] = true
				add = append(add, p)
				room--
			}
			wm, wmID = at, snap.Ref.ID
		}
		it.Stop()
		if r.full || n < mergePage {
			break
		}
		if pages+1 == mergePages {
			r.more = true // enough for one write; the next merge goes on
			break
		}
	}
	var ups []firestore.Update
	var effs []effect.Effect
	if len(add) > 0 {
		ups = append(ups, firestore.Update{Path: FieldArray, Value: firestore.ArrayUnion(anyList(add)...)},
			firestore.Update{Path: FieldArrayMerged, Value: firestore.Increment(len(add))},
			firestore.Update{Path: FieldArrayMergedAt, Value: firestore.ServerTimestamp})
	}
	if !wm.Equal(st.arrayWatermark) || wmID != st.arrayWatermarkID {
		ups = append(ups, firestore.Update{Path: FieldArrayWatermark, Value: wm}, firestore.Update{Path: FieldArrayWatermarkID, Value: wmID})
	}
	if r.full {
		ups = append(ups, firestore.Update{Path: FieldArrayFull, Value: true})
		effs = append(effs, alert.Raise(alert.Alert{
			Key: "batch:" + batchID + ":array_cap", Severity: alert.Warning,
			Title:    fmt.Sprintf("prediction batch %s: completed_players capped at %d", batchID, t.Config.Batch.ArrayCap),
			GameDate: st.gameDate, Reason: "array_capped", Expected: int(st.expected),
			Detail: "completions are counted from the completions subcollection; readers of the legacy array see at most the cap",
		}, st.incarnation))
	}
	r.added = len(add)
	return ups, effs, r, nil
}

// mergeAll brings the array of batchID up to date for the sweep, waiting
// out the batch's merge window (at most a second) as often as it must.
func (t *Tracker) mergeAll(ctx context.Context, batchID string) error {
	for range 10 {
		r, err := t.merge(ctx, batchID)
		if err != nil {
			return err
		}
		switch {
		case r.wait > 0:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(r.wait):
			}
		case !r.more:
			return nil
		}
	}
	return nil
}

// jitter spreads instances that found the document busy.
func jitter() time.Duration { return time.Duration(50+rand.IntN(100)) * time.Millisecond }
