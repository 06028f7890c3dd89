package compare

import (
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

var t0 = time.Date(2026, 1, 20, 8, 0, 0, 0, time.UTC)

func phase(t *testing.T, name string) *config.Phase {
	p, ok := config.Default().Phase(name)
	if !ok {
		t.Fatal(name)
	}
	return p
}

func TestGates(t *testing.T) {
	p4 := phase(t, "phase4_to_phase5")
	rec3 := []string{"team_defense_zone_analysis", "player_shot_zone_analysis", "player_composite_factors"}
	tier3 := Gate{Exists: true, Triggered: true, At: t0, Reason: "tier3_timeout", Partial: true,
		Missing: []string{"player_daily_cache", "ml_feature_store"}, Recorded: rec3}
	for _, tc := range []struct {
		name       string
		r, s       Gate
		want       []string // substrings, one per line, in order
		improvedAt []bool
	}{
		{"nothing on either side", Gate{}, Gate{}, nil, nil},
		{"the same", tier3, tier3, nil, nil},
		{"within tolerance", tier3, with(tier3, func(g *Gate) { g.At = t0.Add(9 * time.Minute) }), nil, nil},
		{"shadow missing", tier3, Gate{}, []string{"document: running has one, phasegate has none"}, []bool{false}},
		{"running waited, phasegate fired a tier",
			with(tier3, func(g *Gate) { g.Triggered, g.Reason, g.At, g.Missing, g.Partial = false, "", time.Time{}, nil, false }), tier3,
			[]string{"triggered: running not triggered, phasegate triggered (tier3_timeout)"}, []bool{true}},
		{"phasegate did not fire", tier3,
			with(tier3, func(g *Gate) { g.Triggered, g.Reason = false, "" }),
			[]string{"triggered: running triggered (tier3_timeout), phasegate not triggered"}, []bool{false}},
		{"phasegate fired earlier on a timer",
			with(tier3, func(g *Gate) {
				g.At, g.Reason, g.Missing = t0.Add(30*time.Minute), "tier2_timeout", []string{"ml_feature_store"}
				g.Recorded = append(rec3, "player_daily_cache")
			}),
			with(tier3, func(g *Gate) {
				g.Recorded, g.Late = append(rec3, "player_daily_cache"), []string{"player_daily_cache"}
			}),
			[]string{"triggered_at: running 2026-01-20T08:30:00Z, phasegate 2026-01-20T08:00:00Z (30m0s earlier)", "reason: running tier2_timeout, phasegate tier3_timeout", "missing: running [ml_feature_store]"},
			[]bool{true, true, true}},
		{"phasegate later: unexplained", tier3, with(tier3, func(g *Gate) { g.At = t0.Add(time.Hour) }),
			[]string{"(1h0m0s later)"}, []bool{false}},
		{"a late processor the running system dropped", tier3,
			with(tier3, func(g *Gate) { g.Recorded, g.Late = append(rec3, "ml_feature_store"), []string{"ml_feature_store"} }),
			[]string{"processors: running [team_defense_zone_analysis player_shot_zone_analysis player_composite_factors], phasegate [team_defense_zone_analysis player_shot_zone_analysis player_composite_factors ml_feature_store]"}, []bool{true}},
		{"a processor phasegate never saw", with(tier3, func(g *Gate) { g.Recorded = append(rec3, "ml_feature_store") }), tier3,
			[]string{"processors:"}, []bool{false}},
		{"a different reason at the same time", tier3, with(tier3, func(g *Gate) { g.Reason = "max_timeout" }),
			[]string{"reason: running tier3_timeout, phasegate max_timeout"}, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Gates(p4, "2026-01-19", tc.r, tc.s, 10*time.Minute)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d lines, want %d:\n%v", len(got), len(tc.want), got)
			}
			for i, d := range got {
				if !strings.Contains(d.String(), tc.want[i]) || (d.Improvement != "") != tc.improvedAt[i] ||
					!strings.HasPrefix(d.String(), "2026-01-19 phase4_to_phase5 ") {
					t.Errorf("line %d = %q, want %q (improvement %v)", i, d, tc.want[i], tc.improvedAt[i])
				}
			}
		})
	}
}

func with(g Gate, f func(*Gate)) Gate {
	g.Recorded = append([]string(nil), g.Recorded...)
	f(&g)
	return g
}

func TestBatches(t *testing.T) {
	done := Batch{Exists: true, Complete: true, At: t0, Status: "success", Completed: 40, Expected: 40}
	for _, tc := range []struct {
		name     string
		r, s     Batch
		want     string
		improved bool
	}{
		{"the same", done, done, "", false},
		{"coordinator left it open", Batch{Exists: true, Completed: 38, Expected: 40},
			Batch{Exists: true, Complete: true, At: t0, Status: "partial", Completed: 38, Expected: 40}, "complete: running false, phasegate true", true},
		{"phasegate left it open", done, Batch{Exists: true, Completed: 40, Expected: 40}, "complete: running true, phasegate false", false},
		{"counts differ", done, func() Batch { b := done; b.Completed = 39; return b }(), "completed_players: running 40, phasegate 39", false},
		{"partial called partial", func() Batch { b := done; b.Completed = 38; return b }(),
			Batch{Exists: true, Complete: true, At: t0, Status: "partial", Completed: 38, Expected: 40}, "status: running success, phasegate partial", true},
		{"shadow never saw it", done, Batch{}, "document: running has one, phasegate has none", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Batches("2026-01-19", "b1", tc.r, tc.s, 10*time.Minute)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("got %v", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0].String(), "2026-01-19 batch b1 "+tc.want) || (got[0].Improvement != "") != tc.improved {
				t.Fatalf("got %v, want one line %q (improvement %v)", got, tc.want, tc.improved)
			}
		})
	}
}

// The running system's documents read as the fixtures hold them.
func TestRunningGate(t *testing.T) {
	d, _ := gamedate.Parse("2026-01-19")
	p2, p4 := phase(t, "phase2_to_phase3"), phase(t, "phase4_to_phase5")
	all := map[string]any{"_triggered": true, "_triggered_at": t0}
	for _, n := range p2.Expected {
		all[n] = map[string]any{"status": "success", "completed_at": t0.Add(-time.Minute)}
	}
	if g := RunningGate(p2, d, all); g.Reason != "all_complete" || g.Partial || len(g.Missing) != 0 {
		t.Fatalf("phase 2 all complete: %+v", g)
	}
	dl := map[string]any{"bdl_player_boxscores": map[string]any{"status": "success", "completed_at": t0.Add(-time.Hour)},
		"_triggered": true, "_triggered_at": t0, "_triggered_reason": "deadline_exceeded"}
	if g := RunningGate(p2, d, dl); g.Reason != "deadline_exceeded" || !g.Partial || len(g.Missing) != 5 {
		t.Fatalf("phase 2 deadline: %+v", g)
	}
	sc := map[string]any{"_triggered": true, "_triggered_at": "2026-01-20T08:00:00.000000+00:00", "_trigger_reason": "scheduled_timeout_check",
		"_first_completion_at": "2026-01-20T04:00:00.000000+00:00"}
	if g := RunningGate(p4, d, sc); g.Reason != "max_timeout" || !g.At.Equal(t0) || len(g.Missing) != 5 {
		t.Fatalf("phase 4 timeout check: %+v", g)
	}
}
