package batch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/logging"
)

// mergeEvery is the least time between two merges into one batch's capped
// array, whichever instances make them: Firestore sustains about one write
// per second per document.
const mergeEvery = time.Second

// mergeGiveUp is how many failed attempts in a row drop an instance's
// pending players: the array is a courtesy to older readers, and nothing
// counts from it in the mode that merges.
const mergeGiveUp = 10

// arrayMerge holds the players this instance recorded in dual-write-with-
// subcollection-reads mode until its merge adds them to the capped array.
type arrayMerge struct {
	mu      sync.Mutex
	pending []string
	running bool // a merge goroutine owns pending's head
	full    bool // the array reached the cap: nothing more goes in
}

// queueArray hands a recorded player to the batch's merge and returns at
// once: the capped array is written off the request path.
func (t *Tracker) queueArray(m *meta, player string) {
	a := &m.merge
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.full {
		return
	}
	a.pending = append(a.pending, player)
	if a.running || t.stopping.Err() != nil {
		return
	}
	a.running = true
	t.merges.Add(1)
	go t.runMerge(m)
}

// runMerge merges the instance's pending players into the array until none
// are left, waiting between merges as the batch document says.
func (t *Tracker) runMerge(m *meta) {
	defer t.merges.Done()
	a := &m.merge
	ctx := logging.WithLabels(t.stopping, "batch_id", m.batchID, "game_date", m.gameDate, "correlation_id", m.corrID)
	failures := 0
	for {
		a.mu.Lock()
		if len(a.pending) == 0 || a.full || ctx.Err() != nil {
			a.pending, a.running = nil, false
			a.mu.Unlock()
			return
		}
		players := append([]string(nil), a.pending...)
		a.mu.Unlock()

		wait, done, err := t.mergeArray(ctx, m, players)
		switch {
		case err != nil:
			failures++
			t.Log.WarnContext(ctx, "merging players into the capped array failed; the subcollection has them", "error", err.Error(), "attempt", failures)
			if failures >= mergeGiveUp {
				done = len(players)
			}
			wait = mergeEvery
		default:
			failures = 0
		}
		a.mu.Lock()
		a.pending = a.pending[done:]
		a.mu.Unlock()
		if wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}
}

// mergeArray adds players to the array in one write to the batch document,
// conditionally on the document being unchanged since it was read and on
// the last merge (by any instance) being at least mergeEvery old by the
// server's clock — so merges into one batch document are at most about one
// per second however many instances record its completions. The same write
// counts the added players in array_merged, so the exact count knows
// without a lookup that every such entry has a completion document. The
// array never passes the cap: a player who finds it full is left out, with
// one warning alert.
//
// It returns how long to wait before the next attempt and how many of
// players (a prefix) are dealt with: merged, already there, or left out.
func (t *Tracker) mergeArray(ctx context.Context, m *meta, players []string) (time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	ref := t.batchRef(m.batchID)
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		return 0, len(players), nil // deleted: nothing to keep up to date
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read batch: %w", err)
	}
	st := decodeState(snap)
	if due := st.arrayMergedAt.Add(mergeEvery); snap.ReadTime.Before(due) {
		return due.Sub(snap.ReadTime) + jitter(), 0, nil
	}
	in := make(map[string]bool, len(st.array))
	for _, p := range st.array {
		in[p] = true
	}
	room := t.Config.Batch.ArrayCap - len(st.array)
	var add []string
	left := 0
	for _, p := range players {
		switch {
		case in[p]:
		case room > 0:
			in[p] = true
			add = append(add, p)
			room--
		default:
			left++
		}
	}
	if len(add) > 0 {
		_, err = t.commit(ctx, update(ref.Path, map[string]*pb.Value{}, updatedAt(snap.UpdateTime),
			union(FieldArray, add...), inc(FieldArrayMerged, int64(len(add))), serverTime(FieldArrayMergedAt)))
		switch status.Code(err) {
		case codes.OK:
			t.Metrics.Inc("batch.array_merges")
		case codes.FailedPrecondition, codes.Aborted:
			return jitter(), 0, nil // written meanwhile: read it again
		default:
			return 0, 0, fmt.Errorf("merge into the array: %w", err)
		}
	}
	if left > 0 {
		m.merge.mu.Lock()
		m.merge.full = true
		m.merge.mu.Unlock()
		t.raiseOnce(ctx, m, &m.capAlerted, alert.Alert{
			Key: "batch:" + m.batchID + ":array_cap", Severity: alert.Warning,
			Title:    fmt.Sprintf("prediction batch %s: completed_players capped at %d", m.batchID, t.Config.Batch.ArrayCap),
			GameDate: m.gameDate, Reason: "array_capped", Expected: int(m.expected),
			Detail: "completions are counted from the completions subcollection; readers of the legacy array see at most the cap",
		})
	}
	return mergeEvery, len(players), nil
}

// jitter spreads instances that found the document busy.
func jitter() time.Duration { return time.Duration(50+rand.IntN(100)) * time.Millisecond }

func serverTime(field string) *pb.DocumentTransform_FieldTransform {
	return &pb.DocumentTransform_FieldTransform{FieldPath: field,
		TransformType: &pb.DocumentTransform_FieldTransform_SetToServerValue{
			SetToServerValue: pb.DocumentTransform_FieldTransform_REQUEST_TIME}}
}
