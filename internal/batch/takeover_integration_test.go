package batch_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/legacytest"
)

// The running coordinator's batch (legacytest batch_legacy: 800 players in
// completed_players, no subcollection, 850 expected) taken over mid-batch:
// redeliveries of players it recorded count nothing, the 50 others
// complete it once, with 850 distinct players, in every migration mode.
func TestLegacyBatchTakeOver(t *testing.T) {
	const id = "batch_2026-01-19_1768860000"
	for _, mode := range []batch.Mode{batch.ModeLegacy, batch.ModeDualArrayReads, batch.ModeDualSubReads, batch.ModeSubOnly} {
		t.Run(mode.String(), func(t *testing.T) {
			e := env(t, mode, nil, nil)
			sub := e.Sub(topic)
			legacytest.Put(t, e.App.FS, batch.Collection+"/"+id, "batch_legacy")
			msg := func(p string) map[string]any {
				return map[string]any{"player_lookup": p, "game_date": "2026-01-19", "predictions_generated": preds(p),
					"batch_id": id, "timestamp": apptest.Start.Format(time.RFC3339), "worker_instance": "w1"}
			}
			// Completions the coordinator already recorded, redelivered to
			// phasegate after the switch, twice each.
			for i := range 20 {
				p := player(i * 40)
				for range 2 {
					if c := e.Deliver(entry, "old-"+p, msg(p)); c >= 300 {
						t.Fatalf("%s: status %d", p, c)
					}
				}
			}
			if got := sub.Drain(t, 500*time.Millisecond); len(got) != 0 {
				t.Fatalf("completed early: %+v", completions(t, got))
			}
			for i := 800; i < 850; i++ {
				p := player(i)
				if c := e.Deliver(entry, "new-"+p, msg(p)); c >= 300 {
					t.Fatalf("%s: status %d", p, c)
				}
			}
			// A late redelivery and a sweep change nothing.
			if c := e.Deliver(entry, "new-"+player(849), msg(player(849))); c >= 300 {
				t.Fatalf("status %d", c)
			}
			if c := e.PushOnce("Sweep", "sweep-1", map[string]any{}); c >= 300 {
				t.Fatalf("sweep: status %d", c)
			}
			got := completions(t, sub.Drain(t, 2*time.Second))
			if len(got) != 1 {
				t.Fatalf("got %d batch completions, want 1: %+v", len(got), got)
			}
			m := got[0]
			if m.Status != batch.StatusSuccess || m.Metadata.CompletedPlayers != 850 || m.Metadata.ExpectedPlayers != 850 ||
				m.CorrelationID != "p5-run-0119" || m.GameDate != "2026-01-19" || m.ExecutionID != id {
				t.Fatalf("batch completion = %+v", m)
			}
			doc := batchDoc(t, e, id)
			if doc["is_complete"] != true {
				t.Fatalf("is_complete = %v", doc["is_complete"])
			}
			checkClean(t, e, id)
		})
	}
}

// A batch the coordinator already completed is never announced again, and
// while PHASEGATE_PHASES leaves prediction_batch to the coordinator,
// phasegate records completions but completes nothing.
func TestLegacyBatchOwnership(t *testing.T) {
	const id = "batch_2026-01-19_1768860000"
	for _, tc := range []struct {
		name     string
		complete bool
		owned    []string
	}{
		{"completed by the coordinator", true, nil},
		{"batches not owned", false, []string{"phase2_to_phase3", "phase3_to_phase4", "phase4_to_phase5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env(t, batch.ModeDualSubReads, nil, func(c *config.Config) { c.Owned = tc.owned })
			sub := e.Sub(topic)
			doc := legacytest.Doc(t, "batch_legacy")
			if tc.complete {
				doc["is_complete"], doc["completion_time"] = true, apptest.Start
			}
			if _, err := e.App.FS.Doc(batch.Collection+"/"+id).Set(t.Context(), doc); err != nil {
				t.Fatal(err)
			}
			for i := 800; i < 850; i++ {
				p := player(i)
				m := map[string]any{"player_lookup": p, "game_date": "2026-01-19", "predictions_generated": 1, "batch_id": id}
				if c := e.Deliver(entry, fmt.Sprint("n-", i), m); c >= 300 {
					t.Fatalf("%s: status %d", p, c)
				}
			}
			e.Clock.Advance(time.Hour) // over-age: a sweep would complete an owned batch
			if c := e.PushOnce("Sweep", "sweep-1", map[string]any{}); c >= 300 {
				t.Fatalf("sweep: status %d", c)
			}
			if got := sub.Drain(t, time.Second); len(got) != 0 {
				t.Fatalf("announced: %+v", completions(t, got))
			}
		})
	}
}
