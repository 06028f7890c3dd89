package batch_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/effect"
)

// 1,500 players, 10 % redelivered (same message id), 5 % re-published (same
// player, new message id), 32 senders at once: one completion, 1,500 players.
func TestRedeliveriesAndRepublishes(t *testing.T) {
	e := env(t, batch.ModeDualSubReads, nil, nil)
	sub := e.Sub(topic)
	const n = 1500
	createBatch(t, e, "big", n)
	ps := players(0, n)
	var ds []delivery
	for _, p := range ps {
		ds = append(ds, delivery{"m-" + p, p})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, i := range rng.Perm(n)[:n/10] {
		ds = append(ds, delivery{"m-" + ps[i], ps[i]})
	}
	for _, i := range rng.Perm(n)[:n/20] {
		ds = append(ds, delivery{"r-" + ps[i], ps[i]})
	}
	rng.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	send(t, e, "big", ds, 32)
	one(t, completions(t, sub.Drain(t, 2*time.Second)), "big", "success", n, sumPreds(ps))
	d := batchDoc(t, e, "big")
	if d["completed_count"] != int64(n) || d["is_complete"] != true || d["total_predictions"] != int64(sumPreds(ps)) {
		t.Fatalf("batch document: completed_count %v is_complete %v total_predictions %v",
			d["completed_count"], d["is_complete"], d["total_predictions"])
	}
	if arr, _ := d["completed_players"].([]any); len(arr) > e.Cfg.Batch.ArrayCap {
		t.Fatalf("capped array holds %d entries", len(arr))
	}
	checkClean(t, e, "big")
	t.Logf("metrics: %v", e.Metrics.Snapshot())
}

// A completion after the batch completed publishes nothing and is not
// counted.
func TestLateCompletion(t *testing.T) {
	for _, mode := range []batch.Mode{batch.ModeLegacy, batch.ModeDualSubReads} {
		t.Run(mode.String(), func(t *testing.T) {
			e := env(t, mode, nil, nil)
			sub := e.Sub(topic)
			createBatch(t, e, "b", 10)
			deliver(t, e, "b", players(0, 10), 4)
			one(t, completions(t, sub.Drain(t, time.Second)), "b", "success", 10, -1)
			// A new player, a redelivery and a re-publish, on this instance and
			// on a fresh one that never saw the batch.
			fresh := env(t, mode, e, nil)
			for _, x := range []struct {
				e  *apptest.Env
				id string
				p  string
			}{{e, "late-1", player(10)}, {e, "m-" + player(3), player(3)}, {fresh, "late-2", player(11)}, {fresh, "r-3", player(3)}} {
				if c := x.e.Deliver(entry, x.id, completion("b", x.p)); c >= 300 {
					t.Fatalf("late %s: status %d", x.p, c)
				}
			}
			if more := sub.Drain(t, time.Second); len(more) != 0 {
				t.Fatalf("late completions published %d more messages", len(more))
			}
			if d := batchDoc(t, e, "b"); d["completed_count"] != int64(10) {
				t.Fatalf("completed_count = %v", d["completed_count"])
			}
			checkClean(t, e, "b")
		})
	}
}

// Every mode, and batches that change mode halfway (a flag flipped and a
// new revision took over), count distinct players exactly. Players of the
// first half are re-published in the second, so a player can sit in the
// array and in the subcollection at once.
func TestModesAndTransitions(t *testing.T) {
	L, DA, DS, S := batch.ModeLegacy, batch.ModeDualArrayReads, batch.ModeDualSubReads, batch.ModeSubOnly
	cases := []struct{ first, second batch.Mode }{
		{L, L}, {DA, DA}, {DS, DS}, {S, S},
		{L, DA}, {L, DS}, {L, S}, {DA, DS}, {DS, S}, {DA, S},
		{S, DS}, {DS, DA}, {DS, L}, {S, L}, {DA, L},
	}
	for _, c := range cases {
		name := c.first.String() + "_then_" + c.second.String()
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const n = 80
			first := env(t, c.first, nil, nil)
			sub := first.Sub(topic)
			createBatch(t, first, "tb", n)
			all := players(0, n)
			deliver(t, first, "tb", all[:n/2], 8)
			second := env(t, c.second, first, nil)
			// The second half, plus re-publishes of ten first-half players
			// under new message ids.
			var ds []delivery
			for _, p := range all[n/2:] {
				ds = append(ds, delivery{"m-" + p, p})
			}
			for _, p := range all[:10] {
				ds = append(ds, delivery{"again-" + p, p})
			}
			send(t, second, "tb", ds, 8)
			one(t, completions(t, sub.Drain(t, 2*time.Second)), "tb", "success", n, sumPreds(all))
			if d := batchDoc(t, first, "tb"); d["completed_count"] != int64(n) {
				t.Fatalf("completed_count = %v", d["completed_count"])
			}
			checkClean(t, second, "tb")
		})
	}
}

