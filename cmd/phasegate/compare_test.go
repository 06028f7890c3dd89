package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/legacytest"
)

const replayDate = "2026-01-19"

// nightStep is what happens at one minute of the replayed night.
type nightStep struct {
	minute int
	entry  string // an entry point, or "start" for the coordinator's /start
	msg    map[string]any
}

func completionAt(minute int, entry, processor string) nightStep {
	return nightStep{minute, entry, apptest.Completion(processor, replayDate, "success")}
}

// night is the running system's night of 2026-01-19 as its completion
// messages arrived, starting at apptest.Start (01:00 in New York).
func night() []nightStep {
	s := []nightStep{
		// Phase 2: all six within 25 minutes.
		completionAt(0, "Phase2To3", "BdlPlayerBoxscoresProcessor"),
		completionAt(5, "Phase2To3", "BigDataBallPbpProcessor"),
		completionAt(10, "Phase2To3", "OddsApiGameLinesBatchProcessor"),
		completionAt(15, "Phase2To3", "NbacScheduleProcessor"),
		completionAt(20, "Phase2To3", "NbacGamebookProcessor"),
		completionAt(25, "Phase2To3", "BrRostersCurrentProcessor"),
		// Phase 3: both critical and a third go (60 %); a fourth comes later.
		completionAt(30, "Phase3To4", "PlayerGameSummaryProcessor"),
		completionAt(35, "Phase3To4", "TeamDefenseGameSummaryProcessor"),
		completionAt(40, "Phase3To4", "UpcomingPlayerGameContextProcessor"),
		completionAt(50, "Phase3To4", "TeamOffenseGameSummaryProcessor"),
		// Phase 4: three, then nothing for two and a half hours.
		completionAt(60, "Phase4To5", "TeamDefenseZoneAnalysisProcessor"),
		completionAt(65, "Phase4To5", "PlayerShotZoneAnalysisProcessor"),
		completionAt(70, "Phase4To5", "PlayerCompositeFactorsProcessor"),
		completionAt(210, "Phase4To5", "PlayerDailyCacheProcessor"),
		completionAt(240, "Phase4To5", "MLFeatureStoreProcessor"),
		// A redelivery phasegate and the running system both shrug off.
		completionAt(245, "Phase3To4", "PlayerGameSummaryProcessor"),
		// Predictions: 38 of 40 players complete; two never report.
		{215, "start", map[string]any{"batch_id": replayBatch, "expected": 40}},
	}
	for i := range 38 {
		p := fmt.Sprintf("player%02d", i)
		s = append(s, nightStep{220 + i/10*5, "PredictionCompletions", map[string]any{"player_lookup": p, "game_date": replayDate,
			"predictions_generated": 5, "batch_id": replayBatch, "timestamp": apptest.Start.Format(time.RFC3339)}})
	}
	return s
}

const replayBatch = "batch_2026-01-19_1768881300"

