package gate_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/legacytest"
)

// Take-over (CONTRACT §9): documents the running system wrote, exactly as it
// writes them (internal/legacytest/testdata), met by phasegate after a
// cut-over.

const legacyDate = "2026-01-19"

// legacyPhase is, per phase, where its documents live, where its triggers
// go, and which processors a test replays.
type legacyPhase struct {
	entry, coll, topic string
	recorded, missing  string // a class name already in the fixture; one absent from it
}

var legacyPhases = map[string]legacyPhase{
	"phase2": {"Phase2To3", "phase2_completion", "nba-phase3-trigger", "BdlPlayerBoxscoresProcessor", "NbacScheduleProcessor"},
	"phase3": {"Phase3To4", "phase3_completion", "nba-phase4-trigger", "PlayerGameSummaryProcessor", "TeamOffenseGameSummaryProcessor"},
	"phase4": {"Phase4To5", "phase4_completion", "nba-predictions-trigger", "TeamDefenseZoneAnalysisProcessor", "PlayerDailyCacheProcessor"},
}

// every timed rule on, so that a sweep would fire any untriggered gate here
func allTimedRules(c *config.Config) {
	for i := range c.Phases {
		for j := range c.Phases[i].Timed {
			c.Phases[i].Timed[j].Enabled = config.On
		}
	}
}

func sweep(t *testing.T, e *apptest.Env) {
	t.Helper()
	if c := e.PushOnce("Sweep", fmt.Sprintf("sweep-%d", time.Now().UnixNano()), map[string]any{}); c >= 300 {
		t.Fatalf("sweep: status %d", c)
	}
}

// A date the running system triggered is never triggered again — not by a
// duplicate, a redelivery, a late completion, nor any sweep, hours later.
func TestLegacyTriggeredNeverTriggersAgain(t *testing.T) {
	for _, tc := range []struct {
		fixture, phase string
		late           bool // the fixture misses lp.missing
	}{
		{"phase2_triggered", "phase2", false}, // all six: every completion is a duplicate
		{"phase2_deadline", "phase2", true},
		{"phase3_triggered", "phase3", true},
		{"phase4_triggered", "phase4", true},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			lp := legacyPhases[tc.phase]
			e := apptest.New(t, apptest.WithConfig(allTimedRules))
			sub := e.Sub(lp.topic)
			path := lp.coll + "/" + legacyDate
			before := legacytest.Put(t, e.App.FS, path, tc.fixture)

			// A duplicate of a processor the running system recorded, then the
			// same message redelivered.
			dup := apptest.Completion(lp.recorded, legacyDate, "success")
			for range 2 {
				if c := e.Deliver(lp.entry, "dup-1", dup); c >= 300 {
					t.Fatalf("duplicate: status %d", c)
				}
			}
			// A processor it never recorded: late.
			e.Clock.Advance(10 * time.Minute)
			late := apptest.Completion(lp.missing, legacyDate, "success")
			for range 2 {
				if c := e.Deliver(lp.entry, "late-1", late); c >= 300 {
					t.Fatalf("late: status %d", c)
				}
			}
			// Sweeps, hours later, some at once.
			e.Clock.Advance(5 * time.Hour)
			sweep(t, e)
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { sweep(t, e) })
			}
			wg.Wait()
			if got := sub.Drain(t, time.Second); len(got) != 0 {
				t.Fatalf("a triggered legacy date was triggered again: %+v", triggers(t, got))
			}
			doc := e.Doc(path)
			if doc["_triggered"] != true || !doc["_triggered_at"].(time.Time).Equal(before["_triggered_at"].(time.Time)) {
				t.Fatalf("_triggered/_triggered_at changed: %v %v", doc["_triggered"], doc["_triggered_at"])
			}
			if _, ok := doc["_trigger_generation"]; ok {
				t.Fatalf("phasegate claimed a trigger: %v", doc)
			}
			wantLate := 0
			if tc.late {
				wantLate = 1
			}
			if late, _ := doc["_late_processors"].([]any); len(late) != wantLate {
				t.Fatalf("_late_processors = %v, want %d", doc["_late_processors"], wantLate)
			}
			if d := e.Slack.Delivered(); len(d) != 0 {
				t.Fatalf("alerts = %+v", d)
			}
		})
	}
}

