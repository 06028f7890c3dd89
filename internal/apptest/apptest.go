// Package apptest builds a whole phasegate App against the emulators for an
// integration test: a fresh project, a fake clock, a stand-in Slack, and
// Pub/Sub subscriptions that play the downstream consumers.
package apptest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/option"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/edge"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/testenv"
)

// Start is the fake clock's default reading: 2026-01-20 06:00 UTC, 01:00 in
// New York, so 2026-01-19 is an overnight date.
var Start = time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC)

// Env is one test's world.
type Env struct {
	T       testing.TB
	Project string
	Cfg     *config.Config
	App     *app.App
	Clock   *clock.Fake
	Slack   *slacktest.Server
	Metrics *metrics.Registry
	Mux     http.Handler
}

// Option adjusts the setup.
type Option func(*setup)

type setup struct {
	cfg  func(*config.Config)
	opts app.Options
	logs *Logs
}

// WithConfig edits the configuration before the App is built.
func WithConfig(f func(*config.Config)) Option {
	return func(s *setup) {
		prev := s.cfg
		s.cfg = func(c *config.Config) {
			if prev != nil {
				prev(c)
			}
			f(c)
		}
	}
}

// WithPublisher wraps the real publisher, to inject Pub/Sub failures.
func WithPublisher(w func(edge.Publisher) edge.Publisher) Option {
	return func(s *setup) { s.opts.WrapPublisher = w }
}

// WithSlackOptions passes options to the App's Slack notifier.
func WithSlackOptions(o ...alert.Option) Option {
	return func(s *setup) { s.opts.SlackOptions = append(s.opts.SlackOptions, o...) }
}

// WithPubSubOptions passes options to the App's Pub/Sub client (a test
// intercepts its RPCs).
func WithPubSubOptions(o ...option.ClientOption) Option {
	return func(s *setup) { s.opts.PubSubOptions = append(s.opts.PubSubOptions, o...) }
}

// WithBigQueryOptions passes options to the App's BigQuery client.
func WithBigQueryOptions(o ...option.ClientOption) Option {
	return func(s *setup) { s.opts.BigQueryOptions = append(s.opts.BigQueryOptions, o...) }
}

// WithFirestoreOptions passes options to the App's Firestore client.
func WithFirestoreOptions(o ...option.ClientOption) Option {
	return func(s *setup) { s.opts.FirestoreOptions = append(s.opts.FirestoreOptions, o...) }
}

// WithBigQuery points the data checks and the history table at the BigQuery
// emulator (or a fake of its REST API) at host; its project holds the tables.
func WithBigQuery(host, project string) Option {
	return func(s *setup) {
		prev := s.cfg
		s.cfg = func(c *config.Config) {
			c.BigQuery.EmulatorHost, c.BigQuery.Project = host, project
			if prev != nil {
				prev(c)
			}
		}
	}
}

