package gate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
)

// With late_arrival on, the supplemental trigger is the last event of the
// day: the partial trigger's alert must still get its "resolved" follow-up.
func TestLateArrivalResolvesPartialAlert(t *testing.T) {
	e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
		p, _ := c.Phase("Phase3To4")
		p.LateArrival = true
	}))
	sub := e.Sub("nba-phase4-trigger")
	for _, p := range []string{"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor",
		"TeamDefenseGameSummaryProcessor", "TeamOffenseGameSummaryProcessor", "UpcomingTeamGameContextProcessor"} {
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	if got := triggers(t, sub.Drain(t, time.Second)); len(got) != 2 || got[1].TriggerReason != "late_arrival" {
		t.Fatalf("triggers = %+v, want the partial one and late_arrival", got)
	}
	posts := e.Slack.Delivered()
	if len(posts) != 2 || posts[0].Path != "/error" || posts[1].Path != "/warning" {
		t.Fatalf("slack posts = %+v, want the partial alert then its resolution", posts)
	}
	if doc := e.Doc("phase3_completion/2026-01-19"); doc["_alert_resolved"] != true {
		t.Fatalf("_alert_resolved = %v", doc["_alert_resolved"])
	}
}

// A failed phase-2 processor while the phase-2 deadline is off (the
// default) blocks the gate: that is an error alert (CONTRACT §6), not a
// warning that says timed rules will carry it on.
func TestFailureAlertSeverityFollowsEnabledTimedRules(t *testing.T) {
	t.Run("phase2 deadline off: blocked", func(t *testing.T) {
		e := apptest.New(t)
		if c := e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "failed")); c >= 300 {
			t.Fatalf("status %d", c)
		}
		posts := e.Slack.Delivered()
		if len(posts) != 1 || posts[0].Path != "/error" {
			t.Fatalf("slack posts = %+v, want one error alert", posts)
		}
	})
	t.Run("phase2 deadline on: degraded", func(t *testing.T) {
		e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
			p, _ := c.Phase("Phase2To3")
			p.Timed[0].Enabled = config.On
		}))
		e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "failed"))
		if posts := e.Slack.Delivered(); len(posts) != 1 || posts[0].Path != "/warning" {
			t.Fatalf("slack posts = %+v, want one warning", posts)
		}
	})
	t.Run("phase4 tiers on: degraded", func(t *testing.T) {
		e := apptest.New(t)
		e.Deliver("Phase4To5", "m1", apptest.Completion("MLFeatureStoreProcessor", "2026-01-19", "no_data"))
		if posts := e.Slack.Delivered(); len(posts) != 1 || posts[0].Path != "/warning" {
			t.Fatalf("slack posts = %+v, want one warning", posts)
		}
	})
}

// A completion whose fields cannot be stored (a document over Firestore's
// 1 MiB) can never succeed: 2xx and dead-lettered, not 5xx forever.
func TestUnstorableCompletionIsBadInput(t *testing.T) {
	e := apptest.New(t)
	dlq := e.Sub(e.Cfg.Topics.DeadLetter)
	m := apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success")
	m["execution_id"] = strings.Repeat("x", 1100<<10)
	if c := e.PushOnce("Phase2To3", "m-huge", m); c >= 300 {
		t.Fatalf("status %d, want 2xx", c)
	}
	if got := dlq.Drain(t, 2*time.Second); len(got) != 1 {
		t.Fatalf("dead letters = %d, want 1", len(got))
	}
}

// Phase 3 has no timed rules: a critical processor's failure blocks it, a
// non-critical one's does not (critical plus majority can still fire).
func TestFailureAlertSeverityPhase3(t *testing.T) {
	for _, tt := range []struct{ processor, path string }{
		{"PlayerGameSummaryProcessor", "/error"},
		{"TeamOffenseGameSummaryProcessor", "/warning"},
	} {
		t.Run(tt.processor, func(t *testing.T) {
			e := apptest.New(t)
			e.Deliver("Phase3To4", "m1", apptest.Completion(tt.processor, "2026-01-19", "failed"))
			if posts := e.Slack.Delivered(); len(posts) != 1 || posts[0].Path != tt.path {
				t.Fatalf("slack posts = %+v, want one to %s", posts, tt.path)
			}
		})
	}
}

// An alert is owed in the commit that records its cause: when that commit
// fails, neither is recorded and the event answers 5xx; its redelivery
// records both, and the alert goes out once.
func TestAlertOwedWithItsCause(t *testing.T) {
	f := apptest.NewFaults()
	e := apptest.New(t, f.Option(t))
	f.At(effect.Collection, 0, apptest.Fail)
	m := apptest.Completion("NbacScheduleProcessor", "2026-01-19", "failed")
	if c := e.PushOnce("Phase2To3", "m1", m); c < 500 {
		t.Fatalf("status %d with the commit failed, want 5xx", c)
	}
	if doc := e.Doc("phase2_completion/2026-01-19"); doc != nil {
		t.Fatalf("the failure was recorded without its alert: %v", doc)
	}
	if c := e.Deliver("Phase2To3", "m1", m); c >= 300 {
		t.Fatalf("redelivery: status %d", c)
	}
	if posts := e.Slack.Delivered(); len(posts) != 1 || posts[0].Path != "/error" {
		t.Fatalf("slack posts = %+v, want the one error alert", posts)
	}
}

// A trigger whose publish keeps failing (a missing topic, a permission)
// raises one error alert after gate.publish_failures_alert failures, and
// its "resolved" once it goes out.
func TestPublishKeepsFailingRaisesOneError(t *testing.T) {
	e := apptest.New(t, apptest.FailPublishes("nba-predictions-trigger", 8), apptest.WithConfig(func(c *config.Config) {
		c.Gate.BreakerFailures = 100 // every redelivery reaches the failing publisher
	}))
	sub := e.Sub("nba-predictions-trigger")
	deliverPhase4OneTrigger(t, e, sub)
	posts := e.Slack.Delivered()
	if len(posts) != 2 || posts[0].Path != "/error" || !strings.Contains(posts[0].Text, "keeps failing to publish") ||
		!strings.HasPrefix(posts[1].Text, "✅ Resolved") {
		var texts []string
		for _, p := range posts {
			texts = append(texts, p.Path+" "+p.Text)
		}
		t.Fatalf("slack posts = %v, want one publish-failing error and its resolved follow-up", texts)
	}
}
