package status_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

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

// seasonWorld fills the n game dates up to 2026-01-19 as a season leaves
// them: k completions at each of the three gates, and a batch of players
// that all completed, but on the last date one short (a batch still open).
// It returns the Status handler and the RPC counter.
func seasonWorld(t *testing.T, n, k, players int) (http.Handler, *apptest.RPCs, []string) {
	t.Helper()
	count, rpcs := apptest.CountRPCs(t)
	e := apptest.New(t, count)
	var dates []string
	for i := range n {
		dates = append(dates, time.Date(2026, 1, 19-i, 0, 0, 0, 0, time.UTC).Format("2006-01-02"))
	}
	sem := make(chan struct{}, 6) // the emulator takes a few writers at once
	var wg sync.WaitGroup
	for i, d := range dates {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for _, p := range e.Cfg.Phases {
				for _, name := range p.Expected[:k] {
					e.Deliver(p.EntryPoint, p.Name+name+d, apptest.Completion(name, d, "success"))
				}
			}
			id := "batch_" + d
			createBatch(t, e, id, d, players, nil)
			done := players
			if i == 0 {
				done--
			}
			completeWorkers(t, e, id, d, 0, done)
		})
	}
	wg.Wait()
	h, _ := e.App.Handler("Status")
	return h, rpcs, dates
}

// TestSeasonReadCost prints what a range costs in Firestore — one query per
// gate collection, one for the batches, one BatchGet of the open batches'
// counter shards — for 7, 31 and 62 dates, and for 31 dates with twice the
// completions and players, and checks that the reads follow the dates
// alone.
func TestSeasonReadCost(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 93 dates")
	}
	type cost struct {
		rpcs, docs int
		methods    map[string]int
	}
	measure := func(h http.Handler, rpcs *apptest.RPCs, from, to string) cost {
		rpcs.Take()
		if w := get(t, h, "/Status?from="+from+"&to="+to, ""); w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		n, m, d := rpcs.Take()
		return cost{n, d, m}
	}
	h, rpcs, dates := seasonWorld(t, 62, 2, 3)
	got := map[string]cost{}
	for _, n := range []int{7, 31, 62} {
		got[fmt.Sprint(n)] = measure(h, rpcs, dates[n-1], dates[0])
	}
	h2, rpcs2, dates2 := seasonWorld(t, 31, 4, 6)
	got["31×2"] = measure(h2, rpcs2, dates2[30], dates2[0])
	for _, k := range []string{"7", "31", "62", "31×2"} {
		c := got[k]
		t.Logf("%4s dates: %d RPCs %v, %d documents read", k, c.rpcs, c.methods, c.docs)
	}
	// One document per gate and date that has one, one per batch, and the
	// open batch's counter shards (at most the 16 a small batch has).
	const shards = 16
	for _, n := range []int{7, 31, 62} {
		c := got[fmt.Sprint(n)]
		if c.rpcs != 5 || c.methods["/google.firestore.v1.Firestore/RunQuery"] != 4 {
			t.Errorf("%d dates: %d RPCs %v; want 4 queries and one BatchGet", n, c.rpcs, c.methods)
		}
		if c.docs < 4*n || c.docs > 4*n+shards {
			t.Errorf("%d dates: %d documents; want %d to %d", n, c.docs, 4*n, 4*n+shards)
		}
	}
	if a, b := got["31"], got["31×2"]; b.rpcs != a.rpcs || b.docs > a.docs+shards || b.docs < a.docs {
		t.Errorf("twice the completions and players: %d RPCs, %d documents; with the first: %d, %d", b.rpcs, b.docs, a.rpcs, a.docs)
	}
}