// The capped array never passes the cap and its cap is alerted once; the
// uncapped array of dual writes with array reads is alerted once when it
// passes the cap.
func TestArrayCaps(t *testing.T) {
	for _, x := range []struct {
		mode     batch.Mode
		cap      int
		expected int
		alert    string
		maxArray int
	}{
		{batch.ModeDualSubReads, 40, 120, "capped at 40", 40},
		{batch.ModeDualSubReads, 900, 450, "", 450}, // a usual game day fits: everyone is listed
		{batch.ModeDualArrayReads, 40, 60, "passed 40", 60},
	} {
		t.Run(fmt.Sprintf("%s_%d_of_%d", x.mode, x.expected, x.cap), func(t *testing.T) {
			e := env(t, x.mode, nil, func(c *config.Config) { c.Batch.ArrayCap = x.cap })
			sub := e.Sub(topic)
			createBatch(t, e, "cap", x.expected)
			deliver(t, e, "cap", players(0, x.expected), 8)
			one(t, completions(t, sub.Drain(t, time.Second)), "cap", "success", x.expected, -1)
			// The capped array is merged in the background: wait for it to
			// settle (a full array, or everyone in and the alert sent).
			var arr []any
			var warnings []string
			for deadline := time.Now().Add(30 * time.Second); ; {
				arr, _ = batchDoc(t, e, "cap")["completed_players"].([]any)
				warnings = warnings[:0]
				for _, p := range e.Slack.Delivered() {
					if p.Path == "/warning" {
						warnings = append(warnings, p.Text)
					}
				}
				settled := len(arr) == min(x.expected, x.cap) && (x.alert == "") == (len(warnings) == 0)
				if settled || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(arr) > x.maxArray || (x.expected <= x.cap && len(arr) != x.expected) {
				t.Fatalf("array holds %d entries, want at most %d", len(arr), x.maxArray)
			}
			if x.alert == "" && len(warnings) != 0 || x.alert != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], x.alert)) {
				t.Fatalf("warnings = %q, want one containing %q", warnings, x.alert)
			}
			checkClean(t, e, "cap")
		})
	}
}

// Player ids that cannot be document ids as they are count exactly and are
// stored raw.
func TestOddPlayerIDs(t *testing.T) {
	odd := []string{"lebron", "lebron-james", "j.r.smith", "a/b", "a%2Fb", "..", ".", "__x__", "__", "~tilde", "~" + "bGVicm9u",
		"o'neal", "nikola jokić", "八村塁", "a\u0000b", strings.Repeat("x", 1600), strings.Repeat("x", 1601),
		strings.Repeat("é", 800)}
	for _, mode := range []batch.Mode{batch.ModeLegacy, batch.ModeDualArrayReads, batch.ModeDualSubReads, batch.ModeSubOnly} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			e := env(t, mode, nil, nil)
			sub := e.Sub(topic)
			id := "batch/with.odd__id__"
			createBatch(t, e, id, len(odd))
			deliver(t, e, id, odd, 4)
			one(t, completions(t, sub.Drain(t, time.Second)), id, "success", len(odd), sumPreds(odd))
			if mode != batch.ModeLegacy {
				for _, p := range odd {
					d := e.Doc(batch.Collection + "/" + docid.Encode(id) + "/completions/" + docid.Encode(p))
					if d == nil || d["player_lookup"] != p || d["predictions_count"] != int64(preds(p)) {
						t.Fatalf("completion of %q: %v", p[:min(len(p), 20)], d)
					}
				}
			}
			if mode == batch.ModeLegacy || mode == batch.ModeDualArrayReads {
				arr, _ := batchDoc(t, e, id)["completed_players"].([]any)
				got := map[any]bool{}
				for _, a := range arr {
					got[a] = true
				}
				for _, p := range odd {
					if !got[p] {
						t.Fatalf("array misses %q", p[:min(len(p), 20)])
					}
				}
			}
			checkClean(t, e, id)
		})
	}
}