// New builds an Env; everything is closed when the test ends.
func New(t testing.TB, options ...Option) *Env {
	t.Helper()
	s := &setup{}
	for _, o := range options {
		o(s)
	}
	e := &Env{T: t, Project: testenv.Project(t), Clock: clock.NewFake(Start), Slack: slacktest.New(), Metrics: &metrics.Registry{}}
	t.Cleanup(e.Slack.Close)
	cfg := config.Default()
	cfg.ProjectID = e.Project
	cfg.Alerts.WebhookURL = e.Slack.Hook("info")
	cfg.Alerts.WebhookURLError = e.Slack.Hook("error")
	cfg.Alerts.WebhookURLWarning = e.Slack.Hook("warning")
	cfg.Alerts.MinInterval = 0
	cfg.Alerts.SendBudget = 2 * time.Second
	if s.cfg != nil {
		s.cfg(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.Cfg = cfg
	var w io.Writer = io.Discard
	switch {
	case s.logs != nil:
		w = s.logs
	case os.Getenv("PHASEGATE_TEST_LOG") != "":
		w = os.Stderr
	}
	s.opts.Clock, s.opts.Log, s.opts.Metrics = e.Clock, logging.New(w, slog.LevelDebug), e.Metrics
	s.opts.SlackOptions = append(s.opts.SlackOptions, alert.WithRetryBase(10*time.Millisecond))
	a, err := app.New(context.Background(), cfg, s.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	e.App, e.Mux = a, a.Mux()
	return e
}

// Instance builds a second App on e's project, configuration and clock,
// with its own memory (breakers, counters, caches): another instance of the
// same deployment.
func (e *Env) Instance() *app.App {
	e.T.Helper()
	a, err := app.New(context.Background(), e.Cfg, app.Options{Clock: e.Clock, Log: logging.New(io.Discard, slog.LevelDebug),
		Metrics: &metrics.Registry{}, SlackOptions: []alert.Option{alert.WithRetryBase(10 * time.Millisecond)}})
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { a.Close() })
	return a
}

// On returns e serving through a, another instance of the deployment (see
// Instance): what a redelivery meets after its first instance died.
func (e *Env) On(a *app.App) *Env {
	c := *e
	c.App, c.Mux = a, a.Mux()
	return &c
}

// Sub subscribes to topic; create it before the messages it should see.
func (e *Env) Sub(topic string) *testenv.Sub { return testenv.Subscribe(e.T, e.App.Bus, topic) }

// Deliver pushes v (JSON-encoded unless it is []byte) to entryPoint as
// Pub/Sub would, redelivering on 5xx; it returns the final status.
func (e *Env) Deliver(entryPoint, msgID string, v any) int {
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			e.T.Fatal(err)
		}
	}
	h := e.handler(entryPoint)
	_, code := testenv.Deliver(h, msgID, data, nil, 50)
	return code
}

// PushOnce pushes once, without redelivery, and returns the status.
func (e *Env) PushOnce(entryPoint, msgID string, v any) int {
	data, err := json.Marshal(v)
	if err != nil {
		e.T.Fatal(err)
	}
	return testenv.Push(e.handler(entryPoint), msgID, data, nil)
}

func (e *Env) handler(entryPoint string) http.Handler {
	h, ok := e.App.Handler(entryPoint)
	if !ok {
		e.T.Fatalf("no entry point %s", entryPoint)
	}
	return h
}

// Doc reads a document's data (nil when missing).
func (e *Env) Doc(path string) map[string]any {
	e.T.Helper()
	snap, err := e.App.FS.Doc(path).Get(context.Background())
	if err != nil {
		if snap != nil && !snap.Exists() {
			return nil
		}
		e.T.Fatalf("read %s: %v", path, err)
	}
	return snap.Data()
}

// Effect reads the effect record whose key is key (whatever its
// incarnation), with its document id under "id"; nil when there is none.
// It fails the test when several incarnations hold one.
func (e *Env) Effect(key string) map[string]any {
	e.T.Helper()
	snaps, err := e.App.FS.Collection(e.App.Effects.Names.Coll(effect.Collection)).Where("key", "==", key).
		Documents(context.Background()).GetAll()
	if err != nil {
		e.T.Fatalf("read effect %s: %v", key, err)
	}
	switch len(snaps) {
	case 0:
		return nil
	case 1:
		d := snaps[0].Data()
		d["id"] = snaps[0].Ref.ID
		return d
	}
	e.T.Fatalf("effect %s: %d records", key, len(snaps))
	return nil
}

// Completion is a processor's completion message.
func Completion(processor, date, status string) map[string]any {
	return map[string]any{
		"processor_name": processor, "game_date": date, "status": status,
		"execution_id": "exec-" + processor, "correlation_id": "corr-" + date,
		"record_count": 100, "timestamp": Start.Format(time.RFC3339),
	}
}

// FailPublishes makes the first n publishes to topic fail, as an
// unavailable Pub/Sub would; later ones reach the emulator.
func FailPublishes(topic string, n int) Option {
	return WithPublisher(func(p edge.Publisher) edge.Publisher {
		f := &failingPublisher{Publisher: p, topic: topic}
		f.left.Store(int32(n))
		return f
	})
}

type failingPublisher struct {
	edge.Publisher
	topic string
	left  atomic.Int32
}

func (f *failingPublisher) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	if topic == f.topic && f.left.Add(-1) >= 0 {
		return "", errors.New("injected: pubsub unavailable")
	}
	return f.Publisher.Publish(ctx, topic, data, attrs)
}
