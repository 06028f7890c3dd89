package sweep_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/bqtest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/history"
)

// What the revision before the effect log leaves behind when the new one
// is deployed — an alert its outbox still owes, a trigger and a batch
// completion it claimed and did not publish — is finished by the first
// sweep, once each.
func TestUpgradeFinishesWhatTheEarlierRevisionOwed(t *testing.T) {
	e := apptest.New(t)
	ctx := context.Background()
	trig := e.Sub("nba-predictions-trigger")
	done := e.Sub("nba-phase5-predictions-complete")
	past := e.Clock.Now().Add(-time.Hour)
	put := func(path string, doc map[string]any) {
		t.Helper()
		if _, err := e.App.FS.Doc(path).Create(ctx, doc); err != nil {
			t.Fatal(err)
		}
	}

	// An alert the earlier revision recorded and could not deliver.
	key := "phase3_to_phase4:2026-01-18:critical_plus_majority_60pct"
	sum := sha256.Sum256([]byte(key))
	put("orchestrator_alerts/"+hex.EncodeToString(sum[:]), map[string]any{
		"key": key, "severity": "error", "title": "phase3_to_phase4 went on without data (critical_plus_majority_60pct)",
		"phase": "phase3_to_phase4", "game_date": "2026-01-18", "reason": "critical_plus_majority_60pct",
		"completed": 3, "expected": 5, "missing": []string{"team_offense_game_summary"}, "elapsed_ms": 60000,
		"detail": "", "state": "pending", "created_at": past, "attempts": 1, "waiting_since": past, "sending_until": past,
	})

	// A trigger it claimed, whose publish failed (released).
	msg := gate.Message{GameDate: "2026-01-19", CorrelationID: "night", TriggerSource: "orchestrator",
		TriggeredBy: "phase4_to_phase5_orchestrator", ParentProcessor: "Phase4Orchestrator", UpstreamProcessorsCount: 5,
		ExpectedProcessors: []string{}, CompletedProcessors: []string{}, MissingProcessors: []string{},
		TriggerReason: "all_complete", TriggerID: "phase4_to_phase5:2026-01-19:1", Mode: "default",
		Timestamp: past.Format(time.RFC3339), MissingTables: []string{}, TableRowCounts: map[string]int64{}, DataCheck: "off"}
	payload, _ := json.Marshal(msg)
	gdoc := map[string]any{"_completed_count": 5, "_first_completion_at": past, "_triggered": false, "_open": true,
		"_trigger_state": "released", "_trigger_generation": int64(1), "_trigger_id": msg.TriggerID,
		"_trigger_payload": string(payload), "_trigger_partial": false, "_trigger_reason": "all_complete", "_mode": "default",
		"_publish_failures": int64(1), "_correlation_id": "night"}
	for _, p := range []string{"team_defense_zone_analysis", "player_shot_zone_analysis", "player_composite_factors",
		"player_daily_cache", "ml_feature_store"} {
		gdoc[p] = map[string]any{"status": "success", "completed_at": past, "correlation_id": "night", "execution_id": "e-" + p}
	}
	put("phase4_completion/2026-01-19", gdoc)

	// A batch completion it claimed and did not confirm, its lease gone.
	completion := `{"processor_name":"PredictionCoordinator","phase":"phase_5_predictions","execution_id":"b-old",` +
		`"correlation_id":"night","game_date":"2026-01-19","status":"success","record_count":10,"timestamp":"2026-01-20T05:00:00Z",` +
		`"metadata":{"batch_id":"b-old","expected_players":2,"completed_players":2,"total_predictions":10,"completion_pct":100,"completed_predictions":10}}`
	put("prediction_batches/b-old", map[string]any{"batch_id": "b-old", "game_date": "2026-01-19", "expected_players": 2,
		"completed_players": []string{"a", "b"}, "total_predictions": 10, "is_complete": false, "start_time": past,
		"updated_at": past, "correlation_id": "night", "completion_state": "claimed", "completion_claim_token": "old",
		"completion_claim_expires_at": past, "completion_payload": completion, "completion_status": "success",
		"completion_reason": "all_players", "counter_shard_count": 16})

	sweepOnce(t, e)
	sweepOnce(t, e)

	if got := trig.Drain(t, time.Second); len(got) != 1 || string(got[0].Data) != string(payload) {
		t.Fatalf("triggers: %d, want the claimed message once, byte for byte", len(got))
	}
	if d := e.Doc("phase4_completion/2026-01-19"); d["_triggered"] != true || d["_trigger_state"] != "published" || d["_open"] != false {
		t.Fatalf("gate after: %v %v %v", d["_triggered"], d["_trigger_state"], d["_open"])
	}
	if got := done.Drain(t, time.Second); len(got) != 1 || string(got[0].Data) != completion {
		t.Fatalf("batch completions: %d, want the claimed one once", len(got))
	}
	if d := e.Doc("prediction_batches/b-old"); d["is_complete"] != true || d["completion_state"] != "published" {
		t.Fatalf("batch after: %v %v", d["is_complete"], d["completion_state"])
	}
	posts := e.Slack.Delivered()
	if len(posts) != 1 || !strings.Contains(posts[0].Text, "went on without data") {
		t.Fatalf("slack %+v, want the owed alert once", posts)
	}
	if d := e.Doc("orchestrator_alerts/" + hex.EncodeToString(sum[:])); d["sending_until"] != nil || d["moved_to_effects_at"] == nil {
		t.Fatalf("the old outbox document still owes: %v", d)
	}
}

