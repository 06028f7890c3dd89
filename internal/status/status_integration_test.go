package status_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/status"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func get(t *testing.T, h http.Handler, url, accept string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestStatus(t *testing.T) {
	e := apptest.New(t)
	e.Deliver("Phase3To4", "m1", apptest.Completion("PlayerGameSummaryProcessor", "2026-01-19", "success"))
	e.Deliver("Phase3To4", "m2", apptest.Completion("MysteryProcessor", "2026-01-19", "success"))
	h, _ := e.App.Handler("Status")
	w := get(t, h, "/Status?date=2026-01-19,2026-01-18", "")
	if today := get(t, h, "/Status?date=today", ""); !strings.Contains(today.Body.String(), `"game_date": "2026-01-20"`) {
		t.Fatalf("today (the fake clock's New York date) = %s", today.Body)
	}
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var body struct{ Dates []status.Date }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Dates) != 2 || len(body.Dates[0].Phases) != 3 {
		t.Fatalf("body = %+v", body)
	}
	p3 := body.Dates[0].Phases[1]
	if p3.Phase != "phase3_to_phase4" || len(p3.Completed) != 1 || len(p3.Missing) != 4 || p3.Triggered ||
		len(p3.Unexpected) != 1 || p3.Unexpected[0] != "mystery" || body.Dates[1].Phases[1].Exists {
		t.Fatalf("phase 3 = %+v", p3)
	}
	html := get(t, h, "/Status?date=2026-01-19", "text/html,application/xhtml+xml")
	if !strings.Contains(html.Header().Get("Content-Type"), "text/html") || !strings.Contains(html.Body.String(), "phase3_to_phase4") ||
		strings.Count(html.Body.String(), `class="mark completion"`) != 1 || strings.Count(html.Body.String(), `class="mark unexpected"`) != 1 {
		t.Fatalf("html: %s", html.Body)
	}
	for _, bad := range []string{"/Status?date=", "/Status?date=2026-02-30", "/Status?date=../x"} {
		if w := get(t, h, bad, ""); w.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", bad, w.Code)
		}
	}
}

// A bare GET is the night in progress: New York's today and yesterday (the
// fake clock reads 01:00 on 2026-01-20 in New York), with each date's
// batches.
func TestStatusBareGET(t *testing.T) {
	e := apptest.New(t)
	e.Deliver("Phase2To3", "m1", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success"))
	start := e.Clock.Now()
	_, err := e.App.FS.Collection("prediction_batches").Doc("batch_2026-01-19_1").Create(context.Background(), map[string]any{
		"batch_id": "batch_2026-01-19_1", "game_date": "2026-01-19", "expected_players": 2, "is_complete": false,
		"start_time": start, "updated_at": start, "correlation_id": "c"})
	if err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(time.Minute)
	if code := e.Deliver("PredictionCompletions", "w1", map[string]any{"player_lookup": "d'angelo", "game_date": "2026-01-19",
		"batch_id": "batch_2026-01-19_1", "predictions_generated": 5}); code >= 300 {
		t.Fatalf("worker completion: %d", code)
	}
	h, _ := e.App.Handler("Status")
	w := get(t, h, "/Status", "")
	var body struct{ Dates []status.Date }
	if err := json.Unmarshal(w.Body.Bytes(), &body); w.Code != 200 || err != nil {
		t.Fatalf("status %d %v: %s", w.Code, err, w.Body)
	}
	if len(body.Dates) != 2 || body.Dates[0].GameDate != "2026-01-20" || body.Dates[1].GameDate != "2026-01-19" {
		t.Fatalf("dates = %+v", body.Dates)
	}
	y := body.Dates[1]
	if !y.Open || len(y.Batches) != 1 || y.Batches[0].Completed != 1 || y.Batches[0].Expected != 2 ||
		!y.Batches[0].MaxAgeAt.Equal(start.Add(30*time.Minute)) || !y.Batches[0].ProgressAt.Equal(start.Add(time.Minute)) {
		t.Fatalf("yesterday = %+v", y)
	}
	p2 := y.Phases[0]
	if len(p2.Processors) != 6 || p2.Processors[3].Name != "nbac_schedule" || p2.Processors[3].CompletedAt == nil {
		t.Fatalf("phase 2 processors = %+v", p2.Processors)
	}
	html := get(t, h, "/Status", "text/html").Body.String()
	for _, want := range []string{"<h2 id=\"d20260120\">2026-01-20", "<h2 id=\"d20260119\">2026-01-19",
		`http-equiv="refresh"`, `class="mark completion"`, "1/2 players", `href="?date=2026-01-18" rel="prev"`} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}
