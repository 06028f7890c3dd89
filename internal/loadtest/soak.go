package loadtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	firestorepb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/fsclient"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/slacktest"
)

// Soak is one soak: several nights played one after another through K
// instances while faults are injected, then sweeps until nothing is owed.
// Offsets are from the first night's start.
type Soak struct {
	Instances   int
	Concurrency int
	Nights      int
	Players     int           // per night's batch
	Window      time.Duration // the nights share it evenly
	Duplicates  float64       // share of every kind of message delivered twice
	// KillEvery is the mean time between SIGKILLs of a random live
	// instance while the nights play; RestartAfter later it is started
	// again.
	KillEvery    time.Duration
	RestartAfter time.Duration
	// Slack answers 500 from SlackAt for Slack500, then holds each request
	// SlackHangFor (past the client's timeout) for SlackHang, then 200.
	SlackAt, Slack500, SlackHang, SlackHangFor time.Duration
	// The Pub/Sub emulator is stopped at PubSubAt and started again on its
	// port PubSubDown later.
	PubSubAt, PubSubDown time.Duration
	SweepEvery           time.Duration // Cloud Scheduler's tick
	Converge             time.Duration // the final sweeps give up after this
	Seed                 uint64
}

// SoakResult is what a soak counted, from the store and the consumers.
type SoakResult struct {
	Project    string         `json:"project"`
	Nights     int            `json:"nights"`
	Players    int            `json:"players_per_night"`
	Instances  int            `json:"instances"`
	Events     int            `json:"events"` // messages pushed to the instances, duplicates included
	Duplicates int            `json:"duplicates"`
	Attempts   map[string]int `json:"attempts_by_status"`
	Kills      int            `json:"kills"`
	Sweeps     int            `json:"sweeps"`
	// The faults as they happened, in seconds.
	Slack500S     float64  `json:"slack_500_seconds"`
	SlackHangS    float64  `json:"slack_hang_seconds"`
	SlackAbandon  int      `json:"slack_requests_abandoned"`
	PubSubDownS   float64  `json:"pubsub_down_seconds"`
	PubSubRestart float64  `json:"pubsub_restart_seconds"` // the emulator's own stop → answering
	Recreated     []string `json:"pubsub_recreated"`

	Lost    int      `json:"lost"`
	Doubled int      `json:"doubled"`
	Copies  int      `json:"copies"`
	Causes  Causes   `json:"copy_causes"`
	Detail  []string `json:"detail,omitempty"`
	// Flagged counts "effect performed again" log lines by cause and kind:
	// tries that may have copied, whether or not the destination had
	// taken the one before.
	Flagged map[string]int `json:"possibly_copied_by_cause_kind"`
	// Redelivered counts messages the consumer's own subscription handed
	// out twice (one message id): Pub/Sub's at-least-once, not phasegate's.
	Redelivered int `json:"consumer_redeliveries"`

	Triggers    int     `json:"trigger_messages"`
	BatchMsgs   int     `json:"batch_messages"`
	SlackPosts  int     `json:"slack_posts"`
	SlackAlerts int     `json:"slack_alerts"`
	EffectsDone int     `json:"effects_done"`
	Converged   bool    `json:"converged"`
	ConvergeS   float64 `json:"converge_seconds"`
	Seconds     float64 `json:"seconds"`
	LoadStart   string  `json:"load_at_start"`
	LoadEnd     string  `json:"load_at_end"`
	Load1Max    float64 `json:"load1_max"`
}

// Causes are the copies by cause: Crash and Ambiguous from the effect log's
// own account, Hang the Slack posts whose sender timed out (also
// ambiguous to the effect log), Unexplained any the log did not flag.
type Causes struct {
	Crash       int `json:"crash"`
	Ambiguous   int `json:"ambiguous"`
	Hang        int `json:"slack_hang"`
	Unexplained int `json:"unexplained"`
}

// Exact reports whether nothing was lost or doubled, every copy was
// explained, and the run converged.
func (r *SoakResult) Exact() bool {
	return r.Lost == 0 && r.Doubled == 0 && r.Causes.Unexplained == 0 && r.Converged
}

// soakRun is one soak's moving parts.
type soakRun struct {
	e       *Env
	s       Soak
	cfg     *config.Config
	project string
	res     *SoakResult
	t0      time.Time

	psMu   sync.Mutex
	ps     *emulator.PubSub
	psPort int
	relay  *Relay
	subs   map[string]*subscriber // by topic
	admin  atomic.Pointer[bus.Bus]
	kills  atomic.Int64
	sweeps atomic.Int64
}