// replay feeds the night to a shadow phasegate (its own subscriptions:
// every message, with a sweep every 5 minutes) and to the stand-in for the
// running system (every message, its timeout check every 30 minutes), in
// one emulator project, until end.
func replay(t *testing.T, end int) *apptest.Env {
	t.Helper()
	e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
		c.Mode = config.ModeShadow
		p, _ := c.Phase("Phase2To3")
		p.Timed[0].Enabled = config.On // ENABLE_PHASE2_COMPLETION_DEADLINE, as production ran it
	}))
	py := &legacytest.Python{FS: e.App.FS, Clock: e.Clock, Cfg: e.Cfg, Phase2Deadline: true}
	ctx := context.Background()
	steps := night()
	for m := 0; m <= end; m += 5 {
		e.Clock.Set(apptest.Start.Add(time.Duration(m) * time.Minute))
		for i, s := range steps {
			if s.minute != m {
				continue
			}
			var err error
			switch s.entry {
			case "start":
				err = py.StartBatch(ctx, replayBatch, replayDate, s.msg["expected"].(int))
			case "PredictionCompletions":
				err = py.Worker(ctx, s.msg)
			default:
				err = py.Completion(ctx, s.entry, s.msg)
			}
			if err != nil {
				t.Fatalf("stand-in, minute %d: %v", m, err)
			}
			if s.entry == "start" {
				continue
			}
			if c := e.Deliver(s.entry, fmt.Sprintf("m-%d", i), s.msg); c >= 300 {
				t.Fatalf("phasegate, minute %d: status %d", m, c)
			}
		}
		if c := e.PushOnce("Sweep", fmt.Sprintf("sweep-%d", m), map[string]any{}); c >= 300 {
			t.Fatalf("sweep at minute %d: status %d", m, c)
		}
		if m%30 == 0 {
			if err := py.TimeoutCheck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv("GCP_PROJECT", e.Project)
	return e
}

// The replayed night: every difference compare finds is one phasegate makes
// on purpose (labelled improvement); none is unexplained. Exit status 1,
// because improvements are differences too.
func TestCompareReplayedNight(t *testing.T) {
	replay(t, 300)
	out, err := run(t, "compare", "--date", replayDate)
	t.Logf("phasegate compare --date %s\n%s", replayDate, out)
	if exitCode(err) != 1 {
		t.Fatalf("exit %d (%v), want 1", exitCode(err), err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	summary := lines[len(lines)-1]
	if !strings.Contains(summary, "0 unexplained") || !strings.Contains(summary, "3 phase gate(s), 1 batch(es)") {
		t.Fatalf("summary: %s", summary)
	}
	for _, want := range []string{
		"phase4_to_phase5 triggered_at: running 2026-01-20T09:30:00Z, phasegate 2026-01-20T09:00:00Z (30m0s earlier) improvement: tier3_timeout fired on time",
		"phase4_to_phase5 reason: running tier2_timeout, phasegate tier3_timeout improvement",
		"phase4_to_phase5 processors: running [team_defense_zone_analysis player_shot_zone_analysis player_composite_factors player_daily_cache], phasegate [team_defense_zone_analysis player_shot_zone_analysis player_composite_factors player_daily_cache ml_feature_store] improvement: recorded late processors",
		"batch " + replayBatch + " complete: running false, phasegate true improvement",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing line %q", want)
		}
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.Contains(l, "improvement:") {
			t.Errorf("unexplained: %s", l)
		}
	}
}

// A difference planted in the running system's documents is reported, one
// line, unexplained, with exit status 1; a date nobody wrote compares clean.
func TestComparePlantedDifference(t *testing.T) {
	e := replay(t, 60) // phases 2 and 3 agree to the second
	out, err := run(t, "compare", "--date", replayDate, "--tolerance", "1s")
	if exitCode(err) != 0 || !strings.Contains(out, "0 difference(s)") {
		t.Fatalf("before planting: exit %d\n%s", exitCode(err), out)
	}
	if _, err := e.App.FS.Doc("phase3_completion/"+replayDate).Update(context.Background(),
		[]firestore.Update{{Path: "_trigger_reason", Value: "all_complete"}}); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "compare", "--since", "2026-01-18", "--tolerance", "1s")
	if exitCode(err) != 1 {
		t.Fatalf("exit %d (%v), want 1\n%s", exitCode(err), err, out)
	}
	want := replayDate + " phase3_to_phase4 reason: running all_complete, phasegate critical_plus_majority_60pct\n"
	if !strings.Contains(out, want) || !strings.Contains(out, "1 unexplained") {
		t.Fatalf("output lacks %q:\n%s", want, out)
	}
	out, err = run(t, "compare", "--date", "2026-01-10")
	if exitCode(err) != 0 || !strings.Contains(out, "0 difference(s)") {
		t.Fatalf("an empty date: exit %d\n%s", exitCode(err), out)
	}
}

// Firestore that cannot be read: exit status 3.
func TestCompareCannotRead(t *testing.T) {
	ports, err := emulator.FreePorts(1) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	t.Setenv("FIRESTORE_EMULATOR_HOST", addr)
	t.Setenv("GCP_PROJECT", "p-unreadable")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	root := newRoot()
	root.SetArgs([]string{"compare", "--date", replayDate})
	var out strings.Builder
	root.SetOut(&out)
	root.SetErr(&out)
	err = root.ExecuteContext(ctx)
	if exitCode(err) != 3 {
		t.Fatalf("exit %d (%v), want 3", exitCode(err), err)
	}
}