// `batch migrate` copies a running-coordinator array into the
// subcollection and repairs drifted shards; a second run changes nothing.
// The batch then completes in subcollection-only mode with the exact count.
func TestMigrateTwice(t *testing.T) {
	e := env(t, batch.ModeSubOnly, nil, nil)
	sub := e.Sub(topic)
	ctx := context.Background()
	createBatch(t, e, "mig", 300)
	legacy := players(0, 200)
	ref := e.App.FS.Collection(batch.Collection).Doc("mig")
	if _, err := ref.Set(ctx, map[string]any{"completed_players": legacy, "total_predictions": sumPreds(legacy)}, mergeAll); err != nil {
		t.Fatal(err)
	}
	rep, err := e.App.Batches.Check(ctx, batch.CheckOptions{BatchID: "mig"})
	if err != nil || len(rep.Mismatches) != 1 || rep.Mismatches[0].Kind != batch.MismatchArrayNotInSub {
		t.Fatalf("check before migrating: %+v, %v", rep, err)
	}
	// Drift one shard, as a bug or a manual edit would.
	if _, err := ref.Collection("counter_shards").Doc("3").Set(ctx, map[string]any{"count": 7}, mergeAll); err != nil {
		t.Fatal(err)
	}
	var progress []int
	r1, err := e.App.Batches.Migrate(ctx, batch.MigrateOptions{BatchID: "mig", Progress: func(done, total int) {
		if total != 200 {
			t.Errorf("progress total %d", total)
		}
		progress = append(progress, done)
	}})
	if err != nil || r1 != (batch.MigrateReport{Batches: 1, Players: 200, Copied: 200, Present: 0, ShardsFixed: 1}) || len(progress) != 200 {
		t.Fatalf("first migrate: %+v, %v (%d progress calls)", r1, err, len(progress))
	}
	checkClean(t, e, "mig")
	r2, err := e.App.Batches.Migrate(ctx, batch.MigrateOptions{BatchID: "mig"})
	if err != nil || r2 != (batch.MigrateReport{Batches: 1, Players: 200, Copied: 0, Present: 200, ShardsFixed: 0}) {
		t.Fatalf("second migrate: %+v, %v", r2, err)
	}
	all := players(0, 300)
	deliver(t, e, "mig", append(all[150:], all[:10]...), 8)
	// The running coordinator's predictions have no per-player record: the
	// batch's own total carries them.
	one(t, completions(t, sub.Drain(t, time.Second)), "mig", "success", 300, sumPreds(all))
	checkClean(t, e, "mig")
	st, err := e.App.Batches.Status(ctx, "mig", batch.StatusOptions{CountDocuments: true})
	if err != nil || !st.Complete || st.Subcollection == nil || *st.Subcollection != 300 || st.Shards != 300 || st.Array != 200 || st.Distinct != 300 {
		t.Fatalf("status = %+v, %v", st, err)
	}
}

// The publish fails once: the 5xx's redelivery publishes exactly once.
func TestPublishFailsOnce(t *testing.T) {
	e := env(t, batch.ModeDualSubReads, nil, nil, apptest.FailPublishes(topic, 1))
	sub := e.Sub(topic)
	createBatch(t, e, "pf", 20)
	ps := players(0, 20)
	deliver(t, e, "pf", ps[:19], 4)
	last := completion("pf", ps[19])
	if c := e.PushOnce(entry, "m-last", last); c != 500 {
		t.Fatalf("first attempt with a failing publish: status %d, want 500", c)
	}
	if d := batchDoc(t, e, "pf"); d["completion_state"] != "claimed" || d["is_complete"] != false {
		t.Fatalf("after the failed publish: state %v complete %v", d["completion_state"], d["is_complete"])
	}
	if c := e.Deliver(entry, "m-last", last); c >= 300 {
		t.Fatalf("redelivery: status %d", c)
	}
	one(t, completions(t, sub.Drain(t, time.Second)), "pf", "success", 20, sumPreds(ps))
	checkClean(t, e, "pf")
}