// Soak plays s on a fresh project and counts what was lost, doubled and
// copied. The Firestore emulator is the environment's; the Pub/Sub emulator
// is the soak's own, which it restarts, and this process's Pub/Sub clients
// talk to it.
func (e *Env) Soak(ctx context.Context, s Soak) (*SoakResult, error) {
	r := &soakRun{e: e, s: s, project: fmt.Sprintf("soak-%d", time.Now().Unix()), subs: map[string]*subscriber{}}
	r.res = &SoakResult{Nights: s.Nights, Players: s.Players, Instances: s.Instances, Project: r.project, LoadStart: loadAvg()}
	r.cfg = config.Default()
	r.cfg.ProjectID = r.project
	ports, err := emulator.FreePorts(1)
	if err != nil {
		return nil, err
	}
	r.psPort = ports[0]
	if r.ps, err = emulator.StartPubSub(ctx, e.LogDir, "pubsub", r.psPort); err != nil {
		return nil, err
	}
	defer func() { r.psMu.Lock(); r.ps.Stop(); r.psMu.Unlock() }()
	// The client library reads it; this process talks to no other Pub/Sub.
	os.Setenv("PUBSUB_EMULATOR_HOST", r.ps.Host)
	if r.relay, err = StartRelay(r.ps.Host); err != nil {
		return nil, err
	}
	defer r.relay.Close()
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if b := r.admin.Load(); b != nil {
			b.Close()
		}
	}()
	cctx, stopPulling := context.WithCancel(ctx)
	defer stopPulling()
	for _, t := range r.cfg.OutputTopics() {
		sub := &subscriber{r: r, name: fmt.Sprintf("projects/%s/subscriptions/soak-%s", r.project, t)}
		r.subs[t] = sub
		go sub.pull(cctx)
	}
	clients, err := fsclient.Open(ctx, r.project)
	if err != nil {
		return nil, err
	}
	defer clients.Close()

	slack := slacktest.New()
	defer slack.Close()
	slot := s.Window / time.Duration(s.Nights)
	rate := int(float64(s.Players)/(0.8*slot.Seconds())) + 1
	env := []string{"GOOGLE_CLOUD_PROJECT=" + r.project, "GCP_PROJECT=" + r.project, "FIRESTORE_EMULATOR_HOST=" + e.Proxy.Addr,
		"PUBSUB_EMULATOR_HOST=" + r.relay.Addr, "SLACK_WEBHOOK_URL=" + slack.Hook("alerts"), fmt.Sprintf("BATCH_ARRIVAL_RATE=%d", rate)}
	fleet, err := StartFleet(ctx, e.Launcher, env, e.LogDir, r.project, s.Instances, s.Concurrency)
	if err != nil {
		return nil, err
	}
	defer fleet.Stop()
	d := &Dispatcher{Fleet: fleet, QueueTimeout: e.QueueTimeout, MinBackoff: e.MinBackoff, MaxBackoff: e.MaxBackoff, Deadline: 30 * time.Minute}
	e.Log("soak %s: %d instances × %d, %d nights of %d players over %v, %.0f %% duplicates, a SIGKILL every ~%v; logs in %s",
		r.project, s.Instances, s.Concurrency, s.Nights, s.Players, s.Window, 100*s.Duplicates, s.KillEvery, e.LogDir)

	r.t0 = time.Now()
	pctx, stopFaults := context.WithCancel(ctx)
	var faults sync.WaitGroup
	var sweeps sync.WaitGroup
	var load1 atomic.Value
	load1.Store(0.0)
	faults.Go(func() { r.kill(pctx, fleet) })
	faults.Go(func() { r.slack(ctx, slack) })
	faults.Go(func() { r.pubsub(ctx) })
	faults.Go(func() {
		t := time.NewTicker(s.SweepEvery)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			if l := load1Now(); l > load1.Load().(float64) {
				load1.Store(l)
			}
			sweeps.Go(func() { r.sweep(ctx, d) })
		}
	})

	var played sync.WaitGroup
	var events, dups atomic.Int64
	deliver := func(ep, id string, body []byte, again bool, after time.Duration) {
		events.Add(1)
		if again {
			dups.Add(1)
		}
		played.Go(func() {
			if after > 0 {
				time.Sleep(after)
			}
			d.Deliver(ctx, ep, id, body)
		})
	}
	rng := rand.New(rand.NewPCG(s.Seed, 11))
	today := gamedate.Today(time.Now())
	var dates []string
	batches := map[string]string{} // batch id → date
	for n := range s.Nights {
		date := today.AddDays(-s.Nights + n).String()
		dates = append(dates, date)
		start := r.t0.Add(time.Duration(n) * slot)
		time.Sleep(time.Until(start))
		e.Log("  %4.0f s: night %d (%s)", time.Since(r.t0).Seconds(), n+1, date)
		played.Go(func() { r.gates(ctx, d, date, rand.New(rand.NewPCG(s.Seed, uint64(n))), deliver) })
		batchID := fmt.Sprintf("batch_%s_soak", date)
		batches[batchID] = date
		now := time.Now().UTC()
		if _, err := clients.FS.Collection(batch.Collection).Doc(batchID).Create(ctx, map[string]any{
			"batch_id": batchID, "game_date": date, "expected_players": s.Players, "completed_players": []string{},
			"total_predictions": 0, "is_complete": false, "start_time": now, "updated_at": now, "correlation_id": "soak-" + batchID,
		}); err != nil {
			stopFaults()
			return nil, fmt.Errorf("create batch: %w", err)
		}
		step := time.Duration(0.8 * float64(slot) / float64(s.Players))
		for i := range s.Players {
			time.Sleep(time.Until(start.Add(time.Duration(i) * step)))
			p := fmt.Sprintf("player-%06d", i)
			body, _ := json.Marshal(map[string]any{"player_lookup": p, "game_date": date, "predictions_generated": soakPreds(i),
				"batch_id": batchID, "timestamp": time.Now().UTC().Format(time.RFC3339), "worker_instance": fmt.Sprintf("w%d", i%50)})
			id := "w-" + date + "-" + p
			deliver("PredictionCompletions", id, body, false, 0)
			if rng.Float64() < s.Duplicates {
				// An acknowledgement lost: Pub/Sub delivers it again soon.
				deliver("PredictionCompletions", id, body, true, time.Duration(rng.IntN(2000))*time.Millisecond)
			}
		}
	}
	played.Wait()
	e.Log("  %4.0f s: every message acknowledged", time.Since(r.t0).Seconds())
	stopFaults()
	faults.Wait()
	sweeps.Wait()
	r.res.Events, r.res.Duplicates = int(events.Load()), int(dups.Load())

	// The scheduler keeps ticking until nothing is owed.
	cstart := time.Now()
	for {
		r.sweep(ctx, d)
		left, err := r.owed(ctx, clients, dates, batches)
		if err != nil {
			return nil, err
		}
		if len(left) == 0 {
			r.res.Converged = true
			break
		}
		if time.Since(cstart) > s.Converge {
			r.res.Detail = append(r.res.Detail, left...)
			break
		}
		e.Log("  %4.0f s: still owed: %s", time.Since(r.t0).Seconds(), summarize(left))
		time.Sleep(s.SweepEvery)
	}
	r.res.ConvergeS = time.Since(cstart).Seconds()
	time.Sleep(3 * time.Second) // the consumers' last pulls
	stopPulling()
	r.res.Seconds = time.Since(r.t0).Seconds()
	r.res.Kills, r.res.Sweeps = int(r.kills.Load()), int(r.sweeps.Load())
	r.res.Attempts = map[string]int{}
	for c, n := range d.Codes() {
		r.res.Attempts[fmt.Sprint(c)] = n
	}
	r.res.Load1Max = max(load1.Load().(float64), load1Now())
	if err := r.count(ctx, clients, slack, dates, batches); err != nil {
		return nil, err
	}
	r.res.LoadEnd = loadAvg()
	return r.res, nil
}

