package status_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	if !strings.Contains(html.Header().Get("Content-Type"), "text/html") || !strings.Contains(html.Body.String(), "phase3_to_phase4") {
		t.Fatalf("html: %s", html.Body)
	}
	for _, bad := range []string{"/Status", "/Status?date=2026-02-30", "/Status?date=../x"} {
		if w := get(t, h, bad, ""); w.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", bad, w.Code)
		}
	}
}
