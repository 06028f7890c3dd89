package gate_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/civil"
	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/bqtest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
)

var night = gamedate.Date{Year: 2026, Month: 1, Day: 19}

// seedCheck creates every table of a phase's default check, each with a
// row on another date, and rows for date in those named.
func seedCheck(t *testing.T, bq *bqtest.Env, phase string, date gamedate.Date, withRows ...string) {
	t.Helper()
	p, _ := config.Default().Phase(phase)
	for _, tb := range p.DataCheck.Tables {
		ds, name, _ := strings.Cut(tb.Table, ".")
		bq.Table(t, ds, name, tb.DateColumn)
		bq.Rows(t, ds, name, tb.DateColumn, civil.Date(date.AddDays(-1)), 1)
		if slices.Contains(withRows, tb.Table) {
			bq.Rows(t, ds, name, tb.DateColumn, civil.Date(date), 4)
		}
	}
}

func dataCheck(t *testing.T, e *apptest.Env, path string) map[string]any {
	t.Helper()
	dc, _ := e.Doc(path)["_data_check"].(map[string]any)
	return dc
}

func slackPaths(e *apptest.Env) []string {
	var out []string
	for _, p := range e.Slack.Delivered() {
		out = append(out, p.Path)
	}
	return out
}

// An R-006 block on an empty critical table holds phase 5; once the rows
// arrive the sweep triggers it: one trigger, one blocked alert, one
// resolved alert, and the history table has the block and the trigger once
// each, however often the completions are redelivered.
func TestR006BlockResolvedBySweep(t *testing.T) {
	bq := bqtest.Start(t)
	bq.HistoryTable(t)
	seedCheck(t, bq, "phase4_to_phase5", night, "nba_predictions.ml_feature_store_v2",
		"nba_precompute.player_composite_factors", "nba_precompute.player_shot_zone_analysis",
		"nba_precompute.team_defense_zone_analysis")
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project))
	sub := e.Sub("nba-predictions-trigger")
	for round := range 2 { // the second round is every message redelivered
		for _, p := range phase4 {
			if c := e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, night.String(), "success")); c >= 300 {
				t.Fatalf("round %d %s: status %d", round, p, c)
			}
		}
	}
	if got := sub.Drain(t, time.Second); len(got) != 0 {
		t.Fatalf("a blocked gate published %d triggers", len(got))
	}
	dc := dataCheck(t, e, "phase4_completion/"+night.String())
	if dc["status"] != "blocked" || !slices.Equal(toStrings(dc["missing"]), []string{"nba_precompute.player_daily_cache"}) {
		t.Fatalf("_data_check = %v, want blocked on player_daily_cache", dc)
	}
	if counts, _ := dc["counts"].(map[string]any); counts["nba_predictions.ml_feature_store_v2"] != int64(4) {
		t.Fatalf("_data_check.counts = %v", dc["counts"])
	}
	st, err := e.App.Status.Dates(context.Background(), []gamedate.Date{night})
	if err != nil {
		t.Fatal(err)
	}
	if shown := st[0].Phases[2].DataCheck; shown == nil || shown.Status != "blocked" ||
		!slices.Equal(shown.Missing, []string{"nba_precompute.player_daily_cache"}) || shown.Counts["nba_predictions.ml_feature_store_v2"] != 4 {
		t.Fatalf("Status shows data_check %+v", shown)
	}

	// A sweep while still blocked changes nothing and alerts nothing new.
	e.Clock.Advance(5 * time.Minute)
	if r, err := e.App.Sweeper.Run(context.Background()); err != nil || len(r.Triggered) != 0 || r.Blocked != 1 {
		t.Fatalf("sweep while blocked: %+v, %v", r, err)
	}
	bq.Rows(t, "nba_precompute", "player_daily_cache", "cache_date", civil.Date(night), 3)
	e.Clock.Advance(5 * time.Minute)
	r, err := e.App.Sweeper.Run(context.Background())
	if err != nil || len(r.Triggered) != 1 {
		t.Fatalf("sweep after the rows arrived: %+v, %v", r, err)
	}
	for range 2 { // later sweeps and redeliveries add nothing
		e.Clock.Advance(5 * time.Minute)
		if r, err := e.App.Sweeper.Run(context.Background()); err != nil || len(r.Triggered) != 0 {
			t.Fatalf("later sweep: %+v, %v", r, err)
		}
		e.Deliver("Phase4To5", "m-"+phase4[0], apptest.Completion(phase4[0], night.String(), "success"))
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 1 {
		t.Fatalf("%d triggers, want 1", len(got))
	}
	m := got[0]
	if !m.DataFreshnessVerified || len(m.MissingTables) != 0 || m.TableRowCounts["nba_precompute.player_daily_cache"] != 3 ||
		len(m.TableRowCounts) != 5 || m.DataCheck != "passed" || m.ParentProcessor != "Phase4OrchestratorSweep" {
		t.Fatalf("trigger = %+v", m)
	}
	if paths := slackPaths(e); !slices.Equal(paths, []string{"/error", "/warning"}) {
		t.Fatalf("slack posts to %v, want the blocked alert then its resolution", paths)
	}
	if dc := dataCheck(t, e, "phase4_completion/"+night.String()); dc["status"] != "passed" {
		t.Fatalf("_data_check after = %v", dc)
	}
	if n := bq.HistoryRows(t, "phase4_to_phase5", "complete"); n != 1 {
		t.Fatalf("%d history rows for the trigger, want 1", n)
	}
	if n := bq.HistoryRows(t, "phase4_to_phase5", "blocked"); n != 1 {
		t.Fatalf("%d history rows for the block, want 1", n)
	}
}