// An instance dies right after the commit that completes the batch (before
// the publish): the redelivery, on another instance, is refused while the
// dead one's lease lives and publishes once it has expired; one that dies
// between the publish and the commit that records it repeats the same bytes
// at most once more; and the sweep finishes it when no redelivery comes.
func TestCrashedClaim(t *testing.T) {
	for _, x := range []struct {
		name    string
		skip    int // commits owing effects let through first
		fault   apptest.Fault
		copies  int
		bySweep bool
	}{
		{"after_claim", 0, apptest.DieAfter, 1, false},
		{"after_publish", 1, apptest.DieBefore, 2, false},
		{"after_claim_sweep", 0, apptest.DieAfter, 1, true},
	} {
		t.Run(x.name, func(t *testing.T) {
			f := apptest.NewFaults()
			e := env(t, batch.ModeDualSubReads, nil, nil, f.Option(t))
			sub := e.Sub(topic)
			createBatch(t, e, "cr", 12)
			ps := players(0, 12)
			deliver(t, e, "cr", ps[:11], 4)
			f.At(effect.Collection, x.skip, x.fault)
			last := completion("cr", ps[11])
			if c := e.PushOnce(entry, "m-last", last); c < 500 {
				t.Fatalf("crashing attempt: status %d", c)
			}
			if !f.Hit() {
				t.Fatal("the instance did not die")
			}
			e = e.On(e.Instance())
			if c := e.PushOnce(entry, "m-last", last); c != 500 {
				t.Fatalf("redelivery inside the lease: status %d, want 500", c)
			}
			e.Clock.Advance(e.Cfg.Gate.ClaimLease)
			if x.bySweep {
				rep, err := e.App.Batches.Sweep(context.Background(), 72*time.Hour, 10)
				if err != nil || rep.Completed != 1 {
					t.Fatalf("sweep: %+v, %v", rep, err)
				}
			} else if c := e.PushOnce(entry, "m-last", last); c >= 300 {
				t.Fatalf("redelivery after the lease: status %d", c)
			}
			got := completions(t, sub.Drain(t, time.Second))
			if len(got) != x.copies {
				t.Fatalf("got %d copies, want %d", len(got), x.copies)
			}
			for _, g := range got {
				if g != got[0] {
					t.Fatalf("copies differ: %+v", got)
				}
			}
			one(t, got[:1], "cr", "success", 12, sumPreds(ps))
			if d := batchDoc(t, e, "cr"); d["is_complete"] != true || d["completion_state"] != "published" {
				t.Fatalf("not confirmed: %v", d["completion_state"])
			}
		})
	}
}

// A batch that stops at 96 % completes as partial once its progress is
// StallAfter old: once, even with two sweeps at the same time, and alerted
// once.
func TestSweepStalled(t *testing.T) {
	e := env(t, batch.ModeDualSubReads, nil, nil)
	sub := e.Sub(topic)
	createBatch(t, e, "st", 100)
	ps := players(0, 96)
	deliver(t, e, "st", ps, 8)
	e.Clock.Advance(e.Cfg.Batch.StallAfter - time.Second)
	if rep, err := e.App.Batches.Sweep(context.Background(), 72*time.Hour, 10); err != nil || rep.Visited != 1 || rep.Completed != 0 {
		t.Fatalf("early sweep: %+v, %v", rep, err)
	}
	e.Clock.Advance(time.Second)
	var wg sync.WaitGroup
	reps := make([]batch.SweepReport, 2)
	for i := range reps {
		wg.Go(func() {
			r, err := e.App.Batches.Sweep(context.Background(), 72*time.Hour, 10)
			if err != nil {
				t.Error(err)
			}
			reps[i] = r
		})
	}
	wg.Wait()
	if reps[0].Completed+reps[1].Completed != 1 {
		t.Fatalf("sweeps completed %d and %d batches, want 1 in all", reps[0].Completed, reps[1].Completed)
	}
	m := one(t, completions(t, sub.Drain(t, time.Second)), "st", "partial", 96, sumPreds(ps))
	if !m.Metadata.StallCompleted || m.Metadata.StallReason != "stalled" || m.Metadata.CompletionPct != 96 {
		t.Fatalf("metadata = %+v", m.Metadata)
	}
	d := batchDoc(t, e, "st")
	if d["stall_completed"] != true || d["stall_reason"] != "stalled" || d["completed_count"] != int64(96) || d["is_complete"] != true {
		t.Fatalf("batch document: %v %v %v", d["stall_completed"], d["stall_reason"], d["completed_count"])
	}
	if rep, err := e.App.Batches.Sweep(context.Background(), 72*time.Hour, 10); err != nil || rep.Visited != 0 {
		t.Fatalf("sweep after completion: %+v, %v", rep, err)
	}
	if posts := e.Slack.Delivered(); len(posts) != 1 || posts[0].Path != "/error" || !strings.Contains(posts[0].Text, "without data") {
		t.Fatalf("slack posts = %+v, want one error alert", posts)
	}
	checkClean(t, e, "st")
}

