package crashpoints

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/bqclient"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/slacktest"
)

// Start is the fake clock's first reading: 2026-01-20 06:00 UTC, 01:00 in
// New York, so 2026-01-19 is an overnight date.
var Start = time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC)

// world is one run: a fresh project on the emulators, the App instances
// serving it (one live at a time; a dead one is replaced by a fresh App, as
// Cloud Run does), Pub/Sub's redelivery of what was not acknowledged, and
// the consumers that watch what leaves.
type world struct {
	ctx     context.Context
	sc      *Scenario
	project string
	cfg     *config.Config
	clock   *clock.Fake
	slack   *slacktest.Server
	b       *boundary
	fs      *firestore.Client // the world's own, outside the boundary
	bus     *bus.Bus          // the world's own: the consumers' subscriptions
	bq      *bigquery.Client  // nil unless the path needs BigQuery
	bqEmu   *emulator.BigQuery

	cur   *node
	nodes []*node
	seq   int

	mu      sync.Mutex
	pending []delivery // not acknowledged yet, in first-sent order
	fourxx  []string   // messages answered 4xx
	sweeps  int
}

type delivery struct {
	ep, id string
	data   []byte
}

// node is one App instance.
type node struct {
	in     *instance
	app    *app.App
	conns  []*grpc.ClientConn
	closed sync.Once
}

// abort ends a run that the harness itself could not carry out (an
// emulator refusing setup): it is reported as such, never as a violation.
type abort struct{ err error }

func (w *world) must(err error, what string) {
	if err != nil {
		panic(abort{fmt.Errorf("%s: %w", what, err)})
	}
}

// bqProject is the BigQuery emulator's project: it holds the checked
// tables and the history table.
const bqProject = "crashpoints"

