package status_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	if p3.State != "waiting" || body.Dates[1].Phases[1].State != "not_started" {
		t.Errorf("states %q, %q", p3.State, body.Dates[1].Phases[1].State)
	}
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

// createBatch writes a batch as the running coordinator creates it.
func createBatch(t *testing.T, e *apptest.Env, id, date string, expected int, extra map[string]any) {
	t.Helper()
	now := e.Clock.Now()
	doc := map[string]any{"batch_id": id, "game_date": date, "expected_players": expected, "is_complete": false,
		"start_time": now, "updated_at": now, "correlation_id": "c-" + date}
	for k, v := range extra {
		doc[k] = v
	}
	if _, err := e.App.FS.Collection("prediction_batches").Doc(id).Create(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
}

// completeWorkers delivers worker completions of players from..to-1.
func completeWorkers(t *testing.T, e *apptest.Env, id, date string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if code := e.Deliver("PredictionCompletions", fmt.Sprint(id, "-w", i), map[string]any{"player_lookup": fmt.Sprint("p", i),
			"game_date": date, "batch_id": id, "predictions_generated": 5}); code >= 300 {
			t.Fatalf("worker completion %d of %s: %d", i, id, code)
		}
	}
}

type seasonBody struct {
	From, To string
	Season   []struct {
		GameDate string `json:"game_date"`
		Phases   []struct {
			Phase, State, Mode string
			TriggerReason      string     `json:"trigger_reason"`
			TriggeredAt        *time.Time `json:"triggered_at"`
			CompletedCount     int64      `json:"completed_count"`
			Missing            []string   `json:"missing_processors"`
			Expected           []string   `json:"expected_processors"`
		}
		Batches []struct {
			BatchID   string `json:"batch_id"`
			State     string
			Completed int64 `json:"completed_players"`
			Expected  int64 `json:"expected_players"`
		}
	}
}

func season(t *testing.T, h http.Handler, query string) seasonBody {
	t.Helper()
	w := get(t, h, "/Status?"+query, "application/json")
	var body seasonBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); w.Code != 200 || err != nil {
		t.Fatalf("%s: status %d %v: %s", query, w.Code, err, w.Body)
	}
	return body
}