// An operator's manual trigger on a date the running system triggered is
// generation 2, once.
func TestLegacyTriggeredManualIsGenerationTwo(t *testing.T) {
	lp := legacyPhases["phase3"]
	e := apptest.New(t)
	sub := e.Sub(lp.topic)
	legacytest.Put(t, e.App.FS, lp.coll+"/"+legacyDate, "phase3_triggered")
	d, _ := gamedate.Parse(legacyDate)
	g := e.App.Gates[1]
	out, err := g.Evaluate(context.Background(), d, gate.SourceManual, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 1 || got[0].TriggerID != "phase3_to_phase4:2026-01-19:2" || got[0].TriggerReason != "manual" || out.TriggerID != got[0].TriggerID {
		t.Fatalf("manual trigger = %+v (outcome %+v)", got, out)
	}
	sweep(t, e)
	if c := e.Deliver(lp.entry, "dup-m", apptest.Completion(lp.recorded, legacyDate, "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	if more := sub.Drain(t, time.Second); len(more) != 0 {
		t.Fatalf("after the manual trigger: %+v", triggers(t, more))
	}
}

// The running system's untriggered phase-4 date whose string first
// completion is 2 h old fires tier3_timeout from the sweep alone, once.
func TestLegacyUntriggeredPhase4FiresTier3FromSweep(t *testing.T) {
	lp := legacyPhases["phase4"]
	e := apptest.New(t) // apptest.Start is exactly 2 h after the fixture's first completion
	sub := e.Sub(lp.topic)
	path := lp.coll + "/" + legacyDate
	legacytest.Put(t, e.App.FS, path, "phase4_untriggered")
	sweep(t, e)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { sweep(t, e) })
	}
	wg.Wait()
	sweep(t, e)
	got := triggers(t, sub.Drain(t, 2*time.Second))
	if len(got) != 1 {
		t.Fatalf("got %d triggers, want 1: %+v", len(got), got)
	}
	m := got[0]
	if m.TriggerReason != "tier3_timeout" || m.TriggerID != "phase4_to_phase5:2026-01-19:1" || !m.IsPartial ||
		!slices.Equal(m.MissingProcessors, []string{"player_daily_cache", "ml_feature_store"}) ||
		m.ParentProcessor != "Phase4OrchestratorSweep" || m.UpstreamProcessorsCount != 3 {
		t.Fatalf("trigger = %+v", m)
	}
	doc := e.Doc(path)
	if doc["_first_completion_at"] != "2026-01-20T04:00:00.000000+00:00" {
		t.Fatalf("the running system's field was rewritten: %v", doc["_first_completion_at"])
	}
	// Its missing processors arrive: late, nothing more published.
	for _, p := range []string{"PlayerDailyCacheProcessor", "MLFeatureStoreProcessor"} {
		if c := e.Deliver(lp.entry, "late-"+p, apptest.Completion(p, legacyDate, "success")); c >= 300 {
			t.Fatalf("status %d", c)
		}
	}
	sweep(t, e)
	if more := sub.Drain(t, time.Second); len(more) != 0 {
		t.Fatalf("more triggers: %+v", triggers(t, more))
	}
}

// A second earlier the same document waits; an event, not only the sweep,
// sees its string timestamp.
func TestLegacyUntriggeredPhase4WaitsThenEventFires(t *testing.T) {
	lp := legacyPhases["phase4"]
	e := apptest.New(t)
	e.Clock.Set(apptest.Start.Add(-time.Second))
	sub := e.Sub(lp.topic)
	legacytest.Put(t, e.App.FS, lp.coll+"/"+legacyDate, "phase4_untriggered")
	sweep(t, e)
	if got := sub.Drain(t, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("fired a second early: %+v", triggers(t, got))
	}
	e.Clock.Advance(time.Second)
	// A duplicate of a recorded processor evaluates the timed rules too.
	if c := e.Deliver(lp.entry, "dup", apptest.Completion(lp.recorded, legacyDate, "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	got := triggers(t, sub.Drain(t, 2*time.Second))
	if len(got) != 1 || got[0].TriggerReason != "tier3_timeout" || got[0].ParentProcessor != "Phase4Orchestrator" {
		t.Fatalf("triggers = %+v", got)
	}
}

// The sweep sees the running system's untriggered documents of every date
// of its look-back, New York's tomorrow included, and none older.
func TestSweepSeesLegacyDatesOfTheLookBack(t *testing.T) {
	e := apptest.New(t, apptest.WithConfig(allTimedRules))
	sub := e.Sub("nba-phase3-trigger")
	today := gamedate.Today(e.Clock.Now()) // 2026-01-20 in New York
	dates := map[string]bool{}             // date → inside the look-back
	for _, d := range []gamedate.Date{today.AddDays(1), today, today.AddDays(-3), today.AddDays(-4), today.AddDays(-10)} {
		dates[d.String()] = d.Compare(gamedate.Today(e.Clock.Now().Add(-e.Cfg.Sweep.LookBack))) >= 0
		legacytest.Put(t, e.App.FS, "phase2_completion/"+d.String(), "phase2_untriggered")
	}
	r, err := e.App.Sweeper.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for d, in := range dates {
		if in {
			want = append(want, "phase2_to_phase3:"+d+":1")
		}
	}
	slices.Sort(want)
	slices.Sort(r.Triggered)
	if !slices.Equal(r.Triggered, want) || !dates[today.AddDays(1).String()] {
		t.Fatalf("sweep triggered %v, want %v", r.Triggered, want)
	}
	if got := sub.Drain(t, time.Second); len(got) != len(want) {
		t.Fatalf("published %d, want %d", len(got), len(want))
	}
}

// PHASEGATE_PHASES: a phase the running system still owns is neither swept
// nor fired by a timed rule, even on an event.
func TestUnownedPhaseHasNoTimedRules(t *testing.T) {
	lp := legacyPhases["phase4"]
	e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
		c.Owned = []string{"phase2_to_phase3", "phase3_to_phase4"}
	}))
	sub := e.Sub(lp.topic)
	legacytest.Put(t, e.App.FS, lp.coll+"/"+legacyDate, "phase4_untriggered")
	e.Clock.Advance(5 * time.Hour)
	sweep(t, e)
	if c := e.Deliver(lp.entry, "dup", apptest.Completion(lp.recorded, legacyDate, "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	if got := sub.Drain(t, time.Second); len(got) != 0 {
		t.Fatalf("an unowned phase triggered: %+v", triggers(t, got))
	}
}