// newWorld builds a run's world. A path that needs BigQuery gets an
// emulator of its own (bqBin): one emulator shared by runs is poisoned for
// all of them by one request cancelled in flight (it answers "sql:
// connection is already closed" from then on), and a run's crash cancels
// its instance's requests.
//
// run is the run's number, unique in the process: its project is its own.
func newWorld(ctx context.Context, sc *Scenario, run int, inject *Injection, bqBin string) (*world, error) {
	w := &world{ctx: ctx, sc: sc, project: fmt.Sprintf("cp%d-%d-%s", time.Now().UnixNano()%1e6, run, strings.ReplaceAll(sc.Name, "_", "-")),
		clock: clock.NewFake(Start), slack: slacktest.New()}
	if len(w.project) > 30 {
		w.project = strings.TrimRight(w.project[:30], "-")
	}
	w.b = newBoundary(w.clock, inject)
	cfg := config.Default()
	cfg.ProjectID = w.project
	cfg.Alerts.WebhookURL = w.slack.Hook("info")
	cfg.Alerts.WebhookURLError = w.slack.Hook("error")
	cfg.Alerts.WebhookURLWarning = w.slack.Hook("warning")
	// Slack answers at once here; short budgets keep an outage's retries
	// few, and the sweep does the rest on the fake clock.
	cfg.Alerts.MinInterval = 0
	cfg.Alerts.SendBudget = 150 * time.Millisecond
	cfg.Alerts.MaxElapsed = 150 * time.Millisecond
	cfg.Alerts.RequestTimeout = 2 * time.Second
	w.cfg = cfg
	if err := w.open(bqBin); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// open starts what the run needs: its BigQuery emulator, the path's
// configuration, the world's own clients, the consumers' subscriptions.
func (w *world) open(bqBin string) error {
	ctx, cfg := w.ctx, w.cfg
	var err error
	if w.sc.BigQuery {
		// A start can lose its free port to another process between the
		// pick and the listen; a second pick finds another.
		for try := 0; try < 3 && (try == 0 || err != nil); try++ {
			w.bqEmu, err = emulator.StartBigQuery(ctx, bqBin, bqProject, os.Getenv("PHASEGATE_EMULATOR_LOGS"))
		}
		if err != nil {
			return err
		}
		cfg.BigQuery.EmulatorHost, cfg.BigQuery.Project = w.bqEmu.Host, bqProject
		cfg.BigQuery.HistoryTable = w.dataset("history") + ".phase_execution_log"
		if w.bq, err = bqclient.New(ctx, bqProject, w.bqEmu.Host); err != nil {
			return err
		}
	}
	if w.sc.Config != nil {
		w.sc.Config(w, cfg)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("crashpoints: %s: configuration: %w", w.sc.Name, err)
	}
	if w.fs, err = emulator.NewFirestore(ctx, w.project); err != nil {
		return err
	}
	if w.bus, err = bus.New(ctx, w.project, true); err != nil {
		return err
	}
	for _, topic := range w.topics() {
		if _, err := w.bus.Subscribe(ctx, topic, "consumer-"+topic); err != nil {
			return err
		}
	}
	return nil
}

// topics are the ones a consumer watches: the outputs of what phasegate
// owns in this path, and the dead letters.
func (w *world) topics() []string {
	out := []string{w.cfg.Topics.DeadLetter}
	if w.cfg.Owns(config.BatchPhase) {
		out = append(out, w.cfg.Topics.BatchComplete)
	}
	for _, p := range w.cfg.Phases {
		if w.cfg.Owns(p.Name) {
			out = append(out, p.OutputTopic)
		}
	}
	return out
}

// dataset names a BigQuery dataset of the run. Every run has its own
// emulator, so the name is the same in each, and so are the sites that
// name it (BigQuery.insertAll history.phase_execution_log).
func (w *world) dataset(name string) string { return "cp_" + name }

func (w *world) close() {
	for _, n := range w.nodes {
		n.close()
	}
	w.slack.Close()
	if w.fs != nil {
		w.fs.Close()
	}
	if w.bus != nil {
		w.bus.Close()
	}
	if w.bq != nil {
		w.bq.Close()
	}
	if w.bqEmu != nil {
		w.bqEmu.Stop()
	}
}

// close ends the instance: its background work stops (a dead process
// runs nothing) and its connections close.
func (n *node) close() {
	n.closed.Do(func() {
		_ = n.app.Close()
		for _, c := range n.conns {
			_ = c.Close()
		}
	})
}

// node returns the live App instance, starting a fresh one when the last
// died (its background work is ended: a dead process runs nothing).
func (w *world) node() *node {
	if w.cur != nil && !w.cur.in.dead.Load() {
		return w.cur
	}
	if w.cur != nil {
		go w.cur.close()
	}
	w.seq++
	in := &instance{id: w.seq}
	p := &port{b: w.b, in: in}
	dial := []grpc.DialOption{grpc.WithChainUnaryInterceptor(p.unary), grpc.WithChainStreamInterceptor(p.stream)}
	fsConn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), dial...)
	w.must(err, "dial firestore")
	psConn, err := grpc.NewClient(os.Getenv("PUBSUB_EMULATOR_HOST"),
		append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	w.must(err, "dial pubsub")
	opts := app.Options{
		Clock: w.clock, Log: logging.New(logOut(), slog.LevelDebug), Metrics: &metrics.Registry{},
		FirestoreOptions: []option.ClientOption{option.WithGRPCConn(fsConn)},
		PubSubOptions:    []option.ClientOption{option.WithGRPCConn(psConn)},
		SlackOptions: []alert.Option{alert.WithTransport(roundTripper{p: p, kind: "slack", next: http.DefaultTransport}),
			// A first retry later than the send budget makes every send
			// one post, so the number of posts (and each call's
			// occurrence) does not depend on the machine's speed; the
			// sweep retries on the fake clock. A breaker open for real
			// seconds would outlast a run whose clock is fake.
			alert.WithRetryBase(time.Second), alert.WithBreaker(5, time.Millisecond)},
		BigQueryOptions: []option.ClientOption{option.WithHTTPClient(&http.Client{
			Transport: roundTripper{p: p, kind: "bigquery", next: http.DefaultTransport}})},
	}
	a, err := app.New(w.ctx, w.cfg, opts)
	w.must(err, "start an App instance")
	n := &node{in: in, app: a, conns: []*grpc.ClientConn{fsConn, psConn}}
	w.cur = n
	w.nodes = append(w.nodes, n)
	return n
}

