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
	"time"

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
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/fsclient"
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
	// WrapPublisher lets tests inject failures around the real Pub/Sub
	// client.
	WrapPublisher func(edge.Publisher) edge.Publisher
	// FirestoreOptions are passed to the Firestore client (a benchmark
	// counts RPCs with an interceptor).
	FirestoreOptions []option.ClientOption
	// BigQueryOptions are passed to the BigQuery client.
	BigQueryOptions []option.ClientOption
	// PubSubOptions are passed to the Pub/Sub client (a test intercepts
	// its RPCs).
	PubSubOptions []option.ClientOption
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
	// Effects is the effect log every decision owes its side effects in.
	Effects *effect.Engine
	Gates   []*gate.Gate
	Batches *batch.Tracker
	Sweeper *sweep.Sweeper
	Status  *status.Reader
	Health  *status.Health
	// BigQuery, Checks and History are nil when BigQuery is off (History
	// also in shadow mode).
	BigQuery *bigquery.Client
	Checks   *datacheck.Checker
	History  *history.Sink
	Edge     *edge.Edge
	Clock    clock.Clock
	Log      *slog.Logger
	Metrics  *metrics.Registry

	clients  *fsclient.Clients
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
	clients, err := fsclient.Open(ctx, project, o.FirestoreOptions...)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	fs := clients.FS
	if cfg.ProjectID == "" {
		return nil, errors.Join(clients.Close(), errors.New("app: set GCP_PROJECT or GOOGLE_CLOUD_PROJECT"))
	}
	emulated := os.Getenv("PUBSUB_EMULATOR_HOST") != ""
	b, err := bus.New(ctx, cfg.ProjectID, emulated, o.PubSubOptions...)
	if err != nil {
		return nil, errors.Join(clients.Close(), err)
	}
	a := &App{Cfg: cfg, FS: fs, clients: clients, Bus: b, Clock: o.Clock, Log: o.Log, Metrics: o.Metrics, handlers: map[string]http.Handler{}}
	var pub edge.Publisher = b
	if o.WrapPublisher != nil {
		pub = o.WrapPublisher(pub)
	}
	out := destinations(cfg, pub, o.Log, o.Metrics)
	a.Ops = opstate.New(fs, out.names, o.Clock, o.Log)
	a.PubSubBreaker = bus.NewBreaker(out.publisher, uint32(cfg.Gate.BreakerFailures), cfg.Gate.BreakerOpenFor, o.Log, o.Metrics, a.Ops)
	pub = a.PubSubBreaker
	a.Notifier = alert.NewNotifier(out.slack, o.Log, o.Metrics, append([]alert.Option{alert.WithRecorder(a.Ops)}, o.SlackOptions...)...)
	a.Edge = &edge.Edge{Log: o.Log, DeadLetter: pub, DLQTopic: cfg.Topics.DeadLetter, ProjectID: cfg.ProjectID, Metrics: o.Metrics}
	cfg.MarkOwned()
	keys := dedup.New(fs, cfg.Idempotency, out.names)
	if err := a.openBigQuery(ctx, o, out); err != nil {
		return nil, errors.Join(err, clients.Close(), b.Close())
	}
	a.Effects = &effect.Engine{FS: fs, Names: out.names, Alarms: alert.Alarms{}, Policies: policies(cfg),
		Retention: cfg.Effects.Retention, Shadow: cfg.Shadow(), Clock: o.Clock, Log: o.Log, Metrics: o.Metrics,
		Instance: a.Ops.Instance(), Owners: map[string]effect.Owner{},
		Sinks: map[effect.Kind]effect.Sink{effect.Publish: bus.Sink{P: pub, Topics: cfg.OutputTopics()},
			effect.Slack: alert.Sink{N: a.Notifier}}}
	historyTable := ""
	if a.History != nil {
		a.Effects.Sinks[effect.Row] = a.History
		historyTable = a.History.Table()
	}
	for i := range cfg.Phases {
		d := gate.Deps{
			Firestore: fs, Effects: a.Effects, Keys: keys, Clock: o.Clock, Log: o.Log, Metrics: o.Metrics,
			Gate: cfg.Gate, Names: out.names, BigQuery: cfg.BigQuery, HistoryTable: historyTable,
		}
		if a.Checks != nil {
			d.Checks = a.Checks
		}
		g := gate.New(&cfg.Phases[i], d)
		a.Gates = append(a.Gates, g)
		a.Effects.Owners[g.Collection()] = g
		a.handle(g.Phase().EntryPoint, a.Edge.Handler(g.Phase().EntryPoint, g.Handle))
	}
	a.Batches = batch.New(batch.Deps{Firestore: fs, Effects: a.Effects, Clock: o.Clock, Log: o.Log, Metrics: o.Metrics,
		Config: cfg, HistoryTable: historyTable, Raw: clients.Raw})
	a.Effects.Owners[a.Batches.Collection()] = a.Batches
	a.handle("PredictionCompletions", a.Edge.Handler("PredictionCompletions", a.Batches.Handle))
	a.Sweeper = &sweep.Sweeper{FS: fs, Effects: a.Effects, Heartbeat: a.Ops, Clock: o.Clock, Cfg: cfg.Sweep,
		Names: out.names, Log: o.Log, Metrics: o.Metrics,
		TakeOvers: []sweep.TakeOver{{Name: out.names.Coll(alert.Collection), Run: func(ctx context.Context) (int, error) {
			return alert.TakeOver(ctx, fs, out.names, a.Effects)
		}}}}
	if a.History != nil {
		a.Sweeper.TakeOvers = append(a.Sweeper.TakeOvers, sweep.TakeOver{Name: out.names.Coll(history.Collection),
			Run: func(ctx context.Context) (int, error) {
				return history.TakeOver(ctx, fs, out.names, a.Effects, historyTable)
			}})
	}
	for _, g := range a.Gates {
		a.Sweeper.Gates = append(a.Sweeper.Gates, g)
		a.Sweeper.TakeOvers = append(a.Sweeper.TakeOvers, sweep.TakeOver{
			Name: out.names.Coll(gate.LedgerCollection) + "[" + g.Phase().Name + "]", Run: g.SeedLedgerOnce})
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
	errs := []error{a.clients.Close(), a.Bus.Close()}
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
		a.History = history.NewSink(bq, cfg, o.Clock, o.Metrics)
	}
	return nil
}