// A range answers every date, oldest first, in the per-date answer's
// states; dates without documents are not_started. The fake clock reads
// 01:00 on 2026-01-20 in New York.
func TestStatusSeason(t *testing.T) {
	e := apptest.New(t)
	for _, p := range []string{"NbacScheduleProcessor", "BdlPlayerBoxscoresProcessor", "BigDataBallPbpProcessor",
		"OddsApiGameLinesBatchProcessor", "NbacGamebookProcessor", "BrRostersCurrentProcessor"} {
		e.Deliver("Phase2To3", p+"-17", apptest.Completion(p, "2026-01-17", "success"))
	}
	for _, p := range []string{"PlayerGameSummaryProcessor", "UpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor"} {
		e.Deliver("Phase3To4", p+"-17", apptest.Completion(p, "2026-01-17", "success"))
	}
	e.Deliver("Phase3To4", "pgs-19", apptest.Completion("PlayerGameSummaryProcessor", "2026-01-19", "success"))
	createBatch(t, e, "batch_17", "2026-01-17", 2, nil)
	completeWorkers(t, e, "batch_17", "2026-01-17", 0, 2)
	createBatch(t, e, "batch_19", "2026-01-19", 3, nil)
	completeWorkers(t, e, "batch_19", "2026-01-19", 0, 1)
	createBatch(t, e, "batch_16", "2026-01-16", 3, map[string]any{"is_complete": true, "completed_players": []string{"a", "b", "c"}})

	h, _ := e.App.Handler("Status")
	s := season(t, h, "from=2026-01-15&to=2026-01-19")
	if s.From != "2026-01-15" || s.To != "2026-01-19" || len(s.Season) != 5 || s.Season[0].GameDate != "2026-01-15" {
		t.Fatalf("range %+v", s)
	}
	states := func(i int) string {
		var out []string
		for _, p := range s.Season[i].Phases {
			out = append(out, p.State)
		}
		for _, b := range s.Season[i].Batches {
			out = append(out, fmt.Sprintf("%s:%s:%d/%d", b.BatchID, b.State, b.Completed, b.Expected))
		}
		return strings.Join(out, " ")
	}
	for i, want := range []string{
		"not_started not_started not_started",
		"not_started not_started not_started batch_16:triggered:3/3",
		"triggered partial not_started batch_17:triggered:2/2",
		"not_started not_started not_started",
		"not_started waiting not_started batch_19:waiting:1/3",
	} {
		if got := states(i); got != want {
			t.Errorf("%s: %s, want %s", s.Season[i].GameDate, got, want)
		}
	}
	p3 := s.Season[2].Phases[1]
	if p3.TriggerReason != "critical_plus_majority_60pct" || p3.TriggeredAt == nil || p3.CompletedCount != 3 ||
		len(p3.Missing) != 2 || len(p3.Expected) != 5 || p3.Mode != "overnight" {
		t.Errorf("phase 3 of 2026-01-17: %+v", p3)
	}
	if n := s.Season[0].Phases[0]; n.Missing == nil || n.Expected == nil || n.TriggeredAt != nil {
		t.Errorf("a date without documents: %+v", n)
	}

	// Either bound alone: to is New York's today, from 13 days before to.
	if s := season(t, h, "to=2026-01-19"); s.From != "2026-01-06" || len(s.Season) != 14 {
		t.Errorf("to alone: %s..%s, %d dates", s.From, s.To, len(s.Season))
	}
	if s := season(t, h, "from=2026-01-19"); s.To != "2026-01-20" || len(s.Season) != 2 {
		t.Errorf("from alone: %s..%s", s.From, s.To)
	}

	// The per-date answer carries the same states, from the same
	// classification; four hours after its first completion the waiting
	// gate is overdue in both.
	var one struct{ Dates []status.Date }
	if err := json.Unmarshal(get(t, h, "/Status?date=2026-01-19", "").Body.Bytes(), &one); err != nil {
		t.Fatal(err)
	}
	if st := one.Dates[0].Phases[1].State; st != "waiting" {
		t.Errorf("per-date phase 3 state %q", st)
	}
	e.Clock.Advance(4 * time.Hour)
	if err := json.Unmarshal(get(t, h, "/Status?date=2026-01-19", "").Body.Bytes(), &one); err != nil {
		t.Fatal(err)
	}
	if st, sst := one.Dates[0].Phases[1].State, season(t, h, "from=2026-01-19&to=2026-01-19").Season[0].Phases[1].State; st != "overdue" || sst != "overdue" {
		t.Errorf("4 h on: per-date %q, range %q; want overdue", st, sst)
	}

	html := get(t, h, "/Status?from=2026-01-15&to=2026-01-19", "text/html").Body.String()
	for _, want := range []string{`<tr data-date="2026-01-19">`, `href="?date=2026-01-15"`, `data-state="partial"`, `data-state="overdue"`} {
		if !strings.Contains(html, want) {
			t.Errorf("season page lacks %s", want)
		}
	}
	if n := strings.Count(html, "<tr data-date="); n != 5 {
		t.Errorf("%d rows, want 5", n)
	}
	if night := get(t, h, "/Status?date=2026-01-17", "text/html").Body.String(); !strings.Contains(night, `href="?from=2026-01-07&amp;to=2026-01-20"`) {
		t.Error("the night's page does not link to the range around it")
	}
}

func TestStatusSeasonBadRanges(t *testing.T) {
	e := apptest.New(t)
	h, _ := e.App.Handler("Status")
	if s := season(t, h, "from=2025-11-19&to=2026-01-19"); len(s.Season) != 62 {
		t.Errorf("62 dates: %d", len(s.Season))
	}
	tests := []struct{ query, want string }{
		{"from=2025-11-18&to=2026-01-19", "is 63 dates; at most 62 per request"},
		{"from=2026-01-19&to=2026-01-18", "from 2026-01-19 is after to 2026-01-18"},
		{"from=2026-1-19", "from: game date"},
		{"to=../x", "to: game date"},
		{"from=", "from: empty"},
		{"date=2026-01-19&from=2026-01-10", "date cannot be combined with from or to"},
		{"date=2026-01-19&to=2026-01-20", "date cannot be combined with from or to"},
	}
	for _, tt := range tests {
		w := get(t, h, "/Status?"+tt.query, "")
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tt.want) {
			t.Errorf("%s: %d %q, want 400 saying %q", tt.query, w.Code, w.Body, tt.want)
		}
	}
}