func soakPreds(i int) int { return 1 + i%9 }

// gates plays one night's completions of the three gates: first one
// processor of each reports a failure (an alert, resolved when it then
// succeeds) and an unexpected processor reports (an alert never resolved),
// then every expected processor succeeds.
func (r *soakRun) gates(ctx context.Context, d *Dispatcher, date string, rng *rand.Rand, deliver func(ep, id string, body []byte, again bool, after time.Duration)) {
	msg := func(proc, status, exec string) []byte {
		b, _ := json.Marshal(map[string]any{"processor_name": proc, "game_date": date, "status": status,
			"execution_id": exec, "correlation_id": "soak-" + date, "record_count": 100,
			"timestamp": time.Now().UTC().Format(time.RFC3339)})
		return b
	}
	var wg sync.WaitGroup
	for _, p := range r.cfg.Phases {
		wg.Go(func() {
			failing := p.Expected[rng.IntN(len(p.Expected))]
			// Acknowledged before its success is sent: a failure after a
			// success changes nothing.
			d.Deliver(ctx, p.EntryPoint, "g-"+date+"-"+p.Name+"-failed", msg(failing, "failed", "run-failed"))
			if p.Number == 2 {
				deliver(p.EntryPoint, "g-"+date+"-unexpected", msg("soak_unexpected_processor", "success", "run-x"), false, 0)
			}
			for i, proc := range p.Expected {
				id := fmt.Sprintf("g-%s-%s-%d", date, p.Name, i)
				body := msg(proc, "success", fmt.Sprintf("run-%d", i))
				deliver(p.EntryPoint, id, body, false, 0)
				if rng.Float64() < r.s.Duplicates {
					deliver(p.EntryPoint, id, body, true, time.Duration(rng.IntN(2000))*time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
}

// kill SIGKILLs a random live instance every KillEvery on average and
// starts it again RestartAfter later, as Cloud Run replaces a crashed
// instance, until ctx ends. At least one instance stays up: Cloud Run
// keeps serving while it replaces one.
func (r *soakRun) kill(ctx context.Context, f *Fleet) {
	rng := rand.New(rand.NewPCG(r.s.Seed, 5))
	var restarts sync.WaitGroup
	defer restarts.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.s.KillEvery/2 + rand.N(r.s.KillEvery)):
		}
		var up []int
		for _, in := range f.Instances {
			if in.up.Load() {
				up = append(up, in.ID)
			}
		}
		if len(up) < 2 {
			continue
		}
		i := up[rng.IntN(len(up))]
		f.Kill(i)
		r.kills.Add(1)
		restarts.Go(func() {
			time.Sleep(r.s.RestartAfter)
			for range 3 {
				if _, err := f.Restart(context.WithoutCancel(ctx), i); err == nil {
					return
				} else {
					r.e.Log("  restart of instance %d failed: %v", i, err)
				}
			}
		})
	}
}

// slack scripts the fake Slack's outage: 500s, then answers held past the
// client's timeout (Slack took the message; the sender cannot know), then
// normal service.
func (r *soakRun) slack(ctx context.Context, s *slacktest.Server) {
	at := func(off time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(r.t0.Add(off))):
			return true
		}
	}
	if !at(r.s.SlackAt) {
		return
	}
	t := time.Now()
	s.SetDefault(slacktest.Reply{Status: http.StatusInternalServerError})
	r.e.Log("  %4.0f s: Slack answers 500", time.Since(r.t0).Seconds())
	if !at(r.s.SlackAt + r.s.Slack500) {
		return
	}
	r.res.Slack500S = time.Since(t).Seconds()
	t = time.Now()
	s.SetDefault(slacktest.Reply{Status: http.StatusOK, Delay: r.s.SlackHangFor})
	r.e.Log("  %4.0f s: Slack hangs (%v per request)", time.Since(r.t0).Seconds(), r.s.SlackHangFor)
	if !at(r.s.SlackAt + r.s.Slack500 + r.s.SlackHang) {
		return
	}
	r.res.SlackHangS = time.Since(t).Seconds()
	s.SetDefault(slacktest.Reply{Status: http.StatusOK})
	r.e.Log("  %4.0f s: Slack answers again", time.Since(r.t0).Seconds())
}

// pubsub takes Pub/Sub away from the instances, lets the consumers drain
// what it holds, stops the emulator, starts it again on its port, creates
// the topics and subscriptions the run uses again (a real Pub/Sub keeps
// them, and the messages it holds; the emulator keeps nothing), and gives
// it back.
func (r *soakRun) pubsub(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(r.t0.Add(r.s.PubSubAt))):
	}
	t := time.Now()
	r.relay.Pause()
	r.e.Log("  %4.0f s: Pub/Sub cut off; draining the consumers' subscriptions", time.Since(r.t0).Seconds())
	for _, sub := range r.subs {
		sub.drained(t, 30*time.Second)
	}
	r.psMu.Lock()
	r.ps.Stop()
	r.psMu.Unlock()
	stopped := time.Now()
	r.e.Log("  %4.0f s: Pub/Sub emulator stopped", time.Since(r.t0).Seconds())
	time.Sleep(r.s.PubSubDown)
	ps, err := emulator.StartPubSub(ctx, r.e.LogDir, "pubsub-restarted", r.psPort)
	if err != nil {
		r.res.Detail = append(r.res.Detail, fmt.Sprintf("Pub/Sub emulator did not start again: %v", err))
		return
	}
	r.psMu.Lock()
	r.ps = ps
	r.psMu.Unlock()
	r.res.PubSubRestart = time.Since(stopped).Seconds()
	for ctx.Err() == nil {
		if err := r.prepare(ctx); err == nil {
			break
		} else {
			r.e.Log("  recreating topics: %v", err)
			time.Sleep(time.Second)
		}
	}
	r.relay.Resume()
	r.res.PubSubDownS = time.Since(t).Seconds()
	r.e.Log("  %4.0f s: Pub/Sub emulator restarted on its port; %d topics and their subscriptions recreated (a real Pub/Sub keeps them); given back after %.0f s",
		time.Since(r.t0).Seconds(), len(r.res.Recreated), r.res.PubSubDownS)
}

