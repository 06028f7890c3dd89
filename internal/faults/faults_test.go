// Package faults holds the fault table: one integration test, on the real
// Firestore and Pub/Sub emulators, that puts a whole App through every fault
// the orchestration must survive and checks the same invariants after each
// once things settle (docs/reliability.md renders it):
//
//   - no completion is lost: the gate document holds every processor
//     delivered and _completed_count agrees;
//   - each (phase, date, generation) reaches the consumer exactly once,
//     byte-identical and with one trigger_id;
//   - Slack gets at most one message per alert key (and one follow-up),
//     and every message it got is one the effect log recorded as done;
//   - nothing is dead-lettered, no message is answered 4xx, and every
//     message is acknowledged in the end;
//   - nothing waits for a lease to expire.
//
// Crashes are not rows here: internal/crashpoints injects one at every call
// of every path, which no hand-picked row can match. These rows test what
// it does not: concurrency, reordering, contention and Slack's answers.
package faults

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// scenario is one row of the table.
type scenario struct {
	name   string
	proves string // the docs/reliability.md column
	ep     string // the gate's entry point
	opt    rigOpt
	act    func(r *rig)

	// What must hold once things settle.
	completed []string       // normalised names the gate must hold as completed
	triggers  map[string]int // trigger_id → copies the consumer sees
	reason    string         // the trigger's reason
	alerts    int            // Slack messages delivered, each exactly once
	lease     bool           // a crash left a claim: settling may wait out its lease
	check     func(r *rig)   // the row's own assertions
}

func id1(phase string) string { return phase + ":" + date + ":1" }

