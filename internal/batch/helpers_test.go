package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	entry    = "PredictionCompletions"
	topic    = "nba-phase5-predictions-complete"
	gameDate = "2026-01-20"
)

// flags sets the three migration flags.
func flags(sub, dual, reads bool) func(*config.Config) {
	f := func(b bool) config.Flag {
		if b {
			return config.On
		}
		return config.Off
	}
	return func(c *config.Config) {
		c.Batch.EnableSubcollection, c.Batch.DualWrite, c.Batch.UseSubcollectionReads = f(sub), f(dual), f(reads)
	}
}

var modeFlags = map[batch.Mode]func(*config.Config){
	batch.ModeLegacy:         flags(false, true, true),
	batch.ModeDualArrayReads: flags(true, true, false),
	batch.ModeDualSubReads:   flags(true, true, true),
	batch.ModeSubOnly:        flags(true, false, true),
}

// env builds an App in mode; with peer set it shares peer's project, as a
// second revision of the service would after a flag change.
func env(t testing.TB, mode batch.Mode, peer *apptest.Env, more func(*config.Config), opts ...apptest.Option) *apptest.Env {
	t.Helper()
	opts = append(opts, apptest.WithConfig(func(c *config.Config) {
		if peer != nil {
			c.ProjectID = peer.Project
		}
		modeFlags[mode](c)
		if more != nil {
			more(c)
		}
	}))
	return apptest.New(t, opts...)
}

// createBatch writes a batch document the way the running coordinator does.
func createBatch(t testing.TB, e *apptest.Env, id string, expected int) {
	t.Helper()
	now := e.Clock.Now()
	_, err := e.App.FS.Collection(batch.Collection).Doc(docid.Encode(id)).Create(context.Background(), map[string]any{
		"batch_id": id, "game_date": gameDate, "expected_players": expected, "completed_players": []string{},
		"total_predictions": 0, "is_complete": false, "start_time": now, "updated_at": now, "correlation_id": "corr-" + id,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func player(i int) string { return fmt.Sprintf("player%04d", i) }

// preds is a player's predictions_generated: stable, so a re-publish
// carries the same count.
func preds(p string) int { return 1 + len(p)%7 }

func completion(batchID, p string) map[string]any {
	return map[string]any{"player_lookup": p, "game_date": gameDate, "predictions_generated": preds(p),
		"batch_id": batchID, "timestamp": apptest.Start.Format(time.RFC3339), "worker_instance": "w1"}
}

// delivery is one push: a message id and a player.
type delivery struct{ id, player string }

// deliver sends each player's completion once (message id "m-<player>"),
// with senders goroutines, and fails the test on any final status other
// than 2xx.
func deliver(t testing.TB, e *apptest.Env, batchID string, players []string, senders int) {
	t.Helper()
	ds := make([]delivery, len(players))
	for i, p := range players {
		ds[i] = delivery{"m-" + p, p}
	}
	send(t, e, batchID, ds, senders)
}

func send(t testing.TB, e *apptest.Env, batchID string, ds []delivery, senders int) {
	t.Helper()
	var wg sync.WaitGroup
	ch := make(chan delivery)
	var mu sync.Mutex
	var bad []string
	for range senders {
		wg.Go(func() {
			for d := range ch {
				if c := e.Deliver(entry, d.id, completion(batchID, d.player)); c >= 300 {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: %d", d.player, c))
					mu.Unlock()
				}
			}
		})
	}
	for _, d := range ds {
		ch <- d
	}
	close(ch)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d deliveries failed: %v", len(bad), bad[:min(5, len(bad))])
	}
}

func completions(t testing.TB, msgs []*pubsubpb.PubsubMessage) []batch.Message {
	t.Helper()
	var out []batch.Message
	for _, m := range msgs {
		var b batch.Message
		if err := json.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("batch completion is not JSON: %v", err)
		}
		if m.Attributes["batch_id"] != b.Metadata.BatchID || m.Attributes["game_date"] != b.GameDate {
			t.Fatalf("attributes %v disagree with body %+v", m.Attributes, b)
		}
		out = append(out, b)
	}
	return out
}

// one asserts exactly one batch completion with the given counts.
func one(t testing.TB, got []batch.Message, batchID, status string, players int, predictions int) batch.Message {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("got %d batch completions, want 1: %+v", len(got), got)
	}
	m := got[0]
	md := m.Metadata
	if m.ProcessorName != "PredictionCoordinator" || m.Phase != "phase_5_predictions" || m.ExecutionID != batchID ||
		m.CorrelationID != "corr-"+batchID || m.GameDate != gameDate || m.Status != status ||
		md.BatchID != batchID || md.CompletedPlayers != int64(players) || (predictions >= 0 && md.TotalPredictions != int64(predictions)) ||
		md.CompletedPredictions != md.TotalPredictions {
		t.Fatalf("batch completion = %+v, want %s with %d players, %d predictions", m, status, players, predictions)
	}
	return m
}

func sumPreds(players []string) int {
	seen := map[string]bool{}
	n := 0
	for _, p := range players {
		if !seen[p] {
			seen[p] = true
			n += preds(p)
		}
	}
	return n
}

func players(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, player(i))
	}
	return out
}

// batchDoc reads the batch document.
func batchDoc(t testing.TB, e *apptest.Env, id string) map[string]any {
	t.Helper()
	return e.Doc(batch.Collection + "/" + docid.Encode(id))
}

// checkClean runs `batch check` on one batch and fails on any mismatch.
func checkClean(t testing.TB, e *apptest.Env, id string) {
	t.Helper()
	rep, err := e.App.Batches.Check(context.Background(), batch.CheckOptions{BatchID: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Mismatches) > 0 {
		var b strings.Builder
		for _, m := range rep.Mismatches {
			fmt.Fprintf(&b, "\n  %s %s: %s", m.BatchID, m.Kind, m.Detail)
		}
		t.Fatalf("batch check found mismatches:%s", b.String())
	}
}

var mergeAll = firestore.MergeAll