// policies are how each kind of effect is performed, from the
// configuration.
func policies(cfg *config.Config) map[effect.Kind]effect.Policy {
	const margin = 10 * time.Second // Firestore latency and clock skew between instances
	// A message Slack or BigQuery did not take is due at the next sweep,
	// then waits 5 min, doubling to at most 1 h: an outage of hours costs
	// a few tries per effect, and the first sweep after it is over still
	// finds it within the hour.
	outage := func(n int64) time.Duration {
		if n <= 1 {
			return 0
		}
		d := 5 * time.Minute
		for i := int64(2); i < n && d < time.Hour; i++ {
			d *= 2
		}
		return min(d, time.Hour)
	}
	bq := cfg.BigQuery
	return map[effect.Kind]effect.Policy{
		// A message never fails for good, and is due again at once: the
		// redelivery its failure asks for, or the sweep, publishes it.
		effect.Publish: {Lease: cfg.Gate.ClaimLease, Budget: cfg.Gate.PublishTimeout, KeepRefused: -1,
			AlertAfter: int64(cfg.Gate.PublishFailuresAlert)},
		effect.Slack: {Lease: cfg.Alerts.MaxElapsed + margin, Budget: cfg.Alerts.SendBudget, RetryBudget: cfg.Alerts.MaxElapsed,
			Backoff: outage, KeepRefused: cfg.Alerts.KeepFor},
		// A row BigQuery refuses is refused for good at once: the same row
		// cannot become valid.
		effect.Row: {Lease: bq.QueryTimeout + bq.HistoryBudget + margin, Budget: bq.HistoryBudget,
			RetryBudget: bq.QueryTimeout + bq.HistoryBudget, Backoff: outage},
	}
}
