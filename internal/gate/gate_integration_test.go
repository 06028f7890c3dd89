package gate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var phase4 = []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor",
	"PlayerCompositeFactorsProcessor", "PlayerDailyCacheProcessor", "MLFeatureStoreProcessor"}

func triggers(t *testing.T, msgs []*pubsubpb.PubsubMessage) []gate.Message {
	t.Helper()
	var out []gate.Message
	for _, m := range msgs {
		var g gate.Message
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatalf("trigger is not JSON: %v", err)
		}
		if m.Attributes["trigger_id"] != g.TriggerID || m.Attributes["game_date"] != g.GameDate {
			t.Fatalf("attributes %v disagree with body %+v", m.Attributes, g)
		}
		out = append(out, g)
	}
	return out
}

// Five processors, each delivered three times, all at once: one trigger.
func TestConcurrentDuplicatesTriggerOnce(t *testing.T) {
	e := apptest.New(t)
	sub := e.Sub("nba-predictions-trigger")
	var wg sync.WaitGroup
	codes := make(chan int, 15)
	for _, p := range phase4 {
		for i := range 3 {
			wg.Go(func() {
				// The same Pub/Sub message redelivered: same id, same content.
				codes <- e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success"))
				_ = i
			})
		}
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c >= 300 {
			t.Fatalf("a delivery ended with %d", c)
		}
	}
	got := triggers(t, sub.Drain(t, 2*time.Second))
	if len(got) != 1 {
		t.Fatalf("got %d triggers, want 1: %+v", len(got), got)
	}
	g := got[0]
	if g.TriggerID != "phase4_to_phase5:2026-01-19:1" || g.TriggerReason != "all_complete" || g.IsPartial ||
		g.UpstreamProcessorsCount != 5 || len(g.MissingProcessors) != 0 || g.Mode != "default" ||
		g.TriggeredBy != "phase4_to_phase5_orchestrator" || g.ParentProcessor != "Phase4Orchestrator" {
		t.Fatalf("trigger = %+v", g)
	}
	doc := e.Doc("phase4_completion/2026-01-19")
	if doc["_triggered"] != true || doc["_completed_count"] != int64(5) || doc["_trigger_state"] != "published" {
		t.Fatalf("gate document: %v", doc)
	}
}