// Under the stall threshold a batch waits for MaxAge, then completes as
// partial with stall_reason max_age, once.
func TestSweepMaxAge(t *testing.T) {
	e := env(t, batch.ModeSubOnly, nil, nil)
	sub := e.Sub(topic)
	createBatch(t, e, "age", 100)
	deliver(t, e, "age", players(0, 50), 8)
	e.Clock.Advance(e.Cfg.Batch.MaxAge - time.Second)
	if rep, _ := e.App.Batches.Sweep(context.Background(), 72*time.Hour, 10); rep.Completed != 0 {
		t.Fatalf("sweep before max age completed %d", rep.Completed)
	}
	e.Clock.Advance(time.Second)
	for range 2 {
		if _, err := e.App.Batches.Sweep(context.Background(), 72*time.Hour, 10); err != nil {
			t.Fatal(err)
		}
	}
	m := one(t, completions(t, sub.Drain(t, time.Second)), "age", "partial", 50, -1)
	if m.Metadata.StallReason != "max_age" || batchDoc(t, e, "age")["stall_reason"] != "max_age" {
		t.Fatalf("metadata = %+v", m.Metadata)
	}
	checkClean(t, e, "age")
}

// A batch that reached its count without any event noticing (here: the
// completions were copied by `batch migrate`) completes as success at the
// next sweep.
func TestSweepCompletesUnnoticed(t *testing.T) {
	e := env(t, batch.ModeDualSubReads, nil, nil)
	sub := e.Sub(topic)
	ctx := context.Background()
	createBatch(t, e, "un", 40)
	ps := players(0, 40)
	if _, err := e.App.FS.Collection(batch.Collection).Doc("un").Set(ctx, map[string]any{"completed_players": ps}, mergeAll); err != nil {
		t.Fatal(err)
	}
	if _, err := e.App.Batches.Migrate(ctx, batch.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.App.Batches.Sweep(ctx, 72*time.Hour, 10)
	if err != nil || rep.Completed != 1 || rep.Items[0].Status != "success" {
		t.Fatalf("sweep: %+v, %v", rep, err)
	}
	one(t, completions(t, sub.Drain(t, time.Second)), "un", "success", 40, -1)
}

// Bad input is acknowledged and dead-lettered; a completion for a batch
// that does not exist yet is retried until it does.
func TestBadInputAndMissingBatch(t *testing.T) {
	e := env(t, batch.ModeDualSubReads, nil, nil)
	dlq := e.Sub(e.Cfg.Topics.DeadLetter)
	for _, bad := range []any{
		map[string]any{"game_date": gameDate, "batch_id": "x"},
		map[string]any{"player_lookup": "p", "game_date": gameDate},
		map[string]any{"player_lookup": "p", "batch_id": "x"},
		map[string]any{"player_lookup": "p", "batch_id": "x", "game_date": "20-01-2026"},
		map[string]any{"player_lookup": "p", "batch_id": "x", "game_date": gameDate, "predictions_generated": -1},
		[]byte("not json"),
	} {
		if c := e.PushOnce(entry, "bad", bad); c != 200 {
			t.Fatalf("%v: status %d, want 200", bad, c)
		}
	}
	if got := dlq.Drain(t, time.Second); len(got) != 6 {
		t.Fatalf("dead letters: %d, want 6", len(got))
	}
	if c := e.PushOnce(entry, "early", completion("later", "p")); c != 500 {
		t.Fatalf("completion before its batch: status %d, want 500", c)
	}
	createBatch(t, e, "later", 1)
	sub := e.Sub(topic)
	if c := e.PushOnce(entry, "early", completion("later", "p")); c >= 300 {
		t.Fatalf("redelivery once the batch exists: status %d", c)
	}
	one(t, completions(t, sub.Drain(t, time.Second)), "later", "success", 1, preds("p"))
}

// A batch document without expected_players must not complete on its first
// completion: completions wait (5xx) until the document has it.
func TestBatchWithoutExpectedPlayersWaits(t *testing.T) {
	e := env(t, batch.ModeDualSubReads, nil, nil)
	sub := e.Sub(topic)
	ref := e.App.FS.Collection(batch.Collection).Doc("noexp")
	if _, err := ref.Create(context.Background(), map[string]any{"batch_id": "noexp", "game_date": gameDate,
		"is_complete": false, "start_time": e.Clock.Now(), "correlation_id": "corr-noexp"}); err != nil {
		t.Fatal(err)
	}
	if c := e.PushOnce(entry, "m1", completion("noexp", "p1")); c != 500 {
		t.Fatalf("completion of a batch without expected_players: status %d, want 500", c)
	}
	if _, err := ref.Update(context.Background(), []firestore.Update{{Path: "expected_players", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if c := e.PushOnce(entry, "m1", completion("noexp", "p1")); c >= 300 {
		t.Fatalf("redelivery once expected_players is set: status %d", c)
	}
	one(t, completions(t, sub.Drain(t, time.Second)), "noexp", "success", 1, preds("p1"))
}