var table = []scenario{
	{
		name:   "duplicates_same_id",
		proves: "Pub/Sub redelivering one message (same message id) 5 times, all at once, records each completion once and triggers once; one idempotency key per completion, naming the message",
		ep:     "Phase4To5",
		act: func(r *rig) {
			var fs []func()
			for _, p := range phase4 {
				for range 5 {
					fs = append(fs, func() { r.deliver("m-"+p, completion(p, "success"), 10) })
				}
			}
			r.concurrently(fs...)
		},
		completed: phase4Names,
		triggers:  map[string]int{id1("phase4_to_phase5"): 1},
		reason:    "all_complete",
		check: func(r *rig) {
			keys := r.keys()
			var ids []string
			for _, k := range keys {
				ids = append(ids, fmt.Sprint(k["message_id"]))
			}
			slices.Sort(ids)
			want := []string{}
			for _, p := range phase4 {
				want = append(want, "m-"+p)
			}
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				r.t.Errorf("idempotency keys name %v, want one per completion %v", ids, want)
			}
		},
	},
	{
		name:   "duplicates_new_ids",
		proves: "the same completion re-published 5 times under new message ids, all at once, counts once (the key covers the content); one key per completion",
		ep:     "Phase4To5",
		act: func(r *rig) {
			var fs []func()
			for _, p := range phase4 {
				for i := range 5 {
					fs = append(fs, func() { r.deliver(fmt.Sprintf("m-%s-%d", p, i), completion(p, "success"), 10) })
				}
			}
			r.concurrently(fs...)
		},
		completed: phase4Names,
		triggers:  map[string]int{id1("phase4_to_phase5"): 1},
		reason:    "all_complete",
		check: func(r *rig) {
			keys := r.keys()
			if len(keys) != len(phase4) {
				r.t.Errorf("%d idempotency keys, want %d (one per content)", len(keys), len(phase4))
			}
			for _, k := range keys {
				if id := fmt.Sprint(k["message_id"]); !strings.HasPrefix(id, "m-") {
					r.t.Errorf("key names message %q", id)
				}
			}
		},
	},
	{
		name: "reordering",
		proves: "completions in reverse order; a failure before the success (recorded in _failed_attempts, alerted, resolved when the success comes); " +
			"a failure after a success (changes nothing); no trigger while a critical processor is missing; the trigger-making event redelivered " +
			"after the trigger, under its id and a new one (acknowledged as duplicates, no second trigger)",
		ep: "Phase3To4",
		act: func(r *rig) {
			step := func(id string, m map[string]any) {
				if c := r.deliver(id, m, 1); c >= 300 {
					r.t.Errorf("%s: status %d", id, c)
				}
			}
			step("r1", withExec(completion("TeamOffenseGameSummaryProcessor", "failed"), "e-failed"))
			step("r2", completion("UpcomingTeamGameContextProcessor", "success"))
			step("r3", completion("TeamOffenseGameSummaryProcessor", "success"))
			step("r4", completion("TeamDefenseGameSummaryProcessor", "success"))
			step("r5", withExec(completion("TeamDefenseGameSummaryProcessor", "failed"), "e-late-failure"))
			step("r6", completion("PlayerGameSummaryProcessor", "success"))
			if doc := r.gateDoc(date); doc["_triggered"] != false || doc["_trigger_state"] != nil {
				r.t.Errorf("triggered with a critical processor missing: %v", doc["_trigger_state"])
			}
			last := completion("AsyncUpcomingPlayerGameContextProcessor", "success")
			step("r7", last)
			for _, id := range []string{"r7", "r7-republished"} {
				if c := r.deliver(id, last, 1); c != 200 {
					r.t.Errorf("trigger-making event redelivered as %s: status %d, want 200 (duplicate)", id, c)
				}
			}
		},
		completed: phase3Names,
		triggers:  map[string]int{id1("phase3_to_phase4"): 1},
		reason:    "all_complete",
		alerts:    2, // team_offense_game_summary failed, then resolved
		check: func(r *rig) {
			failed, _ := r.gateDoc(date)["_failed_attempts"].(map[string]any)
			if got := sortedKeys(failed); fmt.Sprint(got) != "[team_offense_game_summary]" {
				r.t.Errorf("_failed_attempts = %v, want only team_offense_game_summary (a failure after a success changes nothing)", got)
			}
			if rec, _ := r.gateDoc(date)["team_defense_game_summary"].(map[string]any); rec["status"] != "success" {
				r.t.Errorf("a failure after the success overwrote it: %v", rec)
			}
		},
	},
	{
		name:      "concurrent_15",
		proves:    "15 events on one date at once — 6 distinct processors, 5 redeliveries, 4 re-publications — record 6 completions and one trigger under the default retries",
		ep:        "Phase2To3",
		act:       func(r *rig) { fifteen(r, 12) },
		completed: phase2Names,
		triggers:  map[string]int{id1("phase2_to_phase3"): 1},
		reason:    "all_complete",
		check: func(r *rig) {
			if n := len(r.keys()); n != len(phase2) {
				r.t.Errorf("%d idempotency keys, want %d", n, len(phase2))
			}
		},
	},
	{
		name:   "pubsub_unavailable",
		proves: "the trigger publish failing 3 times, then Pub/Sub back: each failure leaves the message due at once (the redelivery publishes without waiting for a lease), one trigger",
		ep:     "Phase4To5",
		opt:    rigOpt{failPubs: 3},
		act: func(r *rig) {
			for _, p := range phase4 {
				r.deliver("m-"+p, completion(p, "success"), 10)
			}
		},
		completed: phase4Names,
		triggers:  map[string]int{id1("phase4_to_phase5"): 1},
		reason:    "all_complete",
		check: func(r *rig) {
			if n := r.pub.failed.Load(); n != 3 {
				r.t.Errorf("%d publishes failed, want 3", n)
			}
			if r.fivexx.Load() != 3 {
				r.t.Errorf("%d 5xx answers, want 3 (one per failed publish)", r.fivexx.Load())
			}
		},
	},
	{
		name: "firestore_contention",
		proves: "contention beyond the client's retries (gate.write_attempts=1, 15 events at once): the losers get 5xx, " +
			"their redeliveries settle, nothing is lost or triggered twice",
		ep:        "Phase2To3",
		opt:       rigOpt{cfg: func(c *config.Config) { c.Gate.WriteAttempts = 1 }},
		act:       func(r *rig) { fifteen(r, 40) },
		completed: phase2Names,
		triggers:  map[string]int{id1("phase2_to_phase3"): 1},
		reason:    "all_complete",
		check: func(r *rig) {
			if r.fivexx.Load() == 0 {
				r.t.Errorf("no event got a 5xx: the row did not produce contention (conflicts: %d)",
					r.Metrics.Get("phase2_to_phase3.write_conflict"))
			}
			r.t.Logf("5xx answers: %d, write conflicts: %d", r.fivexx.Load(), r.Metrics.Get("phase2_to_phase3.write_conflict"))
		},
	},
	{
		name: "slack_429_500_timeout",
		proves: "Slack answering 429 (Retry-After), 500 and timing out while a partial trigger, a failure (by two failed runs, alerted once) and their resolutions are alerted: " +
			"every event is acknowledged at once and the trigger goes out; each alert and follow-up reaches Slack once, the undelivered ones through the sweep",
		ep:  "Phase3To4",
		opt: rigOpt{slack: true},
		act: func(r *rig) {
			stall := slacktest.Reply{Status: 504, Delay: time.Second} // the client gives up after 300ms
			r.Slack.Script(slacktest.Reply{Status: 429, RetryAfter: 1}, slacktest.Reply{Status: 500}, stall,
				slacktest.Reply{Status: 500}, stall, slacktest.Reply{Status: 429, RetryAfter: 1})
			for i, m := range []map[string]any{
				withExec(completion("TeamOffenseGameSummaryProcessor", "failed"), "e-failed"),
				// Its rerun fails too: recorded again, the same alert key raised again.
				withExec(completion("TeamOffenseGameSummaryProcessor", "failed"), "e-failed-again"),
				completion("PlayerGameSummaryProcessor", "success"),
				completion("AsyncUpcomingPlayerGameContextProcessor", "success"),
				completion("TeamDefenseGameSummaryProcessor", "success"), // 3 of 5, both critical: partial trigger
				completion("TeamOffenseGameSummaryProcessor", "success"),
				completion("UpcomingTeamGameContextProcessor", "success"), // late: the partial alert resolves
			} {
				if c := r.deliver(fmt.Sprintf("s%d", i), m, 1); c >= 300 {
					r.t.Errorf("event %d answered %d while Slack misbehaved", i, c)
				}
			}
		},
		completed: phase3Names,
		triggers:  map[string]int{id1("phase3_to_phase4"): 1},
		reason:    "critical_plus_majority_60pct",
		alerts:    4, // failure + resolved, partial trigger + resolved
		check: func(r *rig) {
			codes := map[int]int{}
			for _, p := range r.Slack.Posts() {
				codes[p.Status]++
			}
			if codes[429] != 2 || codes[500] != 2 || codes[504] != 2 {
				r.t.Errorf("slack answers %v: the scripted faults were not all met", codes)
			}
			if r.Metrics.Get("effects.try_failed.slack") == 0 {
				r.t.Errorf("no alert was left for the sweep: the row does not exercise the effect log's retries")
			}
		},
	},
}