// The publish fails once after the state commit: the 5xx's redelivery
// publishes exactly one trigger, with the trigger_id the claim chose.
func TestPublishFailureAfterCommitRedelivered(t *testing.T) {
	e := apptest.New(t, apptest.FailPublishes("nba-predictions-trigger", 1))
	sub := e.Sub("nba-predictions-trigger")
	for _, p := range phase4[:4] {
		if c := e.PushOnce("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c != 204 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	last := apptest.Completion(phase4[4], "2026-01-19", "success")
	if c := e.PushOnce("Phase4To5", "m-last", last); c != 500 {
		t.Fatalf("first attempt with a failing publish: status %d, want 500", c)
	}
	doc := e.Doc("phase4_completion/2026-01-19")
	if doc["_triggered"] != false || doc["_trigger_state"] != "claimed" || doc["_trigger_id"] != "phase4_to_phase5:2026-01-19:1" {
		t.Fatalf("after the failed publish: %v", doc)
	}
	// Owed, and due again at once: the redelivery need not wait for a lease.
	if eff := e.Effect("trigger:phase4_to_phase5:2026-01-19:1"); eff["state"] != "owed" || eff["failures"] != int64(1) {
		t.Fatalf("the trigger's effect after the failed publish: %v", eff)
	}
	if c := e.PushOnce("Phase4To5", "m-last", last); c != 200 && c != 204 {
		t.Fatalf("redelivery: status %d", c)
	}
	got := triggers(t, sub.Drain(t, 2*time.Second))
	if len(got) != 1 || got[0].TriggerID != "phase4_to_phase5:2026-01-19:1" {
		t.Fatalf("triggers = %+v, want one with generation 1", got)
	}
	if doc := e.Doc("phase4_completion/2026-01-19"); doc["_triggered"] != true {
		t.Fatalf("not confirmed: %v", doc)
	}
}

// A date already triggered with a partial manifest, then the missing
// processor: no second trigger (late_arrival is off), the late one recorded.
func TestLateProcessorAfterTrigger(t *testing.T) {
	e := apptest.New(t)
	sub := e.Sub("nba-phase4-trigger")
	for _, p := range []string{"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor",
		"TeamDefenseGameSummaryProcessor"} {
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	first := triggers(t, sub.Drain(t, time.Second))
	if len(first) != 1 || first[0].TriggerReason != "critical_plus_majority_60pct" || !first[0].IsPartial ||
		first[0].Mode != "overnight" || first[0].UpstreamProcessorsCount != 3 ||
		fmt.Sprint(first[0].MissingProcessors) != "[team_offense_game_summary upcoming_team_game_context]" {
		t.Fatalf("first trigger = %+v", first)
	}
	for _, p := range []string{"TeamOffenseGameSummaryProcessor", "UpcomingTeamGameContextProcessor"} {
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("late %s: status %d", p, c)
		}
	}
	if more := sub.Drain(t, time.Second); len(more) != 0 {
		t.Fatalf("late processor triggered again: %d messages", len(more))
	}
	posts := e.Slack.Delivered()
	if len(posts) != 2 || posts[0].Path != "/error" || posts[1].Path != "/warning" {
		t.Fatalf("slack posts = %+v, want the partial alert then its resolution", posts)
	}
	doc := e.Doc("phase3_completion/2026-01-19")
	late, _ := doc["_late_processors"].([]any)
	if fmt.Sprint(late) != "[team_offense_game_summary upcoming_team_game_context]" || doc["_completed_count"] != int64(5) {
		t.Fatalf("gate document: late %v count %v", late, doc["_completed_count"])
	}
}

// An instance dies between the publish and the commit that records it
// done: the trigger stays owed; the redelivery, on another instance, is
// refused while the dead one's lease lives and finishes it once it expires.
// The consumer sees copies only with the one trigger_id.
func TestCrashBetweenPublishAndConfirm(t *testing.T) {
	f := apptest.NewFaults()
	e := apptest.New(t, f.Option(t))
	sub := e.Sub("nba-predictions-trigger")
	for _, p := range phase4[:4] {
		e.PushOnce("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success"))
	}
	f.At(effect.Collection, 1, apptest.DieBefore) // the claim's commit, then the publish's "done"
	last := apptest.Completion(phase4[4], "2026-01-19", "success")
	if c := e.PushOnce("Phase4To5", "m-last", last); c < 500 {
		t.Fatalf("crashing attempt: status %d", c)
	}
	if !f.Hit() {
		t.Fatal("the instance did not die")
	}
	e = e.On(e.Instance())
	if c := e.PushOnce("Phase4To5", "m-last", last); c != 500 {
		t.Fatalf("redelivery inside the lease: status %d, want 500 (trigger in flight)", c)
	}
	e.Clock.Advance(e.Cfg.Gate.ClaimLease)
	if c := e.PushOnce("Phase4To5", "m-last", last); c >= 300 {
		t.Fatalf("redelivery after the lease: status %d", c)
	}
	got := triggers(t, sub.Drain(t, 2*time.Second))
	if len(got) != 2 || got[0].TriggerID != got[1].TriggerID || string(mustJSON(got[0])) != string(mustJSON(got[1])) {
		t.Fatalf("want the same trigger twice (crash window), got %+v", got)
	}
	if doc := e.Doc("phase4_completion/2026-01-19"); doc["_triggered"] != true || doc["_open"] != false {
		t.Fatalf("not confirmed: %v", doc)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// With late_arrival configured, the processors a partial trigger went
// without produce one supplemental trigger, generation 2, once all are in.
func TestLateArrivalSupplementalTrigger(t *testing.T) {
	e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
		p, _ := c.Phase("Phase3To4")
		p.LateArrival = true
	}))
	sub := e.Sub("nba-phase4-trigger")
	for _, p := range []string{"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor",
		"TeamDefenseGameSummaryProcessor", "TeamOffenseGameSummaryProcessor"} {
		e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-19", "success"))
	}
	e.Deliver("Phase3To4", "m-last", apptest.Completion("UpcomingTeamGameContextProcessor", "2026-01-19", "success"))
	e.Deliver("Phase3To4", "m-last", apptest.Completion("UpcomingTeamGameContextProcessor", "2026-01-19", "success"))
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 2 {
		t.Fatalf("got %d triggers, want the partial one and one supplemental", len(got))
	}
	if got[0].TriggerID != "phase3_to_phase4:2026-01-19:1" || !got[0].IsPartial {
		t.Fatalf("first = %+v", got[0])
	}
	if g := got[1]; g.TriggerID != "phase3_to_phase4:2026-01-19:2" || g.TriggerReason != "late_arrival" || g.IsPartial ||
		len(g.MissingProcessors) != 0 || g.UpstreamProcessorsCount != 5 {
		t.Fatalf("supplemental = %+v", g)
	}
}

