package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/phasegate/phasegate/internal/apptest"
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
