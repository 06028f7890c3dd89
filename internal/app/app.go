// Package app wires phasegate's parts from a configuration: one App serves
// every entry point, whether functions-framework hosts one of them on Cloud
// Run or `phasegate serve` hosts them all locally.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/bqclient"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/edge"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/history"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/opstate"
	"github.com/phasegate/phasegate/internal/status"
	"github.com/phasegate/phasegate/internal/sweep"
)

// Options are what differs between production, a local server and a test.
type Options struct {
	Clock   clock.Clock       // default: the wall clock
	Log     *slog.Logger      // default: Cloud Logging JSON on stdout
	Metrics *metrics.Registry // default: metrics.Default
	// Slack lets tests point alerts at a local webhook server.
	SlackOptions []alert.Option
	// WrapPublisher and Fault let tests inject failures around the real
	// Pub/Sub client and inside the trigger protocol.
	WrapPublisher func(edge.Publisher) edge.Publisher
	Fault         func(step string) error
	// FirestoreOptions are passed to the Firestore client (a benchmark
	// counts RPCs with an interceptor).
	FirestoreOptions []option.ClientOption
	// BigQueryOptions are passed to the BigQuery client.
	BigQueryOptions []option.ClientOption
}

// App holds the shared clients and the handlers built on them.
type App struct {
	Cfg *config.Config
	FS  *firestore.Client
	Bus *bus.Bus
	// PubSubBreaker guards every publish; its transitions are recorded in Ops.
	PubSubBreaker *bus.Breaker
	// Ops records what Health reads: breaker transitions, the sweep's heartbeat.
	Ops      *opstate.Store
	Notifier *alert.Notifier
	Alerts   *alert.Service
	Gates    []*gate.Gate
	Batches  *batch.Tracker
	Sweeper  *sweep.Sweeper
	Status   *status.Reader
	Health   *status.Health
	// BigQuery, Checks and History are nil when BigQuery is off.
	BigQuery *bigquery.Client
	Checks   *datacheck.Checker
	History  *history.Log
	Edge     *edge.Edge
	Clock    clock.Clock
	Log      *slog.Logger
	Metrics  *metrics.Registry

	handlers map[string]http.Handler
	order    []string
}

// handle registers an entry point's handler.
func (a *App) handle(entryPoint string, h http.Handler) {
	a.handlers[entryPoint] = h
	a.order = append(a.order, entryPoint)
}