// prepare connects to the Pub/Sub emulator anew and creates every topic
// the instances publish to and the consumers' subscriptions.
func (r *soakRun) prepare(ctx context.Context) error {
	b, err := bus.New(ctx, r.project, true)
	if err != nil {
		return err
	}
	admin := b.Client()
	topics := append(r.cfg.OutputTopics(), r.cfg.Topics.DeadLetter)
	var made []string
	for _, t := range topics {
		if _, err := admin.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: b.TopicName(t)}); err != nil && status.Code(err) != codes.AlreadyExists {
			b.Close()
			return fmt.Errorf("create topic %s: %w", t, err)
		}
		made = append(made, t)
	}
	for _, t := range r.cfg.OutputTopics() {
		name := fmt.Sprintf("projects/%s/subscriptions/soak-%s", r.project, t)
		if _, err := admin.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: name, Topic: b.TopicName(t),
			AckDeadlineSeconds: 60}); err != nil && status.Code(err) != codes.AlreadyExists {
			b.Close()
			return fmt.Errorf("subscribe to %s: %w", t, err)
		}
	}
	if old := r.admin.Swap(b); old != nil {
		old.Close()
	}
	r.res.Recreated = made
	return nil
}

// sweep invokes the Sweep entry point once, as Cloud Scheduler does
// through Pub/Sub (a failed run waits for the next tick).
func (r *soakRun) sweep(ctx context.Context, d *Dispatcher) {
	n := r.sweeps.Add(1)
	id := fmt.Sprintf("sweep-%d", n)
	code := d.attempt(ctx, "Sweep", id, envelope.PushBody(id, []byte("{}"), nil, time.Now()))
	d.count(code)
}