// fifteen delivers 15 events for phase 2 at once: 6 processors, 5 of them
// redelivered under the same id, 4 re-published under new ids.
func fifteen(r *rig, attempts int) {
	var fs []func()
	for i, p := range phase2 {
		m := completion(p, "success")
		fs = append(fs, func() { r.deliver("m-"+p, m, attempts) })
		if i < 5 {
			fs = append(fs, func() { r.deliver("m-"+p, m, attempts) })
		}
		if i < 4 {
			fs = append(fs, func() { r.deliver("m-"+p+"-again", m, attempts) })
		}
	}
	if len(fs) != 15 {
		panic(len(fs))
	}
	r.concurrently(fs...)
}

func TestFaultTable(t *testing.T) {
	for _, sc := range table {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := newRig(t, sc.ep, sc.opt)
			sc.act(r)
			r.settle()
			msgs, dead := r.drain()

			// No completion lost.
			doc := r.gateDoc(date)
			for _, name := range sc.completed {
				rec, _ := doc[name].(map[string]any)
				if s := rec["status"]; s != "success" && s != "partial" {
					t.Errorf("completion of %s lost: %v", name, doc[name])
				}
			}
			if n := doc["_completed_count"]; n != int64(len(sc.completed)) {
				t.Errorf("_completed_count = %v, want %d", n, len(sc.completed))
			}
			if doc["_triggered"] != true || doc["_trigger_state"] != "published" || doc["_open"] != false {
				t.Errorf("gate not closed: _triggered %v _trigger_state %v _open %v",
					doc["_triggered"], doc["_trigger_state"], doc["_open"])
			}

			// Exactly one trigger per (phase, date, generation); copies only
			// where the row crashes between publish and confirm.
			got := byTrigger(t, msgs)
			if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(sortedKeys(sc.triggers)) {
				t.Errorf("triggers %v, want %v", sortedKeys(got), sortedKeys(sc.triggers))
			}
			for id, n := range sc.triggers {
				if len(got[id]) != n {
					t.Errorf("consumer saw %s %d times, want %d", id, len(got[id]), n)
				}
				if len(got[id]) > 0 {
					if g := got[id][0]; g.TriggerReason != sc.reason || doc["_trigger_id"] != id {
						t.Errorf("trigger %s: reason %q (want %q), gate's _trigger_id %v", id, g.TriggerReason, sc.reason, doc["_trigger_id"])
					}
				}
			}
			if len(dead) != 0 {
				t.Errorf("%d messages dead-lettered; first: %v", len(dead), dead[0].Attributes)
			}
			r.alertsSettled(sc.alerts)
			if !sc.lease && r.leaseWaits > 0 {
				t.Errorf("settling waited %d times for a claim lease to expire; nothing in this row leaves a claim behind", r.leaseWaits)
			}
			if sc.check != nil {
				sc.check(r)
			}
			t.Logf("%s settled in %v (5xx answers %d, lease waits %d)", sc.name, time.Since(start).Round(time.Millisecond), r.fivexx.Load(), r.leaseWaits)
		})
	}
}

// docs/reliability.md renders the table; keep them in step.
func TestReliabilityDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/reliability.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range table {
		row := fmt.Sprintf("| `%s` | %s |", sc.name, sc.proves)
		if !strings.Contains(string(b), row) {
			t.Errorf("docs/reliability.md lacks the row\n%s", row)
		}
	}
}
