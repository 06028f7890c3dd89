package app

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The handler a deployed function registers builds the shared App from the
// environment on its first request and serves its entry point.
func TestEntryPointFromEnvironment(t *testing.T) {
	t.Setenv("GCP_PROJECT", testenv.Project(t))
	body := envelope.PushBody("m1", []byte(`{"processor_name":"NbacScheduleProcessor","game_date":"2026-01-19","status":"success"}`), nil, time.Now())
	for ep, want := range map[string]int{"Phase2To3": http.StatusNoContent, "NoSuchEntryPoint": http.StatusNotFound} {
		w := httptest.NewRecorder()
		EntryPoint(ep)(w, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
		if w.Code != want {
			t.Errorf("%s: status %d, want %d", ep, w.Code, want)
		}
	}
}
