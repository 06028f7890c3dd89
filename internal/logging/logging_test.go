package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"
)

func TestCloudLoggingFields(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelDebug)
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := WithTrace(context.Background(), r, "proj")
	ctx = WithLabels(ctx, "entry_point", "Phase3To4")
	Annotate(ctx, "game_date", "2026-01-19", "processor", "", "phase", "phase3_to_phase4")
	log.WarnContext(ctx, "hello", "n", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %s", buf.Bytes())
	}
	labels, _ := line["logging.googleapis.com/labels"].(map[string]any)
	if line["severity"] != "WARNING" || line["message"] != "hello" ||
		line["logging.googleapis.com/trace"] != "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736" ||
		labels["game_date"] != "2026-01-19" || labels["entry_point"] != "Phase3To4" || labels["phase"] != "phase3_to_phase4" {
		t.Fatalf("line = %v", line)
	}
	if _, ok := labels["processor"]; ok {
		t.Fatalf("empty label kept: %v", labels)
	}
}

func TestScopesDoNotLeak(t *testing.T) {
	parent := WithLabels(context.Background(), "a", "1")
	child := WithLabels(parent, "b", "2")
	Annotate(child, "c", "3")
	if got := Labels(parent); len(got) != 1 {
		t.Fatalf("child labels leaked into the parent: %v", got)
	}
	if got := Labels(child); len(got) != 3 {
		t.Fatalf("child labels = %v", got)
	}
}

func TestSeverities(t *testing.T) {
	for l, want := range map[slog.Level]string{slog.LevelDebug: "DEBUG", slog.LevelInfo: "INFO", slog.LevelWarn: "WARNING",
		slog.LevelError: "ERROR"} {
		if got := severity(l); got != want {
			t.Errorf("severity(%v) = %s, want %s", l, got, want)
		}
	}
}