// A history row the earlier revision's outbox owes, which its sender may
// already have inserted: taken over, looked for, never doubled.
func TestUpgradeTakesOverTheHistoryOutbox(t *testing.T) {
	bq := bqtest.Start(t)
	bq.HistoryTable(t)
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project),
		apptest.WithConfig(func(c *config.Config) { c.BigQuery.DataChecks = config.Off }))
	ctx := context.Background()
	past := e.Clock.Now().Add(-time.Hour)
	rows := map[string]bool{"phase2_to_phase3:2026-01-18:1": true, "phase2_to_phase3:2026-01-17:1": false} // inserted before?
	for key, inserted := range rows {
		date := strings.Split(key, ":")[1]
		meta := `{"history_key":"` + key + `"}`
		if _, err := e.App.FS.Doc("orchestrator_history/"+docid.Encode(key)).Create(ctx, map[string]any{
			"key": key, "execution_timestamp": past, "phase_name": "phase2_to_phase3", "game_date": date,
			"start_time": past, "duration_seconds": 60.0, "status": "complete", "correlation_id": "night", "metadata": meta,
			"state": "pending", "pending_until": past, "attempts": int64(1), "created_at": past,
		}); err != nil {
			t.Fatal(err)
		}
		if inserted {
			d, _ := civil.ParseDate(date)
			row := &bigquery.ValuesSaver{Schema: history.Schema, InsertID: key, Row: []bigquery.Value{past, "phase2_to_phase3", d,
				past, 60.0, bigquery.NullInt64{}, "complete", "night", meta, past}}
			if err := bq.Client.Dataset("nba_orchestration").Table("phase_execution_log").Inserter().Put(bqtest.Ctx(t), row); err != nil {
				t.Fatal(err)
			}
		}
	}
	sweepOnce(t, e)
	sweepOnce(t, e)
	if n := bq.HistoryRows(t, "phase2_to_phase3", "complete"); n != 2 {
		t.Fatalf("%d history rows, want one per key", n)
	}
}

// A row effect the revision before rows carried their incarnation owed,
// whose performer died after inserting it: looked for by its key alone, as
// that revision named it, and not inserted again.
func TestUpgradeFindsARowOwedWithoutIncarnation(t *testing.T) {
	bq := bqtest.Start(t)
	bq.HistoryTable(t)
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project),
		apptest.WithConfig(func(c *config.Config) { c.BigQuery.DataChecks = config.Off }))
	ctx := context.Background()
	d, _ := gamedate.Parse("2026-01-18")
	key := "phase2_to_phase3:2026-01-18:1"
	ef := history.Effect(history.Row{Key: key, ExecutionTimestamp: e.Clock.Now(), PhaseName: "phase2_to_phase3",
		GameDate: d, Status: "complete", CorrelationID: "night"}, e.App.History.Table(), "inc-old")
	var data map[string]any
	if err := json.Unmarshal(ef.Data, &data); err != nil {
		t.Fatal(err)
	}
	meta := `{"history_key":"` + key + `"}` // as the earlier revision wrote it
	data["metadata"] = meta
	ef.Data, _ = json.Marshal(data)
	if _, err := effect.Commit(ctx, e.App.FS, e.App.Effects.Owe(e.Clock.Now(), ef)...); err != nil {
		t.Fatal(err)
	}
	now := e.Clock.Now()
	row := &bigquery.ValuesSaver{Schema: history.Schema, InsertID: key, Row: []bigquery.Value{now, "phase2_to_phase3",
		civil.Date(d), now, 0.0, bigquery.NullInt64{}, "complete", "night", meta, now}}
	if err := bq.Client.Dataset("nba_orchestration").Table("phase_execution_log").Inserter().Put(bqtest.Ctx(t), row); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(10 * time.Minute) // its performer's lease is long gone
	sweepOnce(t, e)
	if n := bq.HistoryRows(t, "phase2_to_phase3", "complete"); n != 1 {
		t.Fatalf("%d history rows, want the one already inserted", n)
	}
	if e.Metrics.Get("history.already_written") != 1 {
		t.Fatalf("the row was not looked for: %v", e.Metrics.Snapshot())
	}
}