// New connects to Firestore and Pub/Sub (the emulators when their variables
// are set, in which case missing topics are created) and builds every part.
func New(ctx context.Context, cfg *config.Config, o Options) (*App, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = logging.New(os.Stdout, slog.LevelInfo)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Default
	}
	project := cfg.ProjectID
	if project == "" {
		project = firestore.DetectProjectID
	}
	fs, err := emulator.NewFirestore(ctx, project, o.FirestoreOptions...)
	if err != nil {
		return nil, fmt.Errorf("app: firestore: %w", err)
	}
	if cfg.ProjectID == "" {
		return nil, errors.Join(fs.Close(), errors.New("app: set GCP_PROJECT or GOOGLE_CLOUD_PROJECT"))
	}
	emulated := os.Getenv("PUBSUB_EMULATOR_HOST") != ""
	b, err := bus.New(ctx, cfg.ProjectID, emulated)
	if err != nil {
		return nil, errors.Join(fs.Close(), err)
	}
	a := &App{Cfg: cfg, FS: fs, Bus: b, Clock: o.Clock, Log: o.Log, Metrics: o.Metrics, handlers: map[string]http.Handler{}}
	var pub edge.Publisher = b
	if o.WrapPublisher != nil {
		pub = o.WrapPublisher(pub)
	}
	out := destinations(cfg, pub, o.Log, o.Metrics)
	a.Ops = opstate.New(fs, out.names, o.Clock, o.Log)
	a.PubSubBreaker = bus.NewBreaker(out.publisher, uint32(cfg.Gate.BreakerFailures), cfg.Gate.BreakerOpenFor, o.Log, o.Metrics, a.Ops)
	pub = a.PubSubBreaker
	a.Notifier = alert.NewNotifier(out.slack, o.Log, o.Metrics, append([]alert.Option{alert.WithRecorder(a.Ops)}, o.SlackOptions...)...)
	a.Alerts = alert.NewService(fs, a.Notifier, o.Clock, out.slack, o.Log, o.Metrics).In(out.names)
	a.Edge = &edge.Edge{Log: o.Log, DeadLetter: pub, DLQTopic: cfg.Topics.DeadLetter, ProjectID: cfg.ProjectID, Metrics: o.Metrics}
	cfg.MarkOwned()
	keys := dedup.New(fs, cfg.Idempotency, out.names)
	if err := a.openBigQuery(ctx, o, out); err != nil {
		return nil, errors.Join(err, fs.Close(), b.Close())
	}
	for i := range cfg.Phases {
		d := gate.Deps{
			Firestore: fs, Publisher: pub, Alerts: a.Alerts, Keys: keys, Clock: o.Clock,
			Log: o.Log, Metrics: o.Metrics, Gate: cfg.Gate, Names: out.names, Fault: o.Fault, BigQuery: cfg.BigQuery,
		}
		if a.Checks != nil {
			d.Checks = a.Checks
		}
		if a.History != nil {
			d.History = a.History
		}
		g := gate.New(&cfg.Phases[i], d)
		a.Gates = append(a.Gates, g)
		a.handle(g.Phase().EntryPoint, a.Edge.Handler(g.Phase().EntryPoint, g.Handle))
	}
	bd := batch.Deps{Firestore: fs, Publisher: pub, Alerts: a.Alerts, Clock: o.Clock,
		Log: o.Log, Metrics: o.Metrics, Config: cfg, Fault: o.Fault}
	if a.History != nil {
		bd.History = a.History
	}
	a.Batches, err = batch.New(ctx, bd)
	if err != nil {
		return nil, errors.Join(err, fs.Close(), b.Close())
	}
	a.handle("PredictionCompletions", a.Edge.Handler("PredictionCompletions", a.Batches.Handle))
	a.Sweeper = &sweep.Sweeper{FS: fs, Alerts: a.Alerts, Heartbeat: a.Ops, Clock: o.Clock, Cfg: cfg.Sweep, Names: out.names, Log: o.Log, Metrics: o.Metrics}
	if a.History != nil {
		a.Sweeper.History = a.History
	}
	for _, g := range a.Gates {
		a.Sweeper.Gates = append(a.Sweeper.Gates, g)
	}
	if cfg.Owns(config.BatchPhase) {
		a.Sweeper.Batches = batch.ForSweep{T: a.Batches}
	}
	a.handle("Sweep", a.Edge.Handler("Sweep", a.Sweeper.Handle))
	a.Status = &status.Reader{FS: fs, Phases: cfg.Phases, Batch: cfg.Batch, LookBack: cfg.Sweep.LookBack,
		Batches: a.batchesOf, BatchRange: a.batchesIn, Clock: o.Clock, Names: out.names}
	a.handle("Status", a.Status.Handler(a.batchStatus))
	a.Health = &status.Health{FS: fs, Names: out.names, Phases: cfg.Phases, BatchColl: batch.Collection, BatchState: batch.FieldState,
		BreakerList: append(a.Notifier.BreakerNames(), bus.BreakerName), Clock: o.Clock, Log: o.Log, Instance: a.instance}
	a.handle("Health", a.Health)
	return a, nil
}

