package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/slacktest"
)

// run executes the CLI in-process and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// The operator commands against the same emulator project an App wrote to.
func TestOperatorCommands(t *testing.T) {
	e := apptest.New(t)
	t.Setenv("GCP_PROJECT", e.Project)
	e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success"))

	out, err := run(t, "status", "--date", "2026-01-19")
	if err != nil || !strings.Contains(out, "phase2_to_phase3") || !strings.Contains(out, "1/6") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = run(t, "trigger", "--phase", "Phase2To3", "--date", "2026-01-19")
	if err != nil || !strings.Contains(out, "published phase2_to_phase3:2026-01-19:1 (reason manual") {
		t.Fatalf("trigger: %v\n%s", err, out)
	}
	out, err = run(t, "status", "--date", "2026-01-19", "--json")
	if err != nil || !strings.Contains(out, `"trigger_reason": "manual"`) {
		t.Fatalf("status --json after the trigger: %v\n%s", err, out)
	}

	if _, err := e.App.Bus.Subscribe(context.Background(), "orchestrator-dead-letter", "dl-inspect"); err != nil {
		t.Fatal(err)
	}
	if c := e.PushOnce("Phase2To3", "bad-1", map[string]any{"processor_name": "X", "status": "success"}); c != 200 {
		t.Fatalf("bad input: %d", c)
	}
	out, err = run(t, "dead-letters", "list", "--subscription", "dl-inspect")
	if err != nil || !strings.Contains(out, "missing_game_date") || !strings.Contains(out, "1 dead letters shown") {
		t.Fatalf("dead-letters list: %v\n%s", err, out)
	}
	out, err = run(t, "dead-letters", "replay", "--subscription", "dl-inspect")
	if err != nil || !strings.Contains(out, "1 replayed") || !strings.Contains(out, "duplicate or bad input") {
		t.Fatalf("dead-letters replay: %v\n%s", err, out)
	}
	// Still bad: the replayed letter was consumed, and the handler made a
	// fresh copy.
	out, err = run(t, "dead-letters", "list", "--subscription", "dl-inspect")
	if err != nil || !strings.Contains(out, "1 dead letters shown") || !strings.Contains(out, "missing_game_date") {
		t.Fatalf("replayed letter: %v\n%s", err, out)
	}

	out, err = run(t, "batch", "check")
	if err != nil {
		t.Fatalf("batch check on no batches: %v\n%s", err, out)
	}
	if _, err := run(t, "batch", "status", "--batch-id", "nope"); err == nil || exitCode(err) != 1 {
		t.Fatalf("batch status of a missing batch: %v", err)
	}
}

// status --from --to prints the season grid, from Firestore or, with --url,
// from the Status function (here behind a local server, as behind
// gcloud run services proxy).
func TestStatusRange(t *testing.T) {
	e := apptest.New(t)
	t.Setenv("GCP_PROJECT", e.Project)
	for _, p := range []string{"PlayerGameSummaryProcessor", "UpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor"} {
		e.Deliver("Phase3To4", p, apptest.Completion(p, "2026-01-18", "success"))
	}
	e.Deliver("Phase3To4", "pgs-19", apptest.Completion("PlayerGameSummaryProcessor", "2026-01-19", "success"))
	srv := httptest.NewServer(e.Mux)
	defer srv.Close()
	direct, err := run(t, "status", "--from", "2026-01-17", "--to", "2026-01-19")
	if err != nil {
		t.Fatalf("status --from --to: %v\n%s", err, direct)
	}
	// The fake clock of the App is 2026-01-20 01:00 New York; this command
	// runs on the real clock, so the 2026-01-19 gate is long overdue.
	for _, want := range []string{"Mon 01-19", "⚠ overdue 1/5", "Sun 01-18", "◐ partial 01:00", "Sat 01-17", "· not_started", "usual"} {
		if !strings.Contains(direct, want) {
			t.Errorf("grid lacks %q:\n%s", want, direct)
		}
	}
	viaURL, err := run(t, "status", "--from", "2026-01-17", "--to", "2026-01-19", "--url", srv.URL+"/Status")
	if err != nil {
		t.Fatalf("status --url: %v\n%s", err, viaURL)
	}
	// Through the function the App's clock decides: its 2026-01-19 gate
	// has waited an hour, not long enough to be overdue.
	if !strings.Contains(viaURL, "◷ waiting 1/5") || !strings.Contains(viaURL, "◐ partial 01:00") {
		t.Errorf("grid through --url:\n%s", viaURL)
	}
	js, err := run(t, "status", "--from", "2026-01-19", "--to", "2026-01-19", "--url", srv.URL+"/Status", "--json")
	if err != nil || !strings.Contains(js, `"state": "waiting"`) || !strings.Contains(js, `"from": "2026-01-19"`) {
		t.Errorf("--json: %v\n%s", err, js)
	}
	one, err := run(t, "status", "--date", "2026-01-18", "--url", srv.URL+"/Status")
	if err != nil || !strings.Contains(one, "phase3_to_phase4  partial") || !strings.Contains(one, "3/5") {
		t.Errorf("--date through --url: %v\n%s", err, one)
	}
	if _, err := run(t, "status", "--from", "2026-01-17", "--to", "2026-01-19", "--url", srv.URL+"/Nothing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a URL that is not Status: %v", err)
	}
}

// An alert Slack refused for a day is failed: the operator lists it,
// retries it once Slack takes it, and dismisses another.
func TestEffectsCommands(t *testing.T) {
	e := apptest.New(t)
	t.Setenv("GCP_PROJECT", e.Project)
	e.Slack.SetDefault(slacktest.Reply{Status: 404})
	e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "failed"))
	e.Deliver("Phase2To3", "m2", apptest.Completion("SomethingNewProcessor", "2026-01-19", "success"))
	e.Clock.Advance(25 * time.Hour)
	e.PushOnce("Sweep", "s1", map[string]any{})

	out, err := run(t, "effects", "list", "--state", "failed")
	if err != nil || !strings.Contains(out, "2 failed effect(s) shown") {
		t.Fatalf("effects list: %v\n%s", err, out)
	}
	failed := e.Effect("alert:phase2_to_phase3:2026-01-19:failed:nbac_schedule")
	unexpected := e.Effect("alert:phase2_to_phase3:2026-01-19:unexpected:something_new")
	if failed == nil || unexpected == nil || !strings.Contains(out, failed["id"].(string)) {
		t.Fatalf("effects list does not show the failed alerts:\n%s", out)
	}
	e.Slack.SetDefault(slacktest.Reply{Status: 200})
	out, err = run(t, "effects", "retry", failed["id"].(string))
	if err != nil || !strings.Contains(out, "performed") {
		t.Fatalf("effects retry: %v\n%s", err, out)
	}
	if out, err = run(t, "effects", "dismiss", unexpected["id"].(string)); err != nil || !strings.Contains(out, "dismissed") {
		t.Fatalf("effects dismiss: %v\n%s", err, out)
	}
	if _, err := run(t, "effects", "dismiss", failed["id"].(string)); err == nil {
		t.Fatal("dismissing a performed effect succeeded")
	}
	if _, err := run(t, "effects", "retry", "no-such-effect"); err == nil {
		t.Fatal("retrying an unknown effect succeeded")
	}
	out, err = run(t, "effects", "list", "--state", "failed")
	if err != nil || !strings.Contains(out, "0 failed effect(s) shown") {
		t.Fatalf("effects list after: %v\n%s", err, out)
	}
}
