package alert

import (
	"log/slog"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newSlack starts a stand-in webhook server, closed when t ends. It serves
// any path, so one server stands in for several webhook URLs (/error,
// /warning, /info).
func newSlack(t *testing.T) *slacktest.Server {
	s := slacktest.New()
	t.Cleanup(s.Close)
	return s
}

// testConfig is a fast configuration with every route pointing at s.
func testConfig(s *slacktest.Server) config.Alerts {
	return config.Alerts{
		WebhookURL:        s.Hook("info"),
		WebhookURLError:   s.Hook("error"),
		WebhookURLWarning: s.Hook("warning"),
		SendBudget:        2 * time.Second,
		MaxElapsed:        3 * time.Second,
		MinInterval:       0,
		RequestTimeout:    time.Second,
	}
}

func testLogger(t *testing.T) *slog.Logger { return logging.New(t.Output(), slog.LevelDebug) }