// batchStatus answers Status?batch_id=: the batch in O(1) reads, or with
// completions=true a page of its completion list (page_size, page_token).
func (a *App) batchStatus(ctx context.Context, id string, q url.Values) (any, bool, error) {
	var (
		v   any
		err error
	)
	if q.Get("completions") == "true" {
		size := 0
		if s := q.Get("page_size"); s != "" {
			if size, err = strconv.Atoi(s); err != nil || size < 1 || size > batch.MaxPageSize {
				return nil, false, fmt.Errorf("%w: page_size must be 1 to %d", status.ErrBadRequest, batch.MaxPageSize)
			}
		}
		v, err = a.Batches.Completions(ctx, id, q.Get("page_token"), size)
	} else {
		v, err = a.Batches.Status(ctx, id, batch.StatusOptions{})
	}
	if errors.Is(err, batch.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

// batchesOf is the Status page's view of a date's prediction batches.
func (a *App) batchesOf(ctx context.Context, gameDate string) ([]status.Batch, error) {
	sts, err := a.Batches.OfDate(ctx, gameDate)
	if err != nil {
		return nil, err
	}
	out := make([]status.Batch, 0, len(sts))
	for _, st := range sts {
		b := status.Batch{BatchID: st.BatchID, Expected: st.Expected, Completed: st.Distinct, Predictions: st.Predictions,
			Complete: st.Complete, Status: st.Status, Reason: st.Reason, StartTime: st.StartTime, ProgressAt: st.ProgressTime}
		if !st.CompletedAt.IsZero() {
			b.CompletedAt = &st.CompletedAt
		}
		out = append(out, b)
	}
	return out, nil
}

// batchesIn is the season grid's view of a range's prediction batches.
func (a *App) batchesIn(ctx context.Context, from, to string) ([]status.BatchSummary, error) {
	sums, err := a.Batches.InRange(ctx, from, to, status.MaxSeasonDates*batch.MaxPerDate)
	if err != nil {
		return nil, err
	}
	out := make([]status.BatchSummary, 0, len(sums))
	for _, s := range sums {
		b := status.BatchSummary{BatchID: s.BatchID, GameDate: s.GameDate, Expected: s.Expected, Completed: s.Completed,
			Complete: s.Complete, Status: s.Status, StartTime: s.StartTime}
		if !s.CompletedAt.IsZero() {
			b.CompletedAt = &s.CompletedAt
		}
		out = append(out, b)
	}
	return out, nil
}

// instance is this instance's own view, which Health adds under "instance":
// its breakers as it sees them and its counters.
func (a *App) instance() any {
	m := a.Notifier.Breakers()
	m[bus.BreakerName] = a.PubSubBreaker.State()
	return map[string]any{"id": a.Ops.Instance(), "breakers": m, "counters": a.Metrics.Snapshot()}
}

// Handler returns the HTTP handler of an entry point.
func (a *App) Handler(entryPoint string) (http.Handler, bool) {
	h, ok := a.handlers[entryPoint]
	return h, ok
}

// EntryPoints lists every entry point the App serves, in registration order.
func (a *App) EntryPoints() []string { return a.order }

// Mux serves every entry point at /<EntryPoint>.
func (a *App) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, ep := range a.EntryPoints() {
		h, _ := a.Handler(ep)
		mux.Handle("/"+ep, h)
	}
	return mux
}

// Close releases the clients.
func (a *App) Close() error {
	errs := []error{a.FS.Close(), a.Bus.Close(), a.Batches.Close()}
	if a.BigQuery != nil {
		errs = append(errs, a.BigQuery.Close())
	}
	return errors.Join(errs...)
}

// openBigQuery opens the client behind the data checks and the history
// table, unless BigQuery is off: a local run on the Firestore emulator
// without a BigQuery emulator (CONTRACT §10), or both features switched off.
func (a *App) openBigQuery(ctx context.Context, o Options, out sinks) error {
	cfg := a.Cfg.BigQuery
	if os.Getenv("FIRESTORE_EMULATOR_HOST") != "" && cfg.EmulatorHost == "" {
		a.Log.InfoContext(ctx, "BigQuery data checks and history are off: FIRESTORE_EMULATOR_HOST is set and BIGQUERY_EMULATOR_HOST is not")
		return nil
	}
	if cfg.DataChecks.Percent == 0 && !(cfg.History && out.history) {
		return nil
	}
	project := cfg.Project
	if project == "" {
		project = a.Cfg.ProjectID
	}
	bq, err := bqclient.New(ctx, project, cfg.EmulatorHost, o.BigQueryOptions...)
	if err != nil {
		return fmt.Errorf("app: %w", err)
	}
	a.BigQuery = bq
	if cfg.DataChecks.Percent > 0 {
		a.Checks = datacheck.New(bq, project, cfg, o.Clock, o.Log, o.Metrics)
	}
	if cfg.History && out.history {
		a.History = history.New(a.FS, bq, cfg, o.Clock, o.Log, o.Metrics)
	}
	return nil
}
