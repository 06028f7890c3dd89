// Package edge is where a Pub/Sub-triggered entry point meets HTTP. It
// decodes the envelope, runs the handler, and classifies the outcome once:
//
//   - handled or duplicate → 2xx, acknowledged;
//   - permanently bad input → 2xx, logged with its reason and copied to the
//     dead-letter topic (a 4xx would be redelivered forever);
//   - anything else → 5xx, so Pub/Sub redelivers and the handler, being
//     resumable, finishes what was left half-done.
package edge

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Publisher sends a message to a topic.
type Publisher interface {
	Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error)
}

// HandlerFunc handles one decoded message. It returns nil when the event is
// handled and an errs-kinded error otherwise.
type HandlerFunc func(ctx context.Context, m envelope.Message) error

// Edge holds what every entry point shares.
type Edge struct {
	Log        *slog.Logger
	DeadLetter Publisher
	DLQTopic   string
	ProjectID  string // for trace ids in logs
	Metrics    *metrics.Registry
}

// Handler wraps h as the HTTP handler of entryPoint.
func (e *Edge) Handler(entryPoint string, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a Pub/Sub push request or CloudEvent", http.StatusMethodNotAllowed)
			return
		}
		ctx := logging.WithTrace(r.Context(), r, e.ProjectID)
		ctx = logging.WithLabels(ctx, "entry_point", entryPoint)
		m, err := envelope.Decode(r)
		logging.Annotate(ctx, "message_id", m.ID)
		if err == nil {
			err = h(ctx, m)
		}
		w.WriteHeader(e.classify(ctx, entryPoint, m, err))
	})
}

func (e *Edge) classify(ctx context.Context, entryPoint string, m envelope.Message, err error) int {
	kind := errs.KindOf(err)
	switch {
	case err == nil:
		e.Metrics.Inc(entryPoint + ".handled")
		return http.StatusNoContent
	case kind == errs.Duplicate:
		e.Metrics.Inc(entryPoint + ".duplicate")
		e.Log.InfoContext(ctx, "duplicate event acknowledged", "reason", errs.ReasonOf(err), "detail", err.Error())
		return http.StatusOK
	case kind == errs.Invalid:
		reason := errs.ReasonOf(err)
		e.Metrics.Inc(entryPoint + ".invalid")
		e.Log.WarnContext(ctx, "bad input acknowledged and dead-lettered", "outcome", "dead_lettered", "reason", reason, "error", err.Error())
		if dlErr := e.deadLetter(ctx, entryPoint, m, reason); dlErr != nil {
			// Without the copy the message would be lost: let Pub/Sub retry.
			e.Metrics.Inc(entryPoint + ".dead_letter_failed")
			e.Log.ErrorContext(ctx, "dead-letter publish failed; asking for redelivery", "outcome", "retry",
				"reason", "dead_letter_failed", "error", dlErr.Error())
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	default:
		e.Metrics.Inc(entryPoint + ".retry")
		e.Log.ErrorContext(ctx, "transient failure; Pub/Sub will redeliver", "outcome", "retry", "reason", errs.ReasonOf(err), "error", err.Error())
		return http.StatusInternalServerError
	}
}

// maxCopy keeps a dead-letter copy under Pub/Sub's 10 MB message limit.
const maxCopy = 9 << 20

// deadLetter copies the message: the original data and attributes plus
// reason, entry_point and original_message_id. A body without a parseable
// envelope is copied as it came.
func (e *Edge) deadLetter(ctx context.Context, entryPoint string, m envelope.Message, reason string) error {
	attrs := make(map[string]string, len(m.Attributes)+3)
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	data := m.Data
	if reason == "unparseable_envelope" {
		data = m.Raw
	}
	if len(data) > maxCopy {
		data = data[:maxCopy]
		attrs["truncated"] = "true"
	}
	attrs["reason"] = reason
	attrs["entry_point"] = entryPoint
	attrs["original_message_id"] = m.ID
	if len(data) == 0 {
		// Pub/Sub refuses a message with neither data nor attributes; ours
		// always has attributes, so an empty body is still copied.
		data = []byte{}
	}
	_, err := e.DeadLetter.Publish(context.WithoutCancel(ctx), e.DLQTopic, data, attrs)
	return err
}