// subscriber is a consumer's pull subscription on one output topic.
type subscriber struct {
	r    *soakRun
	name string

	mu    sync.Mutex
	got   []*pubsubpb.PubsubMessage
	empty time.Time // the start of the latest pull that found nothing
}

func (s *subscriber) pull(ctx context.Context) {
	for ctx.Err() == nil {
		b := s.r.admin.Load()
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		// Answered at once, so that a pull never times out on this side
		// after the emulator handed it messages.
		res, err := b.Client().SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{Subscription: s.name, MaxMessages: 500,
			ReturnImmediately: true})
		cancel()
		if err != nil || len(res.ReceivedMessages) == 0 {
			if err == nil {
				s.mu.Lock()
				s.empty = start
				s.mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ids := make([]string, 0, len(res.ReceivedMessages))
		s.mu.Lock()
		for _, rm := range res.ReceivedMessages {
			s.got = append(s.got, rm.Message)
			ids = append(ids, rm.AckId)
		}
		s.mu.Unlock()
		_ = b.Client().SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: s.name, AckIds: ids})
	}
}

// drained waits until a pull that started after t found nothing.
func (s *subscriber) drained(t time.Time, limit time.Duration) {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		s.mu.Lock()
		done := s.empty.After(t)
		s.mu.Unlock()
		if done {
			return
		}
	}
}

