package sweep_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func deadline(flag config.Flag) apptest.Option {
	return apptest.WithConfig(func(c *config.Config) {
		p, _ := c.Phase("Phase2To3")
		p.Timed[0].Enabled = flag
	})
}

func sweepOnce(t *testing.T, e *apptest.Env) {
	t.Helper()
	if c := e.PushOnce("Sweep", fmt.Sprintf("sweep-%d", time.Now().UnixNano()), map[string]any{}); c >= 300 {
		t.Fatalf("sweep: status %d", c)
	}
}

func decode(t *testing.T, data []byte) gate.Message {
	t.Helper()
	var m gate.Message
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// One completion, then silence: the sweep fires the deadline exactly once,
// at the deadline and not before, whatever sweeps follow or run together.
func TestDeadlineFiresFromSweepOnce(t *testing.T) {
	e := apptest.New(t, deadline(config.On))
	sub := e.Sub("nba-phase3-trigger")
	if c := e.Deliver("Phase2To3", "m1", apptest.Completion("BdlPlayerBoxscoresProcessor", "2026-01-19", "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	e.Clock.Advance(30*time.Minute - time.Second)
	sweepOnce(t, e)
	if got := sub.Drain(t, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("fired a second early: %d triggers", len(got))
	}
	e.Clock.Advance(time.Second)
	sweepOnce(t, e)
	sweepOnce(t, e)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { sweepOnce(t, e) })
	}
	wg.Wait()
	got := sub.Drain(t, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("got %d triggers, want 1", len(got))
	}
	m := decode(t, got[0].Data)
	want := "[bigdataball_play_by_play odds_api_game_lines nbac_schedule nbac_gamebook_player_stats br_roster]"
	if m.TriggerReason != "deadline_exceeded" || !m.IsPartial || fmt.Sprint(m.MissingProcessors) != want ||
		m.ParentProcessor != "Phase2OrchestratorSweep" || m.TriggerID != "phase2_to_phase3:2026-01-19:1" {
		t.Fatalf("trigger = %+v", m)
	}
	alerts := e.Slack.Delivered()
	if len(alerts) != 1 || alerts[0].Path != "/error" {
		t.Fatalf("alerts = %+v, want one error alert", alerts)
	}
	doc := e.Doc("phase2_completion/2026-01-19")
	if hist, _ := doc["_sweep_actions"].([]any); len(hist) != 1 {
		t.Fatalf("sweep actions recorded: %v", doc["_sweep_actions"])
	}
}

// The deadline flag at false or 0% never fires, however late.
func TestDeadlineOffNeverFires(t *testing.T) {
	for _, flag := range []string{"false", "0%"} {
		t.Run(flag, func(t *testing.T) {
			f, _ := config.ParseFlag(flag)
			e := apptest.New(t, deadline(f))
			sub := e.Sub("nba-phase3-trigger")
			e.Deliver("Phase2To3", "m1", apptest.Completion("BdlPlayerBoxscoresProcessor", "2026-01-19", "success"))
			e.Clock.Advance(48 * time.Hour)
			sweepOnce(t, e)
			if got := sub.Drain(t, 500*time.Millisecond); len(got) != 0 {
				t.Fatalf("fired with the flag at %s", flag)
			}
		})
	}
}

// Phase 4's tiers fire from the sweep at the right tier.
func TestTiersFromSweep(t *testing.T) {
	e := apptest.New(t)
	sub := e.Sub("nba-predictions-trigger")
	for _, p := range []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor", "PlayerCompositeFactorsProcessor"} {
		e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success"))
	}
	e.Clock.Advance(time.Hour) // three of five: tier 2 needs four
	sweepOnce(t, e)
	if got := sub.Drain(t, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("tier fired with three at 1h")
	}
	e.Clock.Advance(time.Hour)
	sweepOnce(t, e)
	got := sub.Drain(t, time.Second)
	if len(got) != 1 || decode(t, got[0].Data).TriggerReason != "tier3_timeout" {
		t.Fatalf("want one tier3_timeout trigger, got %d", len(got))
	}
}