// Only two of five R-006 tables hold rows, the critical pair: blocked.
func TestR006BlocksOnTwoOfFive(t *testing.T) {
	bq := bqtest.Start(t)
	seedCheck(t, bq, "phase4_to_phase5", night, "nba_predictions.ml_feature_store_v2", "nba_precompute.player_daily_cache")
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), apptest.WithConfig(func(c *config.Config) {
		c.BigQuery.History = false
	}))
	for _, p := range phase4 {
		e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, night.String(), "success"))
	}
	dc := dataCheck(t, e, "phase4_completion/"+night.String())
	if dc["status"] != "blocked" || len(toStrings(dc["missing"])) != 3 {
		t.Fatalf("_data_check = %v, want blocked with 3 missing", dc)
	}
	// The operator goes on by hand: the check is skipped, and the message says so.
	sub := e.Sub("nba-predictions-trigger")
	out, err := e.App.Gates[2].Evaluate(context.Background(), night, gate.SourceManual, nil)
	if err != nil || out.TriggerID == "" {
		t.Fatalf("manual trigger: %+v, %v", out, err)
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 1 || got[0].DataCheck != "skipped_manual" || got[0].DataFreshnessVerified {
		t.Fatalf("manual trigger = %+v", got)
	}
	// The block is over: its alert is resolved, once.
	if _, err := e.App.Sweeper.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if paths := slackPaths(e); !slices.Equal(paths, []string{"/error", "/warning"}) {
		t.Fatalf("slack posts to %v, want the block and its resolution", paths)
	}
}

