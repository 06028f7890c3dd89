package rules

import (
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

func phase(t *testing.T, key string) *config.Phase {
	t.Helper()
	p, ok := config.Default().Phase(key)
	if !ok {
		t.Fatalf("no phase %s", key)
	}
	return p
}

func done(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func date(s string) gamedate.Date {
	d, err := gamedate.Parse(s)
	if err != nil {
		panic(err)
	}
	return d
}

func TestModeAtNewYorkMidnight(t *testing.T) {
	p := phase(t, "Phase3To4")
	d := date("2026-01-19")
	tests := []struct {
		now  string
		want string
	}{
		// 2026-01-20 04:59:59Z is 23:59:59 on the 19th in New York (EST, UTC-5).
		{"2026-01-20T04:59:59Z", ModeSameDay},
		{"2026-01-20T05:00:00Z", ModeOvernight},
		// Early evening of the 18th in New York is already the 19th in UTC.
		{"2026-01-19T02:00:00Z", ModeTomorrow},
		{"2026-01-19T05:00:00Z", ModeSameDay},
		// Summer time: midnight in New York is 04:00Z.
		{"2026-07-02T03:59:59Z", ModeTomorrow},
	}
	for _, tt := range tests {
		now, _ := time.Parse(time.RFC3339, tt.now)
		dd := d
		if tt.now[:7] == "2026-07" {
			dd = date("2026-07-02")
		}
		if got := Mode(p, dd, now); got != tt.want {
			t.Errorf("Mode(%s at %s) = %s, want %s", dd, tt.now, got, tt.want)
		}
	}
	if got := Mode(phase(t, "Phase2To3"), d, time.Now()); got != ModeDefault {
		t.Errorf("phase 2 mode = %s, want default", got)
	}
}

func TestDecide(t *testing.T) {
	first := time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC) // 01:00 New York: the 19th is overnight
	p2, p3, p4 := phase(t, "Phase2To3"), phase(t, "Phase3To4"), phase(t, "Phase4To5")
	p2deadline := *p2
	p2deadline.Timed = []config.TimedRule{{Reason: "deadline_exceeded", Enabled: config.On, MinCompleted: 1, After: 30 * time.Minute}}
	p2zero := p2deadline
	p2zero.Timed = []config.TimedRule{{Reason: "deadline_exceeded", Enabled: config.Off, MinCompleted: 1, After: 30 * time.Minute}}
	all3 := done("player_game_summary", "team_defense_game_summary", "team_offense_game_summary",
		"upcoming_player_game_context", "upcoming_team_game_context")
	all4 := done("team_defense_zone_analysis", "player_shot_zone_analysis", "player_composite_factors",
		"player_daily_cache", "ml_feature_store")
	four4 := done("team_defense_zone_analysis", "player_shot_zone_analysis", "player_composite_factors", "player_daily_cache")
	three4 := done("team_defense_zone_analysis", "player_shot_zone_analysis", "player_composite_factors")
	tests := []struct {
		name    string
		p       *config.Phase
		date    string
		done    map[string]bool
		elapsed time.Duration
		fire    bool
		reason  string
		partial bool
		missing int
	}{
		{"phase2 five of six waits", p2, "2026-01-19", done("bdl_player_boxscores", "bigdataball_play_by_play", "odds_api_game_lines", "nbac_schedule", "br_roster"), 3 * time.Hour, false, "", true, 1},
		{"phase2 all six", p2, "2026-01-19", done("bdl_player_boxscores", "bigdataball_play_by_play", "odds_api_game_lines", "nbac_schedule", "br_roster", "nbac_gamebook_player_stats"), 0, true, ReasonAllComplete, false, 0},
		{"deadline one second early", &p2deadline, "2026-01-19", done("br_roster"), 30*time.Minute - time.Second, false, "", true, 5},
		{"deadline exactly at", &p2deadline, "2026-01-19", done("br_roster"), 30 * time.Minute, true, "deadline_exceeded", true, 5},
		{"deadline flag off", &p2zero, "2026-01-19", done("br_roster"), 5 * time.Hour, false, "", true, 5},
		{"overnight all five", p3, "2026-01-19", all3, 0, true, ReasonAllComplete, false, 0},
		{"overnight critical plus 80", p3, "2026-01-19", done("player_game_summary", "upcoming_player_game_context", "team_defense_game_summary", "upcoming_team_game_context"), 0, true, "critical_plus_majority_80pct", true, 1},
		{"overnight critical plus 60", p3, "2026-01-19", done("player_game_summary", "upcoming_player_game_context", "team_defense_game_summary"), 0, true, "critical_plus_majority_60pct", true, 2},
		{"overnight critical only 40", p3, "2026-01-19", done("player_game_summary", "upcoming_player_game_context"), 0, false, "", true, 3},
		{"overnight majority without critical", p3, "2026-01-19", done("player_game_summary", "team_defense_game_summary", "team_offense_game_summary", "upcoming_team_game_context"), 0, false, "", true, 1},
		{"same day upcoming context", p3, "2026-01-20", done("upcoming_player_game_context"), 0, true, ReasonAllComplete, false, 4},
		{"same day other first arrival", p3, "2026-01-20", done("player_game_summary"), 0, false, "", true, 4},
		{"tomorrow upcoming context", p3, "2026-01-21", done("upcoming_player_game_context"), 0, true, ReasonAllComplete, false, 4},
		{"phase4 all", p4, "2026-01-19", all4, 0, true, ReasonAllComplete, false, 0},
		{"tier2 just before 1h", p4, "2026-01-19", four4, time.Hour - time.Nanosecond, false, "", true, 1},
		{"tier2 at 1h", p4, "2026-01-19", four4, time.Hour, true, "tier2_timeout", true, 1},
		{"three at 1h is below tier2", p4, "2026-01-19", three4, time.Hour, false, "", true, 2},
		{"tier3 at 2h", p4, "2026-01-19", three4, 2 * time.Hour, true, "tier3_timeout", true, 2},
		{"one at 3h59", p4, "2026-01-19", done("ml_feature_store"), 4*time.Hour - time.Minute, false, "", true, 4},
		{"max at 4h", p4, "2026-01-19", done("ml_feature_store"), 4 * time.Hour, true, "max_timeout", true, 4},
		{"four at 4h is tier2 first", p4, "2026-01-19", four4, 4 * time.Hour, true, "tier2_timeout", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := State{Completed: tt.done, FirstCompletion: first}
			d := Decide(tt.p, date(tt.date), st, first.Add(tt.elapsed))
			if d.Fire != tt.fire || d.Reason != tt.reason || d.IsPartial != tt.partial || len(d.Missing) != tt.missing {
				t.Fatalf("Decide = fire %v reason %q partial %v missing %v; want %v %q %v %d",
					d.Fire, d.Reason, d.IsPartial, d.Missing, tt.fire, tt.reason, tt.partial, tt.missing)
			}
		})
	}
}