func logOut() io.Writer {
	if os.Getenv("PHASEGATE_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// push delivers one message to an entry point of the live instance as a
// Pub/Sub push would, and returns its status; dropped is true when the
// instance died serving it (the connection dropped: no answer).
func (w *world) push(ep, id string, data []byte) (code int, dropped bool) {
	n := w.node()
	h, ok := n.app.Handler(ep)
	if !ok {
		w.must(fmt.Errorf("no entry point %s", ep), "push")
	}
	body := envelope.PushBody(id, data, nil, time.Now())
	rec := httptest.NewRecorder()
	n.in.serve(w.ctx, func(ctx context.Context) {
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/"+ep, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
	})
	return rec.Code, n.in.dead.Load()
}

// Deliver publishes a message to ep (JSON-encoded unless it is []byte).
// Pub/Sub pushes it, and pushes it again at once when it is not
// acknowledged (its backoff is seconds, which the fake clock does not
// count), so a transient failure does not reorder it behind the
// scenario's next message; what is still refused waits for converge.
func (w *world) Deliver(ep, id string, v any) {
	data, ok := v.([]byte)
	if !ok {
		var err error
		data, err = json.Marshal(v)
		w.must(err, "encode")
	}
	d := delivery{ep, id, data}
	w.attempt(d)
	w.mu.Lock()
	again := slices.ContainsFunc(w.pending, func(p delivery) bool { return p.ep == ep && p.id == id })
	w.mu.Unlock()
	if again {
		w.attempt(d)
	}
}

func (w *world) attempt(d delivery) {
	code, dropped := w.push(d.ep, d.id, d.data)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = slices.DeleteFunc(w.pending, func(p delivery) bool { return p.ep == d.ep && p.id == d.id })
	switch {
	case dropped || code >= 500:
		w.pending = append(w.pending, d)
	case code >= 400:
		w.fourxx = append(w.fourxx, fmt.Sprintf("%s %s answered %d", d.ep, d.id, code))
	}
}

// redeliver pushes every message not acknowledged once more, in order.
func (w *world) redeliver() {
	w.mu.Lock()
	ds := slices.Clone(w.pending)
	w.mu.Unlock()
	for _, d := range ds {
		w.attempt(d)
	}
}

// Sweep is one Cloud Scheduler tick: a message like any other, which
// Pub/Sub redelivers while the sweep answers 5xx (one that could not see
// part of its work).
func (w *world) Sweep() {
	w.sweeps++
	w.Deliver("Sweep", fmt.Sprintf("sweep-%d", w.sweeps), []byte(`{}`))
}

// Advance moves the fake clock.
func (w *world) Advance(d time.Duration) { w.clock.Advance(d) }

// convergeSteps move the clock past every lease (claims 60 s, alert
// sends), then through the backoffs of what the sweep retries (Slack's
// 5 min doubling to 1 h, BigQuery's).
var convergeSteps = []time.Duration{0, 61 * time.Second, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute,
	40 * time.Minute, time.Hour, time.Hour, time.Hour}

// converge plays Pub/Sub and Cloud Scheduler after the scenario: redeliver
// what was not acknowledged, run the sweep, move the clock, until nothing
// is pending and nothing is owed or claimed (after at least one sweep past
// every lease, and the scenario's Settle), or the steps run out.
func (w *world) converge() {
	var moved time.Duration
	for i, d := range convergeSteps {
		w.Advance(d)
		moved += d
		w.redeliver()
		w.Sweep()
		if i == 0 || moved < w.sc.Settle {
			continue
		}
		w.mu.Lock()
		left := len(w.pending)
		w.mu.Unlock()
		if left > 0 {
			continue
		}
		owed, err := owedOrClaimed(w.ctx, w.fs, w.cfg)
		w.must(err, "read what is owed")
		if len(owed) == 0 {
			return
		}
	}
}

// Pull returns every message waiting on topic's consumer subscription.
func (w *world) Pull(topic string) []*pubsubpb.PubsubMessage {
	var out []*pubsubpb.PubsubMessage
	c := w.bus.Client().SubscriptionAdminClient
	name := fmt.Sprintf("projects/%s/subscriptions/consumer-%s", w.project, topic)
	empty := 0
	for empty < 2 {
		//nolint:staticcheck // ReturnImmediately: the emulator answers an empty pull at once instead of after a quiet period.
		res, err := c.Pull(w.ctx, &pubsubpb.PullRequest{Subscription: name, MaxMessages: 1000, ReturnImmediately: true})
		w.must(err, "pull "+topic)
		if len(res.ReceivedMessages) == 0 {
			empty++
			continue
		}
		ids := make([]string, 0, len(res.ReceivedMessages))
		for _, rm := range res.ReceivedMessages {
			out = append(out, rm.Message)
			ids = append(ids, rm.AckId)
		}
		w.must(c.Acknowledge(w.ctx, &pubsubpb.AcknowledgeRequest{Subscription: name, AckIds: ids}), "ack")
	}
	return out
}

// SlackDown makes Slack answer 500 from now on.
func (w *world) SlackDown() {
	w.slack.SetDefault(slacktest.Reply{Status: http.StatusInternalServerError})
}

// SlackUp brings Slack back.
func (w *world) SlackUp() { w.slack.SetDefault(slacktest.Reply{Status: http.StatusOK}) }