// Same-day phase 3 needs only upcoming_player_game_context: the box score
// summaries of games not yet played must not block it.
func TestSameDayPhase3NotBlockedByTomorrowsTables(t *testing.T) {
	bq := bqtest.Start(t)
	today := gamedate.Today(apptest.Start)
	seedCheck(t, bq, "phase3_to_phase4", today, "nba_analytics.upcoming_player_game_context")
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), apptest.WithConfig(func(c *config.Config) {
		c.BigQuery.History = false
	}))
	sub := e.Sub("nba-phase4-trigger")
	if c := e.Deliver("Phase3To4", "m1", apptest.Completion("AsyncUpcomingPlayerGameContextProcessor", today.String(), "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 1 || got[0].Mode != "same_day" || !got[0].DataFreshnessVerified ||
		len(got[0].TableRowCounts) != 1 || got[0].TableRowCounts["nba_analytics.upcoming_player_game_context"] != 4 {
		t.Fatalf("same-day trigger = %+v", got)
	}
}

// After the maximum wait, proceed triggers unverified; stay_blocked raises
// one error alert and keeps holding.
func TestMaxWait(t *testing.T) {
	for _, after := range []string{config.AfterProceed, config.AfterStayBlocked} {
		t.Run(after, func(t *testing.T) {
			bq := bqtest.Start(t)
			seedCheck(t, bq, "phase4_to_phase5", night) // nothing for the date
			e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), apptest.WithConfig(func(c *config.Config) {
				c.BigQuery.History = false
				p, _ := c.Phase("Phase4To5")
				p.DataCheck.MaxWait, p.DataCheck.AfterMaxWait = time.Hour, after
			}))
			sub := e.Sub("nba-predictions-trigger")
			for _, p := range phase4 {
				e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, night.String(), "success"))
			}
			for range 3 {
				e.Clock.Advance(30 * time.Minute)
				if _, err := e.App.Sweeper.Run(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			got := triggers(t, sub.Drain(t, time.Second))
			paths := slackPaths(e)
			switch after {
			case config.AfterProceed:
				if len(got) != 1 || got[0].DataFreshnessVerified || got[0].DataCheck != "proceeded_after_max_wait" || len(got[0].MissingTables) != 5 {
					t.Fatalf("triggers = %+v", got)
				}
			default:
				if len(got) != 0 {
					t.Fatalf("stay_blocked published %+v", got)
				}
				if dc := dataCheck(t, e, "phase4_completion/"+night.String()); dc["gave_up"] != true {
					t.Fatalf("_data_check = %v", dc)
				}
			}
			if !slices.Equal(paths, []string{"/error", "/error"}) && after == config.AfterStayBlocked {
				t.Fatalf("slack posts to %v, want the block and the max-wait alert", paths)
			}
			if after == config.AfterStayBlocked {
				// An operator goes on by hand: both alerts are resolved.
				if _, err := e.App.Gates[2].Evaluate(context.Background(), night, gate.SourceManual, nil); err != nil {
					t.Fatal(err)
				}
				paths = slackPaths(e)
			}
			// The block ended (proceeded, or triggered by hand): nothing is
			// left open.
			want := map[string][]string{config.AfterProceed: {"/error", "/error", "/warning"},
				config.AfterStayBlocked: {"/error", "/error", "/warning", "/warning"}}[after]
			if !slices.Equal(sortedCopy(paths), want) {
				t.Fatalf("slack posts to %v, want %v", paths, want)
			}
		})
	}
}

