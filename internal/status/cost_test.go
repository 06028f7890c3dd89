package status_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/phasegate/phasegate/internal/apptest"
)

// TestStatusPageReadCost prints what the page of the night in progress costs
// in Firestore — the gates of both dates in one batched read, one query per
// date for its batches, then each batch's status — and checks that it does
// not grow with the batch.
func TestStatusPageReadCost(t *testing.T) {
	count, rpcs := apptest.CountRPCs(t)
	e := apptest.New(t, count)
	for _, p := range []string{"NbacScheduleProcessor", "BdlPlayerBoxscoresProcessor"} {
		e.Deliver("Phase2To3", p, apptest.Completion(p, "2026-01-19", "success"))
	}
	const id, players = "batch_2026-01-19_1", 40 // enough to touch all 16 counter shards
	now := e.Clock.Now()
	if _, err := e.App.FS.Collection("prediction_batches").Doc(id).Create(context.Background(), map[string]any{
		"batch_id": id, "game_date": "2026-01-19", "expected_players": players * 2, "is_complete": false,
		"start_time": now, "updated_at": now, "correlation_id": "c"}); err != nil {
		t.Fatal(err)
	}
	h, _ := e.App.Handler("Status")
	complete := func(from, to int) {
		for i := from; i < to; i++ {
			e.Deliver("PredictionCompletions", fmt.Sprint("w", i), map[string]any{"player_lookup": fmt.Sprint("p", i),
				"game_date": "2026-01-19", "batch_id": id, "predictions_generated": 5})
		}
	}
	page := func() (int, map[string]int, int) {
		rpcs.Take()
		if w := get(t, h, "/Status", "text/html"); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		return rpcs.Take()
	}
	complete(0, players)
	total, methods, docs := page()
	t.Logf("the page of today and yesterday, one batch of %d completions: %d RPCs %v, %d documents read", players, total, methods, docs)
	complete(players, 2*players)
	// An instance that has not seen the batch reads its document once more
	// first (its shard count), so the second page may read one fewer.
	if _, _, more := page(); more > docs {
		t.Errorf("with %d completions the page read %d documents, with %d %d", players, docs, 2*players, more)
	}
	if n := methods["/google.firestore.v1.Firestore/BatchGetDocuments"]; n < 1 {
		t.Errorf("gates read with %d BatchGetDocuments", n)
	}
	if n := methods["/google.firestore.v1.Firestore/RunQuery"]; n < 2 {
		t.Errorf("%d queries: want one per date for its batches", n)
	}
}