func TestDecideNoClockWithoutCompletion(t *testing.T) {
	p := phase(t, "Phase4To5")
	d := Decide(p, date("2026-01-19"), State{Completed: map[string]bool{}}, time.Now())
	if d.Fire {
		t.Fatalf("fired with no completion: %+v", d)
	}
}

func TestDeadlinePercentageRollout(t *testing.T) {
	p := *phase(t, "Phase2To3")
	first := time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC)
	fired := 0
	for day := 0; day < 200; day++ {
		d := date("2026-01-01").AddDays(day)
		p.Timed = []config.TimedRule{{Reason: "deadline_exceeded", Enabled: config.Flag{Percent: 10}, MinCompleted: 1, After: time.Minute}}
		on := Decide(&p, d, State{Completed: done("br_roster"), FirstCompletion: first}, first.Add(time.Hour)).Fire
		if on != (config.Bucket(d.String()) < 10) {
			t.Fatalf("%s: fired %v, bucket %d", d, on, config.Bucket(d.String()))
		}
		if on {
			fired++
		}
		p.Timed[0].Enabled = config.Flag{Percent: 50}
		if on && !Decide(&p, d, State{Completed: done("br_roster"), FirstCompletion: first}, first.Add(time.Hour)).Fire {
			t.Fatalf("%s: on at 10%% but off at 50%%", d)
		}
	}
	if fired == 0 || fired > 60 {
		t.Fatalf("10%% fired on %d of 200 dates", fired)
	}
}
