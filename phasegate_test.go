package phasegate

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Every entry point is registered with functions-framework under its
// contract name and answers through it, as a deployed function would (the
// framework serves each at /<name> when FUNCTION_TARGET is unset).
func TestFunctionsFrameworkServesEveryEntryPoint(t *testing.T) {
	t.Setenv("GCP_PROJECT", testenv.Project(t))
	ports, err := emulator.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]
	go func() { _ = funcframework.StartHostPort("127.0.0.1", fmt.Sprint(port)) }()
	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	push := envelope.PushBody("m1", []byte(`{"player_lookup":"x","game_date":"2026-01-19","batch_id":"b"}`), nil, time.Now())
	tests := []struct {
		ep     string
		method string
		want   int
	}{
		{"Phase2To3", "POST", 200}, // bad input for a gate: acked and dead-lettered
		{"Phase3To4", "POST", 200},
		{"Phase4To5", "POST", 200},
		{"PredictionCompletions", "POST", 500}, // batch b does not exist yet: transient
		{"Sweep", "POST", 204},
		{"Health", "GET", 200},
		{"Status", "GET", 200}, // New York's today and yesterday
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, tt := range tests {
		var resp *http.Response
		for {
			req, _ := http.NewRequest(tt.method, base+tt.ep, bytes.NewReader(push))
			req.Header.Set("Content-Type", "application/json")
			resp, err = http.DefaultClient.Do(req)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // the framework is still starting
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.ep, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: status %d, want %d", tt.ep, resp.StatusCode, tt.want)
		}
	}
}
