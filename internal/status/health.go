package status

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Health reports whether this instance can reach its state store, the
// state of its circuit breakers, and its counters.
type Health struct {
	FS       *firestore.Client
	Breakers func() map[string]string
	Metrics  *metrics.Registry
	Clock    clock.Clock
}

// ServeHTTP answers 200 when Firestore answers, 503 otherwise. An open
// Slack breaker degrades but does not fail health: alerts wait in the
// outbox.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	body := map[string]any{"time": h.Clock.Now().Format(time.RFC3339), "metrics": h.Metrics.Snapshot()}
	code, state := http.StatusOK, "ok"
	// A read of a document that need not exist proves the store answers.
	_, err := h.FS.Collection("phasegate_health").Doc("probe").Get(ctx)
	if err != nil && status.Code(err) != codes.NotFound {
		code, state = http.StatusServiceUnavailable, "unavailable"
		body["firestore"] = err.Error()
	} else {
		body["firestore"] = "ok"
	}
	breakers := h.Breakers()
	for _, s := range breakers {
		if s != "closed" && state == "ok" {
			state = "degraded"
		}
	}
	body["status"], body["breakers"] = state, breakers
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