// A trigger whose publish failed, and no redelivery: the next sweep
// publishes it, once.
func TestSweepFinishesReleasedClaim(t *testing.T) {
	e := apptest.New(t, apptest.FailPublishes("nba-predictions-trigger", 1))
	sub := e.Sub("nba-predictions-trigger")
	for i, p := range []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor",
		"PlayerCompositeFactorsProcessor", "PlayerDailyCacheProcessor", "MLFeatureStoreProcessor"} {
		c := e.PushOnce("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success"))
		if i == 4 && c != 500 {
			t.Fatalf("last completion with a failing publish: %d", c)
		}
	}
	sweepOnce(t, e)
	sweepOnce(t, e)
	got := sub.Drain(t, time.Second)
	if len(got) != 1 || decode(t, got[0].Data).TriggerID != "phase4_to_phase5:2026-01-19:1" {
		t.Fatalf("want the one trigger, got %d", len(got))
	}
	if doc := e.Doc("phase4_completion/2026-01-19"); doc["_triggered"] != true || doc["_open"] != false {
		t.Fatalf("gate not closed: %v", doc)
	}
}

// A trigger owed by an instance that died right after its claim's commit
// is finished by a sweep (on another instance) after its lease.
func TestSweepFinishesExpiredClaim(t *testing.T) {
	f := apptest.NewFaults()
	e := apptest.New(t, f.Option(t))
	sub := e.Sub("nba-phase4-trigger")
	f.At(effect.Collection, 0, apptest.DieAfter)
	for _, p := range []string{"AsyncUpcomingPlayerGameContextProcessor"} {
		e.PushOnce("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-20", "success")) // same day
	}
	e = e.On(e.Instance())
	sweepOnce(t, e) // the claim is still live: nothing
	if got := sub.Drain(t, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("published under a live claim")
	}
	e.Clock.Advance(e.Cfg.Gate.ClaimLease)
	sweepOnce(t, e)
	sweepOnce(t, e)
	got := sub.Drain(t, time.Second)
	if len(got) != 1 {
		t.Fatalf("got %d triggers, want 1", len(got))
	}
	if m := decode(t, got[0].Data); m.Mode != "same_day" || m.TriggerReason != "all_complete" || m.IsPartial {
		t.Fatalf("trigger = %+v", m)
	}
}

// Slack answers 429 with Retry-After, then 200: the deadline alert arrives once.
func TestAlertSurvivesRateLimit(t *testing.T) {
	e := apptest.New(t, deadline(config.On))
	e.Slack.Script(slacktest.Reply{Status: 429, RetryAfter: 1})
	e.Deliver("Phase2To3", "m1", apptest.Completion("BrRostersCurrentProcessor", "2026-01-19", "success"))
	e.Clock.Advance(31 * time.Minute)
	sweepOnce(t, e)
	sweepOnce(t, e)
	posts := e.Slack.Posts()
	if len(posts) != 2 || posts[0].Status != 429 || posts[1].Status != 200 {
		t.Fatalf("posts = %+v, want a 429 then one delivery", posts)
	}
	if gap := posts[1].At.Sub(posts[0].At); gap < time.Second {
		t.Fatalf("retried after %v, before Retry-After", gap)
	}
}

// A manual trigger on a date without completions has no first completion,
// so the open-gate query never sees it; a crash after its claim is still
// finished by the sweep once the lease expires.
func TestSweepFinishesClaimWithoutCompletions(t *testing.T) {
	f := apptest.NewFaults()
	e := apptest.New(t, f.Option(t))
	sub := e.Sub("nba-phase3-trigger")
	f.At(effect.Collection, 0, apptest.DieAfter)
	d, _ := gamedate.Parse("2026-01-19")
	if _, err := e.App.Gates[0].Evaluate(context.Background(), d, gate.SourceManual, nil); err == nil {
		t.Fatal("the injected crash did not stop the manual trigger")
	}
	e = e.On(e.Instance())
	e.Clock.Advance(e.Cfg.Gate.ClaimLease)
	sweepOnce(t, e)
	sweepOnce(t, e)
	got := sub.Drain(t, time.Second)
	if len(got) != 1 || decode(t, got[0].Data).TriggerReason != "manual" {
		t.Fatalf("want the one manual trigger, got %d", len(got))
	}
}