func (s *subscriber) messages() []*pubsubpb.PubsubMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pubsubpb.PubsubMessage(nil), s.got...)
}

// owed lists what is not finished yet: effects owed, gates whose trigger is
// claimed or released, batches not complete, messages the consumers have
// not seen.
func (r *soakRun) owed(ctx context.Context, c *fsclient.Clients, dates []string, batches map[string]string) ([]string, error) {
	var left []string
	counts, err := effect.ReadCounts(ctx, c.FS, r.cfg.Names())
	if err != nil {
		return nil, err
	}
	if counts.Owed > 0 {
		left = append(left, fmt.Sprintf("%d effects owed (%d alerts)", counts.Owed, counts.AlertsOwed))
	}
	for _, p := range r.cfg.Phases {
		snaps, err := c.FS.Collection(p.Collection).Where("_trigger_state", "in", []string{"claimed", "released"}).Documents(ctx).GetAll()
		if err != nil {
			return nil, fmt.Errorf("open gates: %w", err)
		}
		for _, s := range snaps {
			left = append(left, fmt.Sprintf("gate %s/%s %v", p.Name, s.Ref.ID, s.Data()["_trigger_state"]))
		}
	}
	for id := range batches {
		s, err := c.FS.Collection(batch.Collection).Doc(id).Get(ctx)
		if err != nil {
			return nil, fmt.Errorf("batch %s: %w", id, err)
		}
		if s.Data()[batch.FieldComplete] != true {
			left = append(left, "batch "+id+" incomplete")
		}
	}
	seen := r.seen()
	for _, p := range r.cfg.Phases {
		for _, d := range dates {
			if len(seen.triggers[p.Name+"|"+d]) == 0 {
				left = append(left, fmt.Sprintf("no %s trigger for %s at the consumer", p.Name, d))
			}
		}
	}
	for id := range batches {
		if len(seen.batches[id]) == 0 {
			left = append(left, "no batch-complete message for "+id+" at the consumer")
		}
	}
	sort.Strings(left)
	return left, nil
}

func summarize(left []string) string {
	if len(left) <= 4 {
		return strings.Join(left, "; ")
	}
	return strings.Join(left[:4], "; ") + fmt.Sprintf("; … %d in all", len(left))
}

// consumed is what the consumers received, grouped.
type consumed struct {
	triggers map[string]map[string]bool // "phase|date" → trigger ids
	// byTrigger and byBatch: key → message id → payload hash.
	byTrigger map[string]map[string][32]byte
	byBatch   map[string]map[string][32]byte
	batches   map[string][]batch.Message // batch id → its messages, one per message id
	arrivals  int
}

func (r *soakRun) seen() consumed {
	c := consumed{triggers: map[string]map[string]bool{}, byTrigger: map[string]map[string][32]byte{},
		byBatch: map[string]map[string][32]byte{}, batches: map[string][]batch.Message{}}
	phaseOf := map[string]string{}
	for _, p := range r.cfg.Phases {
		phaseOf[p.OutputTopic] = p.Name
	}
	for topic, sub := range r.subs {
		for _, m := range sub.messages() {
			c.arrivals++
			h := sha256.Sum256(m.Data)
			if topic == r.cfg.Topics.BatchComplete {
				var bm batch.Message
				_ = json.Unmarshal(m.Data, &bm)
				id := bm.Metadata.BatchID
				if c.byBatch[id] == nil {
					c.byBatch[id] = map[string][32]byte{}
				}
				if _, ok := c.byBatch[id][m.MessageId]; !ok {
					c.batches[id] = append(c.batches[id], bm)
				}
				c.byBatch[id][m.MessageId] = h
				continue
			}
			var tm struct {
				TriggerID string `json:"trigger_id"`
				GameDate  string `json:"game_date"`
			}
			_ = json.Unmarshal(m.Data, &tm)
			k := phaseOf[topic] + "|" + tm.GameDate
			if c.triggers[k] == nil {
				c.triggers[k] = map[string]bool{}
			}
			c.triggers[k][tm.TriggerID] = true
			if c.byTrigger[tm.TriggerID] == nil {
				c.byTrigger[tm.TriggerID] = map[string][32]byte{}
			}
			c.byTrigger[tm.TriggerID][m.MessageId] = h
		}
	}
	return c
}

