package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/testenv"
)

const (
	night   = "2026-01-19"
	batchID = "batch_2026-01-19_1768870000"
)

// A shadow night (PHASEGATE_MODE=shadow): the same completions a live
// phasegate would trigger on — including a timed rule, a partial trigger's
// alert, a bad message and a batch — publish nothing, post nothing, and
// touch none of the running system's documents; every would-be trigger,
// completion and alert is kept whole in a shadow_ document that expires.
func TestShadowNightSendsNothing(t *testing.T) {
	e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
		c.Mode = config.ModeShadow
		p, _ := c.Phase("Phase2To3")
		p.Timed[0].Enabled = config.On
	}))
	var subs []*testenv.Sub
	for _, topic := range []string{"nba-phase3-trigger", "nba-phase4-trigger", "nba-predictions-trigger",
		"nba-phase5-predictions-complete", "orchestrator-dead-letter"} {
		subs = append(subs, e.Sub(topic))
	}
	ctx := context.Background()
	// The running coordinator's batch, which the shadow reads and must not write.
	live := map[string]any{"batch_id": batchID, "game_date": night, "expected_players": int64(3),
		"completed_players": []any{}, "total_predictions": int64(0), "is_complete": false,
		"start_time": e.Clock.Now(), "updated_at": e.Clock.Now(), "correlation_id": "p5-run"}
	if _, err := e.App.FS.Doc("prediction_batches/"+batchID).Set(ctx, live); err != nil {
		t.Fatal(err)
	}
	deliver := func(ep, id string, v any) {
		t.Helper()
		if c := e.Deliver(ep, id, v); c >= 300 {
			t.Fatalf("%s %s: status %d", ep, id, c)
		}
	}
	deliver("Phase2To3", "p2-1", apptest.Completion("BdlPlayerBoxscoresProcessor", night, "success"))
	for _, p := range []string{"PlayerGameSummaryProcessor", "UpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor"} {
		deliver("Phase3To4", "p3-"+p, apptest.Completion(p, night, "success"))
	}
	for _, p := range []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor", "PlayerCompositeFactorsProcessor",
		"PlayerDailyCacheProcessor", "MLFeatureStoreProcessor"} {
		deliver("Phase4To5", "p4-"+p, apptest.Completion(p, night, "success"))
	}
	deliver("Phase3To4", "bad", []byte("not json"))
	for _, p := range []string{"lebronjames", "stephencurry", "o'neal"} {
		deliver("PredictionCompletions", "w-"+p, map[string]any{"player_lookup": p, "game_date": night,
			"predictions_generated": 4, "batch_id": batchID})
	}
	e.Clock.Advance(31 * time.Minute)
	if c := e.PushOnce("Sweep", "sweep-1", map[string]any{}); c >= 300 {
		t.Fatalf("sweep: status %d", c)
	}

	for _, s := range subs {
		if got := s.Drain(t, time.Second); len(got) != 0 {
			t.Fatalf("shadow published %d messages: %s", len(got), got[0].Data)
		}
	}
	if posts := e.Slack.Posts(); len(posts) != 0 {
		t.Fatalf("shadow posted to Slack: %+v", posts)
	}
	for _, c := range []string{"phase2_completion", "phase3_completion", "phase4_completion"} {
		if d := e.Doc(c + "/" + night); d != nil {
			t.Fatalf("shadow wrote the running system's %s: %v", c, d)
		}
	}
	if got := e.Doc("prediction_batches/" + batchID); !reflect.DeepEqual(normal(got), normal(live)) {
		t.Fatalf("shadow changed the running coordinator's batch:\n%v\nwas\n%v", got, live)
	}

	// The would-be triggers, whole, in the shadow gate documents.
	want := map[string]string{"shadow_phase2_completion": "deadline_exceeded",
		"shadow_phase3_completion": "critical_plus_majority_60pct", "shadow_phase4_completion": "all_complete"}
	for coll, reason := range want {
		d := e.Doc(coll + "/" + night)
		var m gate.Message
		if err := json.Unmarshal([]byte(fmt.Sprint(d["_trigger_payload"])), &m); err != nil {
			t.Fatalf("%s: no trigger payload: %v", coll, d)
		}
		ids, _ := d["_published_message_ids"].([]any)
		if m.TriggerReason != reason || d["_triggered"] != true || len(ids) != 1 || ids[0] != app.ShadowMessageID {
			t.Fatalf("%s: trigger %+v, document %v", coll, m, d)
		}
		expiring(t, coll, d)
	}
	b := e.Doc("shadow_prediction_batches/" + batchID)
	if b["is_complete"] != true || b["completion_status"] != "success" || b["completion_payload"] == nil || b["expected_players"] != int64(3) {
		t.Fatalf("shadow batch = %v", b)
	}
	expiring(t, "shadow_prediction_batches", b)
	// The partial triggers' alerts, whole, in the shadow effect log:
	// recorded, never performed, never owed.
	alerts, err := e.App.FS.Collection("shadow_orchestrator_effects").Where("kind", "==", "slack").Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) < 2 {
		t.Fatalf("%d shadow alerts, want the phase 2 and phase 3 partial triggers' at least", len(alerts))
	}
	for _, a := range alerts {
		var al alert.Alert
		data, _ := a.Data()["data"].([]byte)
		if err := json.Unmarshal(data, &al); err != nil || al.Title == "" || a.Data()["state"] != "shadow" {
			t.Fatalf("alert not kept whole: %v (%v)", a.Data(), err)
		}
		expiring(t, "shadow_orchestrator_effects", a.Data())
	}
	for _, c := range []string{"orchestrator_effects", "orchestrator_generations", "pubsub_deduplication", "orchestrator_health"} {
		if docs, _ := e.App.FS.Collection(c).Limit(1).Documents(ctx).GetAll(); len(docs) != 0 {
			t.Fatalf("shadow wrote the live %s", c)
		}
	}
	for _, c := range []string{"shadow_pubsub_deduplication", "shadow_orchestrator_health"} {
		if docs, _ := e.App.FS.Collection(c).Limit(1).Documents(ctx).GetAll(); len(docs) == 0 {
			t.Fatalf("shadow wrote nothing to %s", c)
		}
	}
}

func expiring(t *testing.T, coll string, d map[string]any) {
	t.Helper()
	if exp, ok := d[config.ExpiresField].(time.Time); !ok || !exp.After(apptest.Start.Add(24*time.Hour)) {
		t.Fatalf("%s: %s = %v, want a TTL in the future", coll, config.ExpiresField, d[config.ExpiresField])
	}
}

// normal makes the emulator's values comparable with what was written.
func normal(d map[string]any) string {
	out := map[string]string{}
	for k, v := range d {
		if tm, ok := v.(time.Time); ok {
			v = tm.UTC().Format(time.RFC3339Nano)
		}
		out[k] = fmt.Sprint(v)
	}
	return fmt.Sprint(out)
}
