package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/edge"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/testenv"
)

// The processors of each phase as they name themselves on the wire, and the
// names the gate records them under.
var (
	phase2 = []string{"BdlPlayerBoxscoresProcessor", "BigDataBallPbpProcessor", "OddsApiGameLinesBatchProcessor",
		"NbacScheduleProcessor", "NbacGamebookProcessor", "BrRostersCurrentProcessor"}
	phase2Names = []string{"bdl_player_boxscores", "bigdataball_play_by_play", "odds_api_game_lines",
		"nbac_schedule", "nbac_gamebook_player_stats", "br_roster"}
	phase3 = []string{"PlayerGameSummaryProcessor", "TeamDefenseGameSummaryProcessor", "TeamOffenseGameSummaryProcessor",
		"AsyncUpcomingPlayerGameContextProcessor", "UpcomingTeamGameContextProcessor"}
	phase3Names = []string{"player_game_summary", "team_defense_game_summary", "team_offense_game_summary",
		"upcoming_player_game_context", "upcoming_team_game_context"}
	phase4 = []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor",
		"PlayerCompositeFactorsProcessor", "PlayerDailyCacheProcessor", "MLFeatureStoreProcessor"}
	phase4Names = []string{"team_defense_zone_analysis", "player_shot_zone_analysis",
		"player_composite_factors", "player_daily_cache", "ml_feature_store"}
)

// date is overnight for phase 3 at apptest.Start.
const date = "2026-01-19"

// flakyPublisher fails the next n publishes to one topic: Pub/Sub
// unavailable, then back.
type flakyPublisher struct {
	edge.Publisher
	topic  string
	n      atomic.Int32
	failed atomic.Int32
}

func (f *flakyPublisher) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	if topic == f.topic && f.n.Add(-1) >= 0 {
		f.failed.Add(1)
		return "", errors.New("injected: pubsub unavailable")
	}
	return f.Publisher.Publish(ctx, topic, data, attrs)
}

// rig is one row's world: a whole App on a fresh project, plus the
// consumer's subscriptions and the bookkeeping of what was delivered.
type rig struct {
	*apptest.Env
	t       *testing.T
	ep      string // the gate's entry point
	phase   *config.Phase
	pub     *flakyPublisher
	trigger *testenv.Sub // the consumer of the gate's output topic
	dlq     *testenv.Sub

	mu      sync.Mutex
	pending map[string][]byte // message id → data, not acknowledged yet
	sent    map[string][]byte // every message id delivered, for the record

	fivexx     atomic.Int64 // 5xx answers seen
	leaseWaits int          // times settling had to let a lease expire
}

type rigOpt struct {
	cfg      func(*config.Config)
	failPubs int  // publishes to the output topic that fail first
	slack    bool // shorten Slack's time bounds so scripted timeouts are quick
	extra    []apptest.Option
}

func newRig(t *testing.T, ep string, o rigOpt) *rig {
	t.Helper()
	r := &rig{t: t, ep: ep, pending: map[string][]byte{}, sent: map[string][]byte{}}
	base := config.Default()
	p, ok := base.Phase(ep)
	if !ok {
		t.Fatalf("no phase %s", ep)
	}
	r.pub = &flakyPublisher{topic: p.OutputTopic}
	r.pub.n.Store(int32(o.failPubs))
	r.Env = apptest.New(t, append([]apptest.Option{
		apptest.WithPublisher(func(inner edge.Publisher) edge.Publisher { r.pub.Publisher = inner; return r.pub }),
		apptest.WithConfig(func(c *config.Config) {
			if o.slack {
				c.Alerts.RequestTimeout = 300 * time.Millisecond
				c.Alerts.SendBudget = 1500 * time.Millisecond
				c.Alerts.MaxElapsed = 4 * time.Second
			}
			if o.cfg != nil {
				o.cfg(c)
			}
		})}, o.extra...)...)
	r.phase, _ = r.Cfg.Phase(ep)
	r.trigger = r.Sub(r.phase.OutputTopic)
	r.dlq = r.Sub(r.Cfg.Topics.DeadLetter)
	return r
}

