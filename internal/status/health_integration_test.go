package status_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/status"
	"github.com/phasegate/phasegate/internal/testenv"
)

func health(t *testing.T, h http.Handler) (int, status.Report) {
	t.Helper()
	w := get(t, h, "/Health", "")
	var r status.Report
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
		t.Fatalf("health body %s: %v", w.Body, err)
	}
	return w.Code, r
}

// The contract's keys, exactly.
func TestHealthKeys(t *testing.T) {
	e := apptest.New(t)
	h, _ := e.App.Handler("Health")
	var body map[string]any
	if err := json.Unmarshal(get(t, h, "/Health", "").Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"status", "last_sweep_at", "overdue", "unpublished", "alerts_waiting", "oldest_alert_age_s", "breakers"} {
		if _, ok := body[k]; !ok {
			t.Errorf("key %q missing from %v", k, body)
		}
	}
	b, _ := body["breakers"].(map[string]any)["pubsub"].(map[string]any)
	if b["state"] != "closed" {
		t.Errorf("breakers.pubsub = %v, want {state: closed, recorded_at: null}; body %v", b, body)
	}
}

func TestHealthOKAfterSweep(t *testing.T) {
	e := apptest.New(t)
	h, _ := e.App.Handler("Health")
	if code, r := health(t, h); code != 200 || r.Status != "degraded" || r.LastSweepAt != nil {
		t.Fatalf("before any sweep: %d %+v, want 200 degraded (no sweep)", code, r)
	}
	if c := e.Deliver("Sweep", "s1", map[string]any{}); c >= 300 {
		t.Fatalf("sweep: %d", c)
	}
	code, r := health(t, h)
	if code != 200 || r.Status != "ok" || r.LastSweepAt == nil || !r.LastSweepAt.Equal(apptest.Start) {
		t.Fatalf("after a sweep: %d %+v, want 200 ok with last_sweep_at %v", code, r, apptest.Start)
	}
	e.Clock.Advance(status.SweepLate + time.Minute)
	if _, r := health(t, h); r.Status != "degraded" {
		t.Fatalf("16 minutes after the last sweep: %+v, want degraded", r)
	}
}

// What one instance lived through, a second, fresh instance reports: an
// open Slack breaker and a waiting alert.
func TestHealthFromAnotherInstance(t *testing.T) {
	e := apptest.New(t)
	e.Deliver("Sweep", "s1", map[string]any{})
	e.Slack.SetDefault(slacktest.Reply{Status: 500})
	// A blocked gate's error alert; Slack fails until the breaker opens.
	if c := e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "failed")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	if got := e.App.Notifier.Breakers()["error"]; got != "open" {
		t.Fatalf("first instance's error breaker = %s, want open", got)
	}
	e.Clock.Advance(90 * time.Second)

	second := e.Instance()
	h, _ := second.Handler("Health")
	code, r := health(t, h)
	if code != 200 || r.Status != "degraded" {
		t.Fatalf("second instance: %d %+v, want 200 degraded", code, r)
	}
	b := r.Breakers["slack-error"]
	if b.State != "open" || b.RecordedAt == nil || !b.RecordedAt.Equal(apptest.Start) {
		t.Errorf("breakers[slack-error] = %+v, want open recorded at %v", b, apptest.Start)
	}
	if r.Breakers["slack-warning"].State != "closed" || r.Breakers["pubsub"].State != "closed" {
		t.Errorf("breakers = %+v, want the others closed", r.Breakers)
	}
	if r.AlertsWaiting != 1 || r.OldestAlertAgeS != 90 {
		t.Errorf("alerts_waiting %d oldest %ds, want 1 waiting for 90s", r.AlertsWaiting, r.OldestAlertAgeS)
	}
	if got := second.Notifier.Breakers()["error"]; got != "closed" {
		t.Errorf("the second instance's own breaker is %s: the answer must not come from its memory", got)
	}

	// An "open" older than its open period plus a minute counts as closed:
	// the instance that recorded it may be gone.
	e.Clock.Advance(time.Minute)
	if _, r := health(t, h); r.Breakers["slack-error"].State != "closed" {
		t.Errorf("a stale open breaker = %+v, want closed", r.Breakers["slack-error"])
	}

	// Slack back: a sweep on the second instance (the first one's breaker
	// is still open in its memory) delivers and empties the outbox.
	e.Slack.SetDefault(slacktest.Reply{Status: 200})
	e.Clock.Advance(5 * time.Minute)
	sweep, _ := second.Handler("Sweep")
	if c := testenv.Push(sweep, "s2", []byte("{}"), nil); c >= 300 {
		t.Fatalf("sweep: %d", c)
	}
	if _, r := health(t, h); r.AlertsWaiting != 0 || r.Status != "ok" {
		t.Errorf("after Slack is back and a sweep ran: %+v, want ok with no alert waiting", r)
	}
}

func TestHealthUnavailable(t *testing.T) {
	fs, err := emulator.NewFirestore(context.Background(), "health-unavailable")
	if err != nil {
		t.Fatal(err)
	}
	fs.Close()
	h := &status.Health{FS: fs, Phases: config.Default().Phases, Clock: clock.NewFake(apptest.Start)}
	if code, r := health(t, h); code != http.StatusServiceUnavailable || r.Status != "unavailable" {
		t.Fatalf("with Firestore unreadable: %d %+v, want 503 unavailable", code, r)
	}
}

// An alert an earlier revision's outbox still owes, held by its old
// sender and not yet moved into the effect log, counts as waiting.
func TestHealthCountsTheEarlierOutbox(t *testing.T) {
	e := apptest.New(t)
	e.Deliver("Sweep", "s1", map[string]any{})
	_, err := e.App.FS.Collection("orchestrator_alerts").Doc("old").Create(context.Background(), map[string]any{
		"key": "phase2_to_phase3:2026-01-19:failure", "state": "pending", "waiting_since": apptest.Start,
		"sending_until": apptest.Start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := e.App.Handler("Health")
	if _, r := health(t, h); r.AlertsWaiting != 1 || r.Status != "degraded" {
		t.Fatalf("alerts_waiting %d (%s), want the outbox's one", r.AlertsWaiting, r.Status)
	}
}