// BigQuery failing is an error state that holds the trigger, alerts once,
// and is retried by the sweep; nothing is published without a decision.
// The fake answers every BigQuery request with a 500; no SQL runs in it.
func TestBigQueryFailureHoldsAndRetries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"code":500,"message":"backend error"}}`)
	}))
	defer srv.Close()
	e := apptest.New(t, apptest.WithBigQuery(srv.URL, "p"), apptest.WithConfig(func(c *config.Config) {
		c.BigQuery.QueryTimeout = time.Second
		c.BigQuery.History = false
	}))
	sub := e.Sub("nba-predictions-trigger")
	for _, p := range phase4 {
		if c := e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, night.String(), "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	dc := dataCheck(t, e, "phase4_completion/"+night.String())
	if dc["status"] != "error" || dc["error"] == nil {
		t.Fatalf("_data_check = %v, want error", dc)
	}
	before := e.Metrics.Get("datacheck.queries")
	e.Clock.Advance(5 * time.Minute)
	if r, err := e.App.Sweeper.Run(context.Background()); err != nil || r.Blocked != 1 {
		t.Fatalf("sweep: %+v, %v", r, err)
	}
	if e.Metrics.Get("datacheck.queries") != before+1 {
		t.Fatalf("the sweep did not retry the check")
	}
	if got := sub.Drain(t, time.Second); len(got) != 0 {
		t.Fatalf("published %d triggers without a decision", len(got))
	}
	if paths := slackPaths(e); !slices.Equal(paths, []string{"/error"}) {
		t.Fatalf("slack posts to %v, want one error alert", paths)
	}
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// History rows the request could not write wait for the sweep, and a row
// whose insert may already have reached BigQuery (its performer died before
// recording it) is looked for, not inserted twice.
func TestHistoryWaitsForTheSweepAndIsNotDoubled(t *testing.T) {
	bq := bqtest.Start(t)
	seedCheck(t, bq, "phase4_to_phase5", night, "nba_predictions.ml_feature_store_v2", "nba_precompute.player_daily_cache",
		"nba_precompute.player_composite_factors", "nba_precompute.player_shot_zone_analysis", "nba_precompute.team_defense_zone_analysis")
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project))
	// No history table yet: the request's insert fails and the row waits.
	for _, p := range phase4 {
		if c := e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, night.String(), "success")); c >= 300 {
			t.Fatalf("%s: status %d (a history failure must not fail the event)", p, c)
		}
	}
	key := "row:phase4_to_phase5:" + night.String() + ":1"
	row := e.Effect(key)
	if row["state"] != "owed" {
		t.Fatalf("history row effect = %v, want owed", row)
	}
	bq.HistoryTable(t)
	e.Clock.Advance(time.Minute)
	if r, err := e.App.Sweeper.Run(context.Background()); err != nil || r.Effects.Performed != 1 {
		t.Fatalf("sweep: %+v, %v", r, err)
	}
	// As if the sweep died after the insert and before recording it.
	ref := e.App.Effects.Ref(row["id"].(string))
	if _, err := ref.Update(context.Background(), []firestore.Update{{Path: "state", Value: "owed"},
		{Path: "due_at", Value: e.Clock.Now()}, {Path: "tries", Value: int64(5)}}); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(time.Minute)
	if _, err := e.App.Sweeper.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := bq.HistoryRows(t, "phase4_to_phase5", "complete"); n != 1 {
		t.Fatalf("%d history rows, want 1", n)
	}
	if doc := e.Effect(key); doc["state"] != "done" || doc["ref"] != "found" {
		t.Fatalf("history row effect = %v, want done, found", doc)
	}
}

// R-007 only monitors: an empty raw table never holds phase 3; the trigger
// says so and one warning goes out.
func TestR007MonitorsWithoutHolding(t *testing.T) {
	bq := bqtest.Start(t)
	seedCheck(t, bq, "phase2_to_phase3", night, "nba_raw.nbac_gamebook_player_stats", "nba_raw.nbac_team_boxscore",
		"nba_raw.odds_api_game_lines", "nba_raw.nbac_schedule") // no play-by-play
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), apptest.WithConfig(func(c *config.Config) {
		c.BigQuery.History = false
	}))
	sub := e.Sub("nba-phase3-trigger")
	for _, p := range []string{"BdlPlayerBoxscoresProcessor", "BigDataBallPbpProcessor", "OddsApiGameLinesBatchProcessor",
		"NbacScheduleProcessor", "NbacGamebookProcessor", "BrRostersCurrentProcessor"} {
		if c := e.Deliver("Phase2To3", "m-"+p, apptest.Completion(p, night.String(), "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 1 || got[0].DataFreshnessVerified || got[0].DataCheck != "monitor_missing" ||
		!slices.Equal(got[0].MissingTables, []string{"nba_raw.bigdataball_play_by_play"}) {
		t.Fatalf("triggers = %+v, want one, unverified, missing play-by-play", got)
	}
	if paths := slackPaths(e); !slices.Equal(paths, []string{"/warning"}) {
		t.Fatalf("slack posts to %v, want one warning", paths)
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