func (r *rig) handler(ep string) http.Handler {
	h, ok := r.App.Handler(ep)
	if !ok {
		r.t.Fatalf("no entry point %s", ep)
	}
	return h
}

func (r *rig) encode(v any) []byte {
	if b, ok := v.([]byte); ok {
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// deliver pushes a message as Pub/Sub does, redelivering a 5xx up to
// attempts times with short pauses and without moving the clock. A message
// still refused stays pending for settle. It returns the last status.
func (r *rig) deliver(id string, v any, attempts int) int {
	data := r.encode(v)
	r.mu.Lock()
	r.sent[id] = data
	r.mu.Unlock()
	pause := 20 * time.Millisecond
	code := 0
	for i := 0; i < attempts; i++ {
		code = testenv.Push(r.handler(r.ep), id, data, nil)
		if code < 500 {
			break
		}
		r.fivexx.Add(1)
		if i+1 < attempts {
			time.Sleep(pause)
			pause = min(2*pause, 500*time.Millisecond)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if code >= 500 {
		r.pending[id] = data
	} else {
		delete(r.pending, id)
	}
	if code >= 300 && code < 500 {
		r.t.Errorf("message %s answered %d: a Pub/Sub-triggered entry point never answers 4xx", id, code)
	}
	return code
}

// once pushes a single attempt.
func (r *rig) once(id string, v any) int { return r.deliver(id, v, 1) }

// concurrently runs every delivery at once and waits for them.
func (r *rig) concurrently(fs ...func()) {
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(f)
	}
	wg.Wait()
}

func (r *rig) sweep() {
	r.t.Helper()
	id := fmt.Sprintf("sweep-%d", time.Now().UnixNano())
	if c := testenv.Push(r.handler("Sweep"), id, []byte(`{}`), nil); c >= 300 {
		r.t.Errorf("sweep answered %d", c)
	}
}

// settle is what Pub/Sub and Cloud Scheduler do after the faults: redeliver
// every unacknowledged message; when that is not enough, let the leases
// run out (and the sweep run) and redeliver again. Last, sweeps past every
// lease until the effect log owes no alert.
func (r *rig) settle() {
	r.t.Helper()
	for round := 0; ; round++ {
		r.mu.Lock()
		ids := sortedKeys(r.pending)
		datas := make([][]byte, len(ids))
		for i, id := range ids {
			datas[i] = r.pending[id]
		}
		r.mu.Unlock()
		if len(ids) == 0 {
			break
		}
		if round == 8 {
			r.t.Fatalf("messages never acknowledged: %v", ids)
		}
		for i, id := range ids {
			r.deliver(id, datas[i], 4)
		}
		r.mu.Lock()
		left := len(r.pending)
		r.mu.Unlock()
		if left > 0 {
			r.leaseWaits++
			r.Clock.Advance(r.Cfg.Gate.ClaimLease)
			r.sweep()
		}
	}
	// Sweeps past every lease until no alert is owed (a slow machine may
	// need more than one sweep to get through Slack's faults).
	for range 4 {
		r.Clock.Advance(r.Cfg.Gate.ClaimLease)
		r.sweep()
		if r.alertsOwed() == 0 {
			return
		}
	}
}

// alertsOwed counts Slack effects not performed yet.
func (r *rig) alertsOwed() int {
	n := 0
	for _, d := range r.slackEffects() {
		if d["state"] == string(effect.Owed) {
			n++
		}
	}
	return n
}

// slackEffects are the effect log's Slack records.
func (r *rig) slackEffects() []map[string]any {
	docs, err := r.App.FS.Collection(effect.Collection).Where("kind", "==", string(effect.Slack)).Documents(context.Background()).GetAll()
	if err != nil {
		r.t.Fatal(err)
	}
	var out []map[string]any
	for _, d := range docs {
		out = append(out, d.Data())
	}
	return out
}

// drain returns what the consumer and the dead-letter topic received.
func (r *rig) drain() (triggers, dead []*pubsubpb.PubsubMessage) {
	var wg sync.WaitGroup
	wg.Go(func() { triggers = r.trigger.Drain(r.t, 1500*time.Millisecond) })
	wg.Go(func() { dead = r.dlq.Drain(r.t, 1500*time.Millisecond) })
	wg.Wait()
	return triggers, dead
}

// byTrigger groups the consumer's messages by trigger_id, checking that
// every copy of one trigger is byte-identical and that the attributes agree
// with the body.
func byTrigger(t *testing.T, msgs []*pubsubpb.PubsubMessage) map[string][]gate.Message {
	t.Helper()
	out := map[string][]gate.Message{}
	first := map[string]string{}
	for _, m := range msgs {
		var g gate.Message
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatalf("trigger is not JSON: %v: %q", err, m.Data)
		}
		if m.Attributes["trigger_id"] != g.TriggerID || m.Attributes["game_date"] != g.GameDate ||
			m.Attributes["phase"]+":"+g.GameDate != strings.Join(strings.Split(g.TriggerID, ":")[:2], ":") {
			t.Errorf("attributes %v disagree with body %s", m.Attributes, m.Data)
		}
		if prev, ok := first[g.TriggerID]; ok && prev != string(m.Data) {
			t.Errorf("copies of %s differ:\n%s\n%s", g.TriggerID, prev, m.Data)
		}
		first[g.TriggerID] = string(m.Data)
		out[g.TriggerID] = append(out[g.TriggerID], g)
	}
	return out
}

// alertsSettled checks Slack against the effect log: every delivered post
// is recorded as done, no title was delivered twice on a route (at most one
// message per alert key and one follow-up), and nothing is left owed.
func (r *rig) alertsSettled(want int) {
	t := r.t
	t.Helper()
	posts := r.Slack.Delivered()
	seen := map[string]int{}
	for _, p := range posts {
		title, _, _ := strings.Cut(p.Text, " — ")
		seen[p.Path+" "+title]++
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("slack got %q %d times: at most once per alert key", k, n)
		}
	}
	recorded := 0
	for _, d := range r.slackEffects() {
		switch {
		case d["state"] != string(effect.Done):
			t.Errorf("alert %v not settled: state %v", d["key"], d["state"])
		case d["ref"] != "skipped":
			recorded++
		}
	}
	if len(posts) != recorded {
		t.Errorf("slack delivered %d messages, the outbox recorded %d: %+v", len(posts), recorded, texts(posts))
	}
	if len(posts) != want {
		t.Errorf("slack delivered %d messages, want %d: %v", len(posts), want, texts(posts))
	}
}

func texts(posts []slacktest.Post) []string {
	var out []string
	for _, p := range posts {
		out = append(out, fmt.Sprintf("%s %d %s", p.Path, p.Status, p.Text))
	}
	return out
}

// gateDoc returns the gate document of the row's phase.
func (r *rig) gateDoc(d string) map[string]any {
	r.t.Helper()
	doc := r.Doc(r.phase.Collection + "/" + d)
	if doc == nil {
		r.t.Fatalf("no gate document %s/%s", r.phase.Collection, d)
	}
	return doc
}

// keys lists the idempotency keys.
func (r *rig) keys() []map[string]any {
	r.t.Helper()
	docs, err := r.App.FS.Collection(dedup.Collection).Documents(context.Background()).GetAll()
	if err != nil {
		r.t.Fatal(err)
	}
	var out []map[string]any
	for _, d := range docs {
		out = append(out, d.Data())
	}
	return out
}

func completion(processor, status string) map[string]any {
	return apptest.Completion(processor, date, status)
}

// withExec gives a completion its own execution id (a processor's rerun).
func withExec(m map[string]any, exec string) map[string]any {
	m["execution_id"] = exec
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
