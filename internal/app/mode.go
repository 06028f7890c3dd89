package app

import (
	"context"
	"log/slog"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/edge"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/metrics"
)

// sinks are where phasegate's decisions go. PHASEGATE_MODE changes only
// these: every line of decision code is the same in both modes.
type sinks struct {
	names     config.Names   // which collections documents are written to
	publisher edge.Publisher // triggers, batch completions, dead letters
	slack     config.Alerts  // the webhooks alerts are posted to
	history   bool           // BigQuery history rows (CONTRACT §10) are written
	// Data checks only read BigQuery and steer the decision, so shadow runs
	// them as live does.
}

// destinations returns the live sinks, or in shadow mode (CONTRACT §9)
// sinks that send nothing: the effect log records every effect in
// shadow_orchestrator_effects and performs none (triggers and batch
// completions are also kept whole in their shadow_ documents,
// _trigger_payload and completion_payload); no webhook is configured and no
// BigQuery history row is owed.
func destinations(cfg *config.Config, pub edge.Publisher, log *slog.Logger, m *metrics.Registry) sinks {
	if !cfg.Shadow() {
		return sinks{names: cfg.Names(), publisher: pub, slack: cfg.Alerts, history: true}
	}
	slack := cfg.Alerts
	slack.WebhookURL, slack.WebhookURLError, slack.WebhookURLWarning = "", "", ""
	return sinks{names: cfg.Names(), publisher: unpublished{log: log, m: m}, slack: slack}
}

// ShadowMessageID is the message id a shadow phasegate records for what it
// would have published.
const ShadowMessageID = effect.ShadowRef

// unpublished is the shadow publisher: it publishes nothing.
type unpublished struct {
	log *slog.Logger
	m   *metrics.Registry
}

func (u unpublished) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	u.m.Inc("shadow.unpublished")
	u.log.InfoContext(ctx, "shadow mode: not published", "topic", topic, "attributes", attrs, "bytes", len(data))
	return ShadowMessageID, nil
}
