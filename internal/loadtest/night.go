package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	firestorepb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/fsclient"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// Run is one configuration of a night.
type Run struct {
	Name        string
	Instances   int           // K
	Concurrency int           // C: requests one instance serves at a time
	Players     int           // N
	Window      time.Duration // the players' completions arrive evenly over it; 0: unpaced
	Redeliver   float64       // share of worker completions Pub/Sub delivers twice
	Outstanding int           // unpaced: deliveries in flight at once
	Gates       bool          // play the three gates' completions first
	GateDups    float64       // share of gate completions delivered twice
	KillAt      float64       // SIGKILL instance 0 when this share of players was sent, then restart it; 0: never
	ArrivalRate int           // BATCH_ARRIVAL_RATE given to the instances
	Env         []string      // more environment for the instances
}

// Env is what every run shares.
type Env struct {
	Proxy        *Proxy
	Launcher     Launcher
	LogDir       string
	QueueTimeout time.Duration
	MinBackoff   time.Duration
	MaxBackoff   time.Duration
	Log          func(format string, args ...any)
}

// Result is what a run measured.
type Result struct {
	Name          string  `json:"name"`
	Instances     int     `json:"instances"`
	Concurrency   int     `json:"concurrency"`
	Players       int     `json:"players"`
	Paced         bool    `json:"paced"`
	WindowSeconds float64 `json:"window_seconds"`
	Deliveries    int     `json:"deliveries"` // worker completions pushed, redeliveries included
	Seconds       float64 `json:"seconds"`    // first push to last acknowledgement
	PerSecond     float64 `json:"completions_per_second"`
	// LatencyMS is from the last player's first push to the batch-complete
	// message arriving at a subscriber.
	LatencyMS     float64        `json:"latency_ms"`
	Attempts      map[string]int `json:"attempts_by_status"`
	Status5xx     int            `json:"status_5xx"`
	Refused429    int            `json:"refused_429"`
	ConnFailed    int            `json:"connection_failed"`
	RPCs          map[string]int `json:"firestore_rpcs"` // during the batch
	RPCsPerPlayer float64        `json:"firestore_rpcs_per_completion"`
	WritesPerPlay float64        `json:"firestore_writes_per_completion"`
	Hot           map[string]Hot `json:"hottest"` // by kind: shard, batch, gate
	Shards        int64          `json:"counter_shards"`
	Messages      int            `json:"batch_messages"`
	GateMessages  map[string]int `json:"gate_messages,omitempty"`
	Recorded      int64          `json:"completion_documents"`
	Lost          int64          `json:"lost"`
	CountedRight  bool           `json:"counts_right"`
	CheckClean    bool           `json:"check_clean"`
	Problems      []string       `json:"problems,omitempty"`
	RSSMiB        []float64      `json:"rss_mib"`
	Killed        bool           `json:"killed_and_restarted,omitempty"`
	Load          string         `json:"load"`
	writes        map[string][]float64
}

// Hot is the most written document of one kind.
type Hot struct {
	Doc    string  `json:"doc"`
	Writes int     `json:"writes"`
	Max1s  int     `json:"max_in_1s"`
	Max10s float64 `json:"max_per_s_over_10s"`
}

// Exact reports whether the run lost nothing and published exactly once.
func (r *Result) Exact() bool {
	return r.Lost == 0 && r.Messages == 1 && r.CountedRight && r.CheckClean && len(r.Problems) == 0
}

