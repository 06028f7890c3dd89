package sweep_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/slacktest"
)

// A phase-3 date whose player_game_summary never reports waits with no rule
// to carry it on. The sweep alone raises one warning — even when it first
// runs after the date has left its look-back — never a second, and the
// "resolved" once the date triggers.
func TestStuckPhase3RaisesOneWarningFromTheSweep(t *testing.T) {
	e := apptest.New(t)
	for _, p := range []string{"AsyncUpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor",
		"TeamOffenseGameSummaryProcessor", "UpcomingTeamGameContextProcessor"} {
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	p3, _ := e.Cfg.Phase("Phase3To4")
	e.Clock.Advance(p3.StuckAfter - time.Minute)
	sweepOnce(t, e)
	if posts := e.Slack.Delivered(); len(posts) != 0 {
		t.Fatalf("before stuck_after: slack posts %+v", textsOf(posts))
	}
	if r := e.App.Health.Check(context.Background()); r.Overdue != 0 {
		t.Fatalf("health overdue = %d before stuck_after", r.Overdue)
	}

	// No sweep ran for days: the first one is past the look-back.
	e.Clock.Advance(e.Cfg.Sweep.LookBack + time.Hour)
	sweepOnce(t, e)
	sweepOnce(t, e)
	posts := e.Slack.Delivered()
	if len(posts) != 1 || posts[0].Path != "/warning" || !strings.Contains(posts[0].Text, "overdue") ||
		!strings.Contains(posts[0].Text, "player_game_summary") {
		t.Fatalf("slack posts = %v, want one overdue warning naming player_game_summary", textsOf(posts))
	}
	if r := e.App.Health.Check(context.Background()); r.Overdue != 1 || r.Status != "degraded" {
		t.Fatalf("health = %+v, want one overdue gate, degraded", r)
	}

	if c := e.Deliver("Phase3To4", "m-pgs", apptest.Completion("PlayerGameSummaryProcessor", "2026-01-19", "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	sweepOnce(t, e)
	sweepOnce(t, e)
	posts = e.Slack.Delivered()
	if len(posts) != 2 || posts[1].Path != "/warning" || !strings.HasPrefix(posts[1].Text, "✅ Resolved") {
		t.Fatalf("slack posts = %v, want the warning then its resolved follow-up", textsOf(posts))
	}
	if r := e.App.Health.Check(context.Background()); r.Overdue != 0 {
		t.Fatalf("health overdue = %d after the trigger", r.Overdue)
	}
}

// A date within the look-back is found overdue as well, at stuck_after
// exactly, and a gate the same sweep triggers is not reported.
func TestOverdueAtStuckAfter(t *testing.T) {
	e := apptest.New(t, apptest.WithConfig(func(c *config.Config) {
		p, _ := c.Phase("Phase4To5")
		p.StuckAfter = 30 * time.Minute
	}))
	if c := e.Deliver("Phase4To5", "m1", apptest.Completion("PlayerDailyCacheProcessor", "2026-01-19", "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	e.Clock.Advance(30 * time.Minute)
	sweepOnce(t, e)
	if posts := e.Slack.Delivered(); len(posts) != 1 || !strings.Contains(posts[0].Text, "overdue") {
		t.Fatalf("slack posts = %v, want the overdue warning", textsOf(posts))
	}
	// max_timeout fires at 4h: the sweep triggers it (a partial trigger's
	// error alert) and resolves the warning in the same run.
	e.Clock.Advance(4 * time.Hour)
	sweepOnce(t, e)
	var texts []string
	for _, p := range e.Slack.Delivered() {
		texts = append(texts, p.Path+" "+p.Text[:min(len(p.Text), 40)])
	}
	if len(texts) != 3 || !strings.HasPrefix(texts[1], "/error") || !strings.HasPrefix(texts[2], "/warning ✅ Resolved") {
		t.Fatalf("slack posts = %v, want overdue, the partial trigger's alert, resolved", texts)
	}
}

func textsOf(posts []slacktest.Post) []string {
	var out []string
	for _, p := range posts {
		out = append(out, p.Path+" "+p.Text)
	}
	return out
}