// The manual trigger is the next generation, whatever the rules say.
func TestManualTrigger(t *testing.T) {
	e := apptest.New(t)
	sub := e.Sub("nba-phase3-trigger")
	e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success"))
	d, _ := gamedate.Parse("2026-01-19")
	out, err := e.App.Gates[0].Evaluate(context.Background(), d, gate.SourceManual, nil)
	if err != nil || out.TriggerID != "phase2_to_phase3:2026-01-19:1" {
		t.Fatalf("manual: %+v, %v", out, err)
	}
	out, err = e.App.Gates[0].Evaluate(context.Background(), d, gate.SourceManual, nil)
	if err != nil || out.TriggerID != "phase2_to_phase3:2026-01-19:2" {
		t.Fatalf("second manual: %+v, %v", out, err)
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 2 || got[0].TriggerReason != "manual" || len(got[0].MissingProcessors) != 5 {
		t.Fatalf("manual triggers = %+v", got)
	}
}

// Pub/Sub failing past the breaker's threshold: publishes fail fast while
// it is open, redeliveries keep coming, and once Pub/Sub is back the one
// trigger goes out.
func TestPubSubBreaker(t *testing.T) {
	e := apptest.New(t, apptest.FailPublishes("nba-predictions-trigger", 2), apptest.WithConfig(func(c *config.Config) {
		c.Gate.BreakerFailures, c.Gate.BreakerOpenFor = 2, 200*time.Millisecond
	}))
	sub := e.Sub("nba-predictions-trigger")
	deliverPhase4OneTrigger(t, e, sub)
	if e.Metrics.Get("pubsub.breaker_to_open") != 1 || e.Metrics.Get("pubsub.breaker_to_closed") != 1 {
		t.Fatalf("breaker did not open and close: %v", e.Metrics.Snapshot())
	}
}

// deliverPhase4OneTrigger delivers every phase-4 completion of 2026-01-19,
// redelivering on 5xx, and wants exactly one trigger on sub.
func deliverPhase4OneTrigger(t *testing.T, e *apptest.Env, sub *testenv.Sub) {
	t.Helper()
	for _, p := range phase4 {
		if c := e.Deliver("Phase4To5", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	if got := triggers(t, sub.Drain(t, time.Second)); len(got) != 1 {
		t.Fatalf("got %d triggers, want 1", len(got))
	}
}

// Two partial triggers with different reasons (the rules', then an
// operator's) raise two alerts; when every processor has arrived both are
// resolved, not only the last one.
func TestEveryPartialAlertIsResolved(t *testing.T) {
	e := apptest.New(t)
	d, _ := gamedate.Parse("2026-01-19")
	for _, p := range []string{"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor"} {
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, d.String(), "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	if _, err := e.App.Gates[1].Evaluate(context.Background(), d, gate.SourceManual, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"TeamOffenseGameSummaryProcessor", "UpcomingTeamGameContextProcessor"} {
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, d.String(), "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	raised, resolved := 0, 0
	var texts []string
	for _, p := range e.Slack.Delivered() {
		texts = append(texts, p.Text)
		switch {
		case strings.Contains(p.Text, "every processor has now completed"):
			resolved++
		case strings.Contains(p.Text, "went on without data"):
			raised++
		}
	}
	if raised != 2 || resolved != 2 {
		t.Fatalf("%d partial alerts raised, %d resolved; want 2 and 2 (posts %q)", raised, resolved, texts)
	}
}

// A manual trigger whose claim commit the client replayed (applied, the
// answer lost, the replay refused) while another write touched the gate
// is finished as claimed: one trigger, not the next generation as well.
func TestReplayedManualClaimTriggersOnce(t *testing.T) {
	f := apptest.NewFaults()
	e := apptest.New(t, f.Option(t))
	sub := e.Sub("nba-phase3-trigger")
	e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success"))
	d, _ := gamedate.Parse("2026-01-19")
	var touched atomic.Bool
	f.AfterCommit(func(c *firestorepb.CommitRequest) {
		for _, w := range c.Writes {
			if strings.Contains(w.GetUpdate().GetName(), "/orchestrator_generations/") && touched.CompareAndSwap(false, true) {
				if _, err := e.App.FS.Doc("phase2_completion/2026-01-19").Update(context.Background(),
					[]firestore.Update{{Path: "touched", Value: true}}); err != nil {
					t.Error(err)
				}
			}
		}
	})
	f.At("orchestrator_generations", 0, apptest.Replay)
	out, err := e.App.Gates[0].Evaluate(context.Background(), d, gate.SourceManual, nil)
	if err != nil || out.TriggerID != "phase2_to_phase3:2026-01-19:1" {
		t.Fatalf("manual: %+v, %v", out, err)
	}
	if !f.Hit() || e.Metrics.Get("effects.decision_replayed") != 1 {
		t.Fatalf("the claim's commit was not replayed (hit %v, replayed %d)", f.Hit(), e.Metrics.Get("effects.decision_replayed"))
	}
	got := triggers(t, sub.Drain(t, time.Second))
	if len(got) != 1 || got[0].TriggerID != "phase2_to_phase3:2026-01-19:1" {
		t.Fatalf("triggers %+v, want the one manual trigger", got)
	}
}
