package sweep_test

import (
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
)

// late_arrival on: the sweep's tier trigger fails to publish and stays
// owed; the last missing processor's event publishes it.
// Every processor is then in and the published trigger was partial, so the
// supplemental late_arrival trigger is owed — and nothing else would send
// it: the sweep no longer visits a confirmed gate and no redelivery is
// pending.
func TestLateArrivalAfterResumedTrigger(t *testing.T) {
	// Two failures: the sweep's gate pass, then its pass over the effect log.
	e := apptest.New(t, apptest.FailPublishes("nba-predictions-trigger", 2), apptest.WithConfig(func(c *config.Config) {
		p, _ := c.Phase("Phase4To5")
		p.LateArrival = true
	}))
	sub := e.Sub("nba-predictions-trigger")
	for _, p := range []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor",
		"PlayerCompositeFactorsProcessor", "PlayerDailyCacheProcessor"} {
		if c := e.PushOnce("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	e.Clock.Advance(time.Hour)
	sweepOnce(t, e) // tier2 claimed, publish fails, owed
	if doc := e.Doc("phase4_completion/2026-01-19"); doc["_trigger_state"] != "claimed" {
		t.Fatalf("after the sweep: state %v", doc["_trigger_state"])
	}
	if c := e.PushOnce("Phase4To5", "m-last", apptest.Completion("MLFeatureStoreProcessor", "2026-01-19", "success")); c >= 300 {
		t.Fatalf("last: status %d", c)
	}
	sweepOnce(t, e)
	got := sub.Drain(t, time.Second)
	if len(got) != 2 {
		t.Fatalf("got %d triggers, want tier2 and late_arrival", len(got))
	}
	if m := decode(t, got[1].Data); m.TriggerReason != "late_arrival" || m.TriggerID != "phase4_to_phase5:2026-01-19:2" {
		t.Fatalf("second trigger = %+v", m)
	}
}