// Play runs one configuration on a fresh project and returns what it saw.
func (e *Env) Play(ctx context.Context, r Run) (*Result, error) {
	project := fmt.Sprintf("lt-%d-%d", time.Now().Unix(), runSeq.Add(1))
	res := &Result{Name: r.Name, Instances: r.Instances, Concurrency: r.Concurrency, Players: r.Players,
		Paced: r.Window > 0, WindowSeconds: r.Window.Seconds(), Hot: map[string]Hot{}, Load: loadAvg()}
	cfg := config.Default()
	cfg.ProjectID = project
	cfg.Batch.ArrivalRate = r.ArrivalRate
	clients, err := fsclient.Open(ctx, project)
	if err != nil {
		return nil, err
	}
	defer clients.Close()
	fs := clients.FS
	b, err := bus.New(ctx, project, true)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	// Subscribers of every topic the night should publish to, once each.
	topics := []string{cfg.Topics.BatchComplete}
	if r.Gates {
		for _, p := range cfg.Phases {
			topics = append(topics, p.OutputTopic)
		}
	}
	subs := map[string]*collector{}
	cctx, stopCollecting := context.WithCancel(ctx)
	defer stopCollecting()
	for _, t := range topics {
		c, err := collect(cctx, b, project, t)
		if err != nil {
			return nil, err
		}
		subs[t] = c
	}

	e.Proxy.Reset()
	env := []string{"GOOGLE_CLOUD_PROJECT=" + project, "GCP_PROJECT=" + project, "FIRESTORE_EMULATOR_HOST=" + e.Proxy.Addr,
		fmt.Sprintf("BATCH_ARRIVAL_RATE=%d", r.ArrivalRate)}
	fleet, err := StartFleet(ctx, e.Launcher, append(env, r.Env...), e.LogDir, project, r.Instances, r.Concurrency)
	if err != nil {
		return nil, err
	}
	defer fleet.Stop()
	d := &Dispatcher{Fleet: fleet, QueueTimeout: e.QueueTimeout, MinBackoff: e.MinBackoff, MaxBackoff: e.MaxBackoff, Deadline: 30 * time.Minute}
	date := gamedate.Today(time.Now()).AddDays(-1).String()

	if r.Gates {
		e.gates(ctx, d, &cfg.Phases, date, r.GateDups)
	}

	// The coordinator creates the batch, then its workers complete.
	batchID := fmt.Sprintf("batch_%s_%d", date, time.Now().Unix())
	now := time.Now().UTC()
	if _, err := fs.Collection(batch.Collection).Doc(batchID).Create(ctx, map[string]any{
		"batch_id": batchID, "game_date": date, "expected_players": r.Players, "completed_players": []string{},
		"total_predictions": 0, "is_complete": false, "start_time": now, "updated_at": now, "correlation_id": "lt-" + batchID,
	}); err != nil {
		return nil, fmt.Errorf("create batch: %w", err)
	}
	rpc0 := e.Proxy.Snapshot().RPCs
	type delivery struct {
		at     time.Duration
		player int
		again  bool // a redelivery
	}
	rng := rand.New(rand.NewPCG(uint64(r.Players), 7))
	var ds []delivery
	step := time.Duration(0)
	if r.Window > 0 {
		step = r.Window / time.Duration(r.Players)
	}
	for i := range r.Players {
		ds = append(ds, delivery{time.Duration(i) * step, i, false})
	}
	for _, i := range rng.Perm(r.Players)[:int(float64(r.Players)*r.Redeliver)] {
		// Pub/Sub redelivers when an acknowledgement is lost: soon after.
		ds = append(ds, delivery{ds[i].at + time.Duration(rng.IntN(2000))*time.Millisecond, i, true})
	}
	if r.Window > 0 {
		sort.Slice(ds, func(a, b int) bool { return ds[a].at < ds[b].at })
	} else {
		rng.Shuffle(len(ds), func(a, b int) { ds[a], ds[b] = ds[b], ds[a] })
	}
	res.Deliveries = len(ds)
	preds := func(i int) int { return 1 + i%9 }
	var wantPreds int64
	for i := range r.Players {
		wantPreds += int64(preds(i))
	}
	sem := make(chan struct{}, max(1, r.Outstanding))
	var wg sync.WaitGroup
	var lastFirst atomic.Int64 // unix nanos of the latest first push
	var given atomic.Int64
	var sent atomic.Int64
	killAt := int64(float64(len(ds)) * r.KillAt)
	start := time.Now()
	for n, dl := range ds {
		if r.Window > 0 {
			if wait := time.Until(start.Add(dl.at)); wait > 0 {
				time.Sleep(wait)
			}
		} else {
			sem <- struct{}{}
		}
		if r.KillAt > 0 && int64(n) == killAt {
			go func() {
				e.Log("  SIGKILL instance 0 after %d of %d deliveries", killAt, len(ds))
				fleet.Kill(0)
				time.Sleep(time.Second) // Cloud Run notices and starts a replacement
				if took, err := fleet.Restart(ctx, 0); err != nil {
					e.Log("  restart failed: %v", err)
				} else {
					e.Log("  instance 0 restarted, listening after %v", took.Round(time.Millisecond))
				}
			}()
			res.Killed = true
		}
		p := fmt.Sprintf("player-%06d", dl.player)
		body, _ := json.Marshal(map[string]any{"player_lookup": p, "game_date": date, "predictions_generated": preds(dl.player),
			"batch_id": batchID, "timestamp": time.Now().UTC().Format(time.RFC3339), "worker_instance": fmt.Sprintf("w%d", dl.player%50)})
		wg.Go(func() {
			if !dl.again && (dl.player == r.Players-1 || r.Window == 0) {
				t := time.Now().UnixNano()
				for {
					old := lastFirst.Load()
					if t <= old || lastFirst.CompareAndSwap(old, t) {
						break
					}
				}
			}
			if d.Deliver(ctx, "PredictionCompletions", "w-"+p, body) == 0 {
				given.Add(1)
			}
			sent.Add(1)
			if r.Window == 0 {
				<-sem
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.PerSecond = float64(r.Players) / res.Seconds
	if given.Load() > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d deliveries given up", given.Load()))
	}
	bc := subs[cfg.Topics.BatchComplete]
	msgs := bc.wait(90*time.Second, 3*time.Second)
	res.Messages = len(msgs)
	if len(msgs) > 0 {
		res.LatencyMS = max(0, float64(msgs[0].at.UnixNano()-lastFirst.Load())/1e6)
		var m struct {
			Status   string `json:"status"`
			Metadata struct {
				Completed int64 `json:"completed_players"`
				Preds     int64 `json:"total_predictions"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(msgs[0].msg.Data, &m)
		res.CountedRight = m.Status == "success" && m.Metadata.Completed == int64(r.Players) && m.Metadata.Preds == wantPreds
		if !res.CountedRight {
			res.Problems = append(res.Problems, fmt.Sprintf("message: status %s, %d players, %d predictions (want %d, %d)",
				m.Status, m.Metadata.Completed, m.Metadata.Preds, r.Players, wantPreds))
		}
	}
	if r.Gates {
		res.GateMessages = map[string]int{}
		for _, p := range cfg.Phases {
			n := len(subs[p.OutputTopic].wait(time.Second, time.Second))
			res.GateMessages[p.Name] = n
			if n != 1 {
				res.Problems = append(res.Problems, fmt.Sprintf("gate %s published %d triggers", p.Name, n))
			}
		}
	}
	res.RSSMiB = nil
	for _, b := range fleet.RSS() {
		res.RSSMiB = append(res.RSSMiB, float64(b)/(1<<20))
	}
	// Let background merges finish before counting and checking.
	time.Sleep(2 * time.Second)
	snap := e.Proxy.Snapshot()
	res.RPCs = map[string]int{}
	total := 0
	for k, v := range snap.RPCs {
		if n := v - rpc0[k]; n > 0 {
			res.RPCs[k] = n
			total += n
		}
	}
	res.RPCsPerPlayer = float64(total) / float64(r.Players)
	res.writes = snap.Writes
	var batchWrites int
	for name, ts := range snap.Writes {
		kind := kindOf(name, cfg)
		if kind == "shard" || kind == "batch" || kind == "completion" {
			batchWrites += len(ts)
		}
		if kind != "shard" && kind != "batch" && kind != "gate" {
			continue
		}
		h := Hot{Doc: shortDoc(name), Writes: len(ts), Max1s: maxIn(ts, 1), Max10s: float64(maxIn(ts, 10)) / 10}
		if old, ok := res.Hot[kind]; !ok || h.Max10s > old.Max10s || (h.Max10s == old.Max10s && h.Max1s > old.Max1s) {
			res.Hot[kind] = h
		}
	}
	res.WritesPerPlay = float64(batchWrites) / float64(r.Players)

	// Exactness from the store itself.
	ref := fs.Collection(batch.Collection).Doc(batchID)
	agg, err := ref.Collection(batch.CompletionsSub).NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("count completions: %w", err)
	}
	if v, ok := agg["n"].(*firestorepb.Value); ok {
		res.Recorded = v.GetIntegerValue()
	}
	res.Lost = int64(r.Players) - res.Recorded
	if snap, err := ref.Get(ctx); err == nil {
		d := snap.Data()
		res.Shards, _ = d[batch.FieldShardCount].(int64)
		if d[batch.FieldCompletedCount] != int64(r.Players) || d[batch.FieldComplete] != true {
			res.CountedRight = false
			res.Problems = append(res.Problems, fmt.Sprintf("batch document: completed_count %v is_complete %v", d[batch.FieldCompletedCount], d[batch.FieldComplete]))
		}
	}
	tr := batch.New(batch.Deps{Firestore: fs, Config: cfg, Raw: clients.Raw})
	rep, err := tr.Check(ctx, batch.CheckOptions{BatchID: batchID})
	res.CheckClean = err == nil && len(rep.Mismatches) == 0
	if !res.CheckClean {
		res.Problems = append(res.Problems, fmt.Sprintf("batch check: %v %+v", err, rep.Mismatches))
	}
	codes := d.Codes()
	res.Attempts = map[string]int{}
	for c, n := range codes {
		res.Attempts[fmt.Sprint(c)] = n
		switch {
		case c >= 500:
			res.Status5xx += n
		case c == 429:
			res.Refused429 += n
		case c == 0:
			res.ConnFailed += n
		}
	}
	return res, nil
}

// gates plays the three gates' completions for date: every expected
// processor once, a share of them delivered twice.
func (e *Env) gates(ctx context.Context, d *Dispatcher, phases *[]config.Phase, date string, dups float64) {
	var wg sync.WaitGroup
	rng := rand.New(rand.NewPCG(3, 4))
	for _, p := range *phases {
		for i, proc := range p.Expected {
			body, _ := json.Marshal(map[string]any{"processor_name": proc, "game_date": date, "status": "success",
				"execution_id": fmt.Sprintf("run-%s-%d", p.Name, i), "correlation_id": "lt-" + date, "record_count": 100,
				"timestamp": time.Now().UTC().Format(time.RFC3339)})
			id := fmt.Sprintf("g-%s-%d", p.Name, i)
			copies := 1
			if rng.Float64() < dups {
				copies = 2
			}
			for range copies {
				wg.Go(func() { d.Deliver(ctx, p.EntryPoint, id, body) })
			}
		}
	}
	wg.Wait()
}

// kindOf names what a document is: a counter shard, a batch, a gate, or
// its collection.
func kindOf(name string, cfg *config.Config) string {
	_, path, _ := strings.Cut(name, "/documents/")
	parts := strings.Split(path, "/")
	switch {
	case len(parts) >= 4 && parts[0] == batch.Collection && parts[2] == batch.ShardsSub:
		return "shard"
	case len(parts) >= 4 && parts[0] == batch.Collection && parts[2] == batch.CompletionsSub:
		return "completion"
	case len(parts) == 2 && parts[0] == batch.Collection:
		return "batch"
	}
	for _, p := range cfg.Phases {
		if len(parts) == 2 && parts[0] == p.Collection {
			return "gate"
		}
	}
	return parts[0]
}

func shortDoc(name string) string {
	_, path, _ := strings.Cut(name, "/documents/")
	if len(path) > 60 {
		path = path[:28] + "…" + path[len(path)-28:]
	}
	return path
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

var runSeq atomic.Int64

// collector pulls one subscription continuously and notes when each
// message arrived.
type collector struct {
	mu  sync.Mutex
	got []arrival
}

type arrival struct {
	at  time.Time
	msg *pubsubpb.PubsubMessage
}

// collect subscribes to topic and pulls until ctx ends.
func collect(ctx context.Context, b *bus.Bus, project, topic string) (*collector, error) {
	if err := b.EnsureTopic(ctx, topic); err != nil {
		return nil, err
	}
	admin := b.Client().SubscriptionAdminClient
	name := fmt.Sprintf("projects/%s/subscriptions/lt-%s", project, topic)
	if _, err := admin.CreateSubscription(ctx, &pubsubpb.Subscription{Name: name, Topic: b.TopicName(topic), AckDeadlineSeconds: 60}); err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", topic, err)
	}
	c := &collector{}
	go func() {
		for ctx.Err() == nil {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			res, err := admin.Pull(pctx, &pubsubpb.PullRequest{Subscription: name, MaxMessages: 100})
			cancel()
			if err != nil || len(res.ReceivedMessages) == 0 {
				continue
			}
			now := time.Now()
			ids := make([]string, 0, len(res.ReceivedMessages))
			c.mu.Lock()
			for _, rm := range res.ReceivedMessages {
				c.got = append(c.got, arrival{now, rm.Message})
				ids = append(ids, rm.AckId)
			}
			c.mu.Unlock()
			_ = admin.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: name, AckIds: ids})
		}
	}()
	return c, nil
}

// wait returns the messages once at least one arrived (or first passed)
// and then quiet passed.
func (c *collector) wait(first, quiet time.Duration) []arrival {
	deadline := time.Now().Add(first)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := len(c.got)
		c.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(quiet)
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]arrival(nil), c.got...)
}
