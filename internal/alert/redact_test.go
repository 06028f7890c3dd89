package alert_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/slacktest"
)

// A Slack that never answers in time, on every route: whatever the App
// logs and whatever alert returns — a request's send, the sweep's outbox,
// the breaker opening — names the route, never the webhook URL or any part
// of its path (Slack's /services/T…/B…/token is the secret).
func TestWebhookURLNeverLeaves(t *testing.T) {
	logs := &apptest.Logs{}
	slack := slacktest.New()
	t.Cleanup(slack.Close)
	slack.SetDefault(slacktest.Reply{Status: 200, Delay: 5 * time.Second})
	var hooks []string // error, warning, info
	for _, route := range []string{"error", "warning", "info"} {
		hooks = append(hooks, slack.Hook("services/T0SECRET/B0SECRET/token-"+route))
	}
	e := apptest.New(t, apptest.WithLogs(logs), apptest.WithConfig(func(c *config.Config) {
		p, _ := c.Phase("Phase2To3")
		p.Timed[0].Enabled = config.On
		c.Alerts.WebhookURLError, c.Alerts.WebhookURLWarning, c.Alerts.WebhookURL = hooks[0], hooks[1], hooks[2]
		c.Alerts.RequestTimeout = 50 * time.Millisecond // the HTTP client's timeout: a *url.Error with the URL
		c.Alerts.SendBudget, c.Alerts.MaxElapsed = 300*time.Millisecond, 400*time.Millisecond
	}))

	ctx := context.Background()
	var returned []error
	for _, sev := range []alert.Severity{alert.Error, alert.Warning, alert.Info} {
		// Within the request's own budget (a budget error) and past the
		// client's timeout.
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		returned = append(returned, e.App.Notifier.Post(short, alert.Alert{Key: "k-short-" + sev.String(), Severity: sev, Title: "t"}))
		cancel()
		returned = append(returned, e.App.Notifier.Post(ctx, alert.Alert{Key: "k-" + sev.String(), Severity: sev, Title: "t"}))
	}
	// An orchestration alert through the effect log, then the sweep's
	// pass over it.
	e.Deliver("Phase2To3", "m1", apptest.Completion("BdlPlayerBoxscoresProcessor", "2026-01-19", "success"))
	e.Deliver("Phase2To3", "m2", apptest.Completion("SomethingNewProcessor", "2026-01-19", "success"))
	e.Clock.Advance(30 * time.Minute)
	e.PushOnce("Sweep", "s1", map[string]any{})
	e.Clock.Advance(time.Hour)
	e.PushOnce("Sweep", "s2", map[string]any{})

	for i, err := range returned[:6] {
		if err == nil {
			t.Fatalf("post %d succeeded against a Slack that never answers", i)
		}
	}
	text := logs.Text()
	for _, err := range returned {
		if err != nil {
			text += "\n" + err.Error()
		}
	}
	for _, h := range hooks {
		u, _ := url.Parse(h)
		for _, secret := range []string{h, u.Path, "T0SECRET", "B0SECRET", "token-"} {
			if strings.Contains(text, secret) {
				t.Fatalf("%q leaked:\n%s", secret, text)
			}
		}
	}
	for _, want := range []string{"slack-webhook:error", "slack-webhook:warning", "slack-webhook:info", "Client.Timeout", "context deadline exceeded"} {
		if !strings.Contains(text, want) {
			t.Errorf("no log line or error says %q:\n%s", want, text)
		}
	}
}