// count judges the run from the store, the consumers, the fake Slack and
// the instances' logs.
func (r *soakRun) count(ctx context.Context, c *fsclient.Clients, slack *slacktest.Server, dates []string, batches map[string]string) error {
	res := r.res
	problem := func(kind *int, n int, format string, args ...any) {
		*kind += n
		res.Detail = append(res.Detail, fmt.Sprintf(format, args...))
	}
	flagged, err := flaggedCopies(r.e.LogDir, r.project)
	if err != nil {
		return err
	}
	res.Flagged = map[string]int{}
	for _, causes := range flagged {
		for _, k := range causes {
			res.Flagged[k]++
		}
	}
	cause := func(key string) string {
		for _, k := range flagged[key] {
			if cause, _, ok := strings.Cut(k, "/"); ok {
				return cause
			}
		}
		return "unexplained"
	}
	attribute := func(what, key string, n int) {
		res.Copies += n
		switch cs := cause(key); cs {
		case "crash":
			res.Causes.Crash += n
		case "ambiguous":
			res.Causes.Ambiguous += n
		default:
			res.Causes.Unexplained += n
		}
		res.Detail = append(res.Detail, fmt.Sprintf("copy: %s delivered %d more time(s) (%s)", what, n, cause(key)))
	}
	seen := r.seen()
	distinct := 0

	// Gates: every expected processor recorded, one trigger per date,
	// one payload per trigger.
	for _, p := range r.cfg.Phases {
		for _, d := range dates {
			s, err := c.FS.Collection(p.Collection).Doc(d).Get(ctx)
			if err != nil {
				return fmt.Errorf("gate %s/%s: %w", p.Name, d, err)
			}
			data := s.Data()
			missing := 0
			for _, proc := range p.Expected {
				if _, ok := data[proc].(map[string]any); !ok {
					missing++
				}
			}
			if missing > 0 {
				problem(&res.Lost, missing, "lost: %d completions of %s/%s not recorded", missing, p.Name, d)
			}
			ids := seen.triggers[p.Name+"|"+d]
			switch {
			case len(ids) == 0:
				problem(&res.Lost, 1, "lost: no %s trigger for %s reached the consumer", p.Name, d)
			case len(ids) > 1:
				problem(&res.Doubled, len(ids)-1, "doubled: %s for %s triggered as %v", p.Name, d, keys(ids))
			}
		}
	}
	for id, msgs := range seen.byTrigger {
		res.Triggers++
		hashes := map[[32]byte]bool{}
		for _, h := range msgs {
			hashes[h] = true
		}
		if len(hashes) > 1 {
			problem(&res.Doubled, len(hashes)-1, "doubled: trigger %s published with %d different payloads", id, len(hashes))
		}
		distinct += len(msgs)
		if len(msgs) > 1 {
			attribute("trigger "+id, "trigger:"+id, len(msgs)-1)
		}
	}

	// Batches: every player recorded once, counted once, one message.
	tr := batch.New(batch.Deps{Firestore: c.FS, Config: r.cfg, Raw: c.Raw})
	var wantPreds int64
	for i := range r.s.Players {
		wantPreds += int64(soakPreds(i))
	}
	for id := range batches {
		ref := c.FS.Collection(batch.Collection).Doc(id)
		agg, err := ref.Collection(batch.CompletionsSub).NewAggregationQuery().WithCount("n").Get(ctx)
		if err != nil {
			return fmt.Errorf("count completions of %s: %w", id, err)
		}
		var recorded int64
		if v, ok := agg["n"].(*firestorepb.Value); ok {
			recorded = v.GetIntegerValue()
		}
		switch n := int64(r.s.Players) - recorded; {
		case n > 0:
			problem(&res.Lost, int(n), "lost: batch %s recorded %d of %d players", id, recorded, r.s.Players)
		case n < 0:
			problem(&res.Doubled, int(-n), "doubled: batch %s recorded %d completions for %d players", id, recorded, r.s.Players)
		}
		s, err := ref.Get(ctx)
		if err != nil {
			return fmt.Errorf("batch %s: %w", id, err)
		}
		if got := s.Data()[batch.FieldCompletedCount]; got != int64(r.s.Players) {
			problem(&res.Doubled, 1, "doubled or lost: batch %s completed_count %v, want %d", id, got, r.s.Players)
		}
		rep, err := tr.Check(ctx, batch.CheckOptions{BatchID: id})
		if err != nil || len(rep.Mismatches) > 0 {
			problem(&res.Doubled, 1, "batch check %s: %v %+v", id, err, rep.Mismatches)
		}
		msgs := seen.byBatch[id]
		if len(msgs) == 0 {
			problem(&res.Lost, 1, "lost: no batch-complete message for %s", id)
			continue
		}
		res.BatchMsgs++
		hashes := map[[32]byte]bool{}
		for _, h := range msgs {
			hashes[h] = true
		}
		if len(hashes) > 1 {
			problem(&res.Doubled, len(hashes)-1, "doubled: batch %s completed with %d different messages", id, len(hashes))
		}
		for _, m := range seen.batches[id] {
			if m.Status != "success" || m.Metadata.CompletedPlayers != int64(r.s.Players) || m.Metadata.TotalPredictions != wantPreds {
				problem(&res.Doubled, 1, "counted wrong: batch %s message says %s, %d players, %d predictions (want %d, %d)",
					id, m.Status, m.Metadata.CompletedPlayers, m.Metadata.TotalPredictions, r.s.Players, wantPreds)
				break
			}
		}
		distinct += len(msgs)
		if len(msgs) > 1 {
			attribute("batch message "+id, "completion:"+id, len(msgs)-1)
		}
	}
	res.Redelivered = seen.arrivals - distinct

	// Slack: each alert the effect log performed was posted; more posts
	// of one alert are copies, each owed to a hang when the post before
	// it was abandoned by its sender.
	done, err := effect.List(ctx, c.FS, r.cfg.Names(), effect.Done, 1000)
	if err != nil {
		return fmt.Errorf("effects: %w", err)
	}
	res.EffectsDone = len(done)
	want := map[string]int{}
	keyOf := map[string]string{}
	for _, rec := range done {
		if rec.Kind != effect.Slack || rec.Ref != "posted" {
			continue
		}
		var a alert.Alert
		if err := json.Unmarshal(rec.Data, &a); err != nil {
			return fmt.Errorf("effect %s: %w", rec.ID, err)
		}
		text := alert.Message(a).Text
		want[text]++
		keyOf[text] = rec.Key
		res.SlackAlerts++
	}
	posted := map[string][]slacktest.Post{}
	for _, p := range slack.Delivered() {
		posted[p.Text] = append(posted[p.Text], p)
		res.SlackPosts++
		if p.Abandoned {
			res.SlackAbandon++
		}
	}
	for text, n := range want {
		ps := posted[text]
		switch {
		case len(ps) < n:
			problem(&res.Lost, n-len(ps), "lost: alert %q performed %d time(s), posted %d", keyOf[text], n, len(ps))
		case len(ps) > n:
			extra := len(ps) - n
			hung := 0
			for _, p := range ps[:len(ps)-1] {
				if p.Abandoned {
					hung++
				}
			}
			hung = min(hung, extra)
			// A post Slack held is abandoned by a SIGKILL of its sender as
			// much as by its timeout: the effect log tells which.
			if hung > 0 && cause(keyOf[text]) == "crash" {
				hung = 0
			}
			res.Copies += hung
			res.Causes.Hang += hung
			if hung > 0 {
				res.Detail = append(res.Detail, fmt.Sprintf("copy: alert %s posted %d more time(s) (Slack hang)", keyOf[text], hung))
			}
			if extra > hung {
				attribute("alert "+keyOf[text], keyOf[text], extra-hung)
			}
		}
	}
	for text, ps := range posted {
		if want[text] == 0 {
			problem(&res.Doubled, len(ps), "posted to Slack without a performed effect: %q ×%d", text, len(ps))
		}
	}
	return nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// flaggedCopies reads the instances' logs for the effect log's "performed
// again" lines: effect key → "cause/kind" of each.
func flaggedCopies(dir, name string) (map[string][]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, name+"-*.log"))
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !strings.Contains(string(line), "effect performed again") {
				continue
			}
			var l struct {
				Effect string `json:"effect"`
				Cause  string `json:"copy_cause"`
				Kind   string `json:"effect_kind"`
			}
			if json.Unmarshal(line, &l) == nil {
				out[l.Effect] = append(out[l.Effect], l.Cause+"/"+l.Kind)
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
	}
	return out, nil
}

func load1Now() float64 {
	var l float64
	fmt.Sscan(loadAvg(), &l)
	return l
}
