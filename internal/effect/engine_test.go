package effect_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var start = time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC)

// script is a destination whose answers a test scripts per effect key;
// once a key's script runs out it performs.
type script struct {
	mu      sync.Mutex
	answers map[string][]effect.Result
	calls   map[string]int
	lanes   []string
	block   bool // hold each try until its context ends
}

func newScript(lanes ...string) *script {
	return &script{answers: map[string][]effect.Result{}, calls: map[string]int{}, lanes: lanes}
}

func (s *script) then(key string, rs ...effect.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[key] = append(s.answers[key], rs...)
}

func (s *script) Perform(ctx context.Context, r *effect.Record) effect.Result {
	s.mu.Lock()
	s.calls[r.Key]++
	block := s.block
	var res effect.Result
	if q := s.answers[r.Key]; len(q) > 0 {
		res, s.answers[r.Key] = q[0], q[1:]
	} else {
		res = effect.Result{Outcome: effect.Performed, Ref: "ok-" + r.Key}
	}
	s.mu.Unlock()
	if block {
		<-ctx.Done()
		return effect.Result{Outcome: effect.Unavailable, Err: ctx.Err(), Ambiguous: true}
	}
	return res
}

func (s *script) Lanes() []string { return s.lanes }

func (s *script) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

// owner confirms publishes on documents of the collection "owners" by
// recording the message id.
type owner struct{}

func (owner) Confirmed(context.Context, *effect.Record, string) {}

func (owner) Confirm(data map[string]any, r *effect.Record, ref string, now time.Time) []firestore.Update {
	if data["confirmed"] != nil {
		return nil
	}
	return []firestore.Update{{Path: "confirmed", Value: ref}}
}

type world struct {
	project string
	fs      *firestore.Client
	eng     *effect.Engine
	clock   *clock.Fake
	pub     *script
	slack   *script
	metrics *metrics.Registry
}

func newWorld(t *testing.T, shadow bool) *world {
	t.Helper()
	project := testenv.Project(t)
	fs := testenv.Firestore(t, project)
	w := &world{project: project, fs: fs, clock: clock.NewFake(start), pub: newScript("topic-a", "topic-b"),
		slack: newScript("error", "warning", "info"), metrics: &metrics.Registry{}}
	names := config.Names{}
	if shadow {
		names = config.Names{Prefix: config.ShadowPrefix, TTL: 24 * time.Hour}
	}
	w.eng = &effect.Engine{FS: fs, Names: names, Alarms: alert.Alarms{}, Retention: 24 * time.Hour, Shadow: shadow,
		Clock: w.clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: w.metrics, Instance: "test",
		Owners: map[string]effect.Owner{names.Coll("owners"): owner{}},
		Sinks:  map[effect.Kind]effect.Sink{effect.Publish: w.pub, effect.Slack: w.slack},
		Policies: map[effect.Kind]effect.Policy{
			effect.Publish: {Lease: time.Minute, Budget: 5 * time.Second, KeepRefused: -1, AlertAfter: 2},
			effect.Slack: {Lease: 40 * time.Second, Budget: 2 * time.Second, KeepRefused: 24 * time.Hour,
				Backoff: func(n int64) time.Duration { return time.Duration(n-1) * 5 * time.Minute }},
		}}
	return w
}

// message is a publish owned by the owner document of the same id.
func (w *world) message(key, topic string) effect.Effect {
	return effect.Effect{Kind: effect.Publish, Key: key, Incarnation: "inc1", Destination: topic, Data: []byte(`{"m":1}`),
		Owner: w.eng.Names.Coll("owners") + "/" + key, Attributes: map[string]string{"trigger_id": key}}
}

func slackAlert(key string, sev alert.Severity) effect.Effect {
	return alert.Raise(alert.Alert{Key: key, Severity: sev, Title: key}, "inc1")
}

// decide commits a decision on an owner document with effs, as a gate
// does, and returns what Perform needs.
func (w *world) decide(t *testing.T, ownerID string, effs ...effect.Effect) effect.Made {
	t.Helper()
	ref := w.fs.Collection(w.eng.Names.Coll("owners")).Doc(ownerID)
	data := map[string]any{"decided": true, effect.FieldIncarnation: "inc1"}
	ws := append([]effect.Write{{Ref: ref, Create: data}}, w.eng.Owe(w.clock.Now(), effs...)...)
	times, err := effect.Commit(context.Background(), w.fs, ws...)
	if err != nil {
		t.Fatal(err)
	}
	return effect.Made{Effects: effs, Times: times[1:], Owner: &effect.OwnerState{Data: data, Updated: times[0]}}
}

func (w *world) record(t *testing.T, e effect.Effect) map[string]any {
	t.Helper()
	snap, err := w.eng.Ref(e.ID()).Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Data()
}

func (w *world) ownerData(t *testing.T, id string) map[string]any {
	t.Helper()
	snap, err := w.fs.Collection(w.eng.Names.Coll("owners")).Doc(id).Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Data()
}

func TestPerformConfirmsTheOwnerInTheDoneCommit(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	m := w.message("t1", "topic-a")
	st := w.eng.Perform(ctx, w.decide(t, "t1", m))[m.ID()]
	if !st.Done || st.Ref != "ok-t1" {
		t.Fatalf("status %+v", st)
	}
	rec := w.record(t, m)
	if rec["state"] != "done" || rec["due_at"] != nil || rec["ref"] != "ok-t1" || rec[config.ExpiresField] == nil {
		t.Fatalf("record %v", rec)
	}
	if got := w.ownerData(t, "t1")["confirmed"]; got != "ok-t1" {
		t.Fatalf("owner confirmed %v", got)
	}
	// Owing the same decision again is one record: the commit conflicts.
	ws := w.eng.Owe(w.clock.Now(), m)
	if _, err := effect.Commit(ctx, w.fs, ws...); !errors.Is(err, effect.ErrConflict) {
		t.Fatalf("second record of one effect: %v", err)
	}
	if n := w.pub.count("t1"); n != 1 {
		t.Fatalf("published %d times", n)
	}
}

// The owner changed between the decision and the publish's "done" (another
// completion recorded): the confirm re-reads it instead of failing.
func TestConfirmRereadsAnOwnerThatChanged(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	m := w.message("t2", "topic-a")
	made := w.decide(t, "t2", m)
	if _, err := w.fs.Collection("owners").Doc("t2").Update(ctx, []firestore.Update{{Path: "other", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if st := w.eng.Perform(ctx, made)[m.ID()]; !st.Done || st.Err != nil {
		t.Fatalf("status %+v", st)
	}
	if d := w.ownerData(t, "t2"); d["confirmed"] != "ok-t2" || d["other"] != int64(1) {
		t.Fatalf("owner %v", d)
	}
}

// An owner deleted and created again is another incarnation: the message
// owed by the old one still goes out, and the new document is not
// confirmed with it.
func TestAnotherIncarnationIsNotConfirmed(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	m := w.message("t3", "topic-a")
	w.decide(t, "t3", m) // the creator dies before performing
	ref := w.fs.Collection("owners").Doc("t3")
	if _, err := ref.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ref.Create(ctx, map[string]any{effect.FieldIncarnation: "inc2"}); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(2 * time.Minute)
	st, err := w.eng.Resume(ctx, m.ID())
	if err != nil || !st.Done {
		t.Fatalf("resume %+v %v", st, err)
	}
	if d := w.ownerData(t, "t3"); d["confirmed"] != nil {
		t.Fatalf("new incarnation confirmed with the old message: %v", d)
	}
}

// Its creator died: nobody takes the effect within its lease; after it the
// next performer does, and counts the possible copy.
func TestTakeoverAfterTheLeaseCountsAPossibleCopy(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	m := w.message("t4", "topic-a")
	w.decide(t, "t4", m)
	if st, err := w.eng.Resume(ctx, m.ID()); err != nil || !st.Pending || st.Outcome != effect.NotTried {
		t.Fatalf("inside the lease: %+v %v", st, err)
	}
	w.clock.Advance(61 * time.Second)
	if st, err := w.eng.Resume(ctx, m.ID()); err != nil || !st.Done {
		t.Fatalf("after the lease: %+v %v", st, err)
	}
	if n := w.metrics.Snapshot()["effects.possible_copy.crash"]; n != 1 {
		t.Fatalf("possible copies counted %d", n)
	}
	if d := w.ownerData(t, "t4"); d["confirmed"] != "ok-t4" {
		t.Fatalf("owner %v", d)
	}
}

// A publish that timed out may have been taken: its retry is counted as a
// possible copy. A definite failure is not. Neither fails the message for
// good; the alarm goes out after AlertAfter failed tries, once, and its
// "resolved" once the message is out.
func TestPublishFailuresAmbiguityAndAlarm(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	m := w.message("t5", "topic-a")
	w.pub.then("t5",
		effect.Result{Outcome: effect.Unavailable, Err: errors.New("deadline"), Ambiguous: true},
		effect.Result{Outcome: effect.Unavailable, Err: errors.New("topic not found")},
		effect.Result{Outcome: effect.Unavailable, Err: errors.New("topic not found")})
	if st := w.eng.Perform(ctx, w.decide(t, "t5", m))[m.ID()]; st.Done || !st.Pending {
		t.Fatalf("first try %+v", st)
	}
	for range 2 {
		if st, err := w.eng.Resume(ctx, m.ID()); err != nil || st.Done {
			t.Fatalf("failing try %+v %v", st, err)
		}
	}
	rec := w.record(t, m)
	if rec["state"] != "owed" || rec["failures"] != int64(3) || rec["ambiguous"] != int64(1) || rec["alerted"] != true {
		t.Fatalf("record %v", rec)
	}
	if st, err := w.eng.Resume(ctx, m.ID()); err != nil || !st.Done {
		t.Fatalf("last try %+v %v", st, err)
	}
	if n := w.metrics.Snapshot()["effects.possible_copy.ambiguous"]; n != 1 {
		t.Fatalf("possible copies %d", n)
	}
	raised := w.slack.count(effect.AlarmPrefix + "failing:t5")
	resolved := w.slack.count(effect.AlarmPrefix + "recovered:t5")
	if raised != 1 || resolved != 1 {
		t.Fatalf("alarm posted %d times, resolved %d times", raised, resolved)
	}
}

// Slack refusing an alert is tried again while KeepRefused lasts, then
// the effect fails, with one alarm on another route, and counts in Health.
// Outages and an open breaker never count towards it.
func TestRefusedForKeepForFails(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	a := slackAlert("a1", alert.Error)
	refuse := effect.Result{Outcome: effect.Refused, Err: errors.New("400 invalid_blocks")}
	w.slack.then(a.Key, refuse, effect.Result{Outcome: effect.NotAsked, Err: errors.New("breaker open")},
		effect.Result{Outcome: effect.Unavailable, Err: errors.New("500")}, refuse, refuse)
	w.eng.Perform(ctx, w.decide(t, "a1", a))
	for _, step := range []time.Duration{time.Minute, time.Minute, time.Hour, 24 * time.Hour} {
		w.clock.Advance(step)
		if _, err := w.eng.Resume(ctx, a.ID()); err != nil {
			t.Fatal(err)
		}
	}
	rec := w.record(t, a)
	if rec["state"] != "failed" || rec["due_at"] != nil {
		t.Fatalf("record %v", rec)
	}
	// Refused, breaker, outage, refused: only the outage and the refusals
	// are failed tries; the breaker's answer is not a try.
	if rec["failures"] != int64(3) {
		t.Fatalf("failures %v", rec["failures"])
	}
	// One alarm per refusal, named by when it began.
	if n := w.slack.count(effect.AlarmPrefix + "gave_up:" + a.Key + ":" + strconv.FormatInt(start.Unix(), 10)); n != 1 {
		t.Fatalf("gave-up alarm posted %d times", n)
	}
	c, err := effect.ReadCounts(ctx, w.fs, w.eng.Names)
	if err != nil || c.Failed != 1 || c.Owed != 0 {
		t.Fatalf("counts %+v %v", c, err)
	}
}

// A "resolved" waits, without a try, while its alert is owed, goes after
// it, and is skipped when the alert failed for good.
func TestResolveFollowsItsRaise(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	raise := slackAlert("r1", alert.Error)
	resolve := alert.Resolve(alert.Alert{Key: "r1", Title: "r1"}, "inc1")
	w.slack.then(raise.Key, effect.Result{Outcome: effect.Unavailable, Err: errors.New("500")})
	w.eng.Perform(ctx, w.decide(t, "r1", raise))
	if st := w.eng.Perform(ctx, w.decide(t, "r1-resolve", resolve))[resolve.ID()]; !st.Pending {
		t.Fatalf("resolve before its raise: %+v", st)
	}
	if n := w.slack.count(resolve.Key); n != 0 {
		t.Fatalf("resolve posted before its raise")
	}
	w.clock.Advance(time.Minute)
	if _, err := w.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if w.slack.count(raise.Key) != 2 || w.slack.count(resolve.Key) != 1 {
		t.Fatalf("raise tried %d, resolve %d", w.slack.count(raise.Key), w.slack.count(resolve.Key))
	}

	// A raise that failed for good: its resolve is skipped.
	raise2 := slackAlert("r2", alert.Warning)
	resolve2 := alert.Resolve(alert.Alert{Key: "r2", Title: "r2"}, "inc1")
	w.slack.then(raise2.Key, effect.Result{Outcome: effect.Refused, Err: errors.New("404")}, effect.Result{Outcome: effect.Refused, Err: errors.New("404")})
	w.eng.Perform(ctx, w.decide(t, "r2", raise2))
	w.clock.Advance(25 * time.Hour)
	if _, err := w.eng.Resume(ctx, raise2.ID()); err != nil {
		t.Fatal(err)
	}
	if st := w.eng.Perform(ctx, w.decide(t, "r2-resolve", resolve2))[resolve2.ID()]; !st.Done {
		t.Fatalf("resolve of a failed alert: %+v", st)
	}
	if n := w.slack.count(resolve2.Key); n != 0 {
		t.Fatalf("resolve of an alert nobody saw was posted")
	}
	if rec := w.record(t, resolve2); rec["ref"] != "skipped" {
		t.Fatalf("record %v", rec)
	}

	// The operator fixes the route and retries the raise: its resolve,
	// skipped, is owed again and follows it.
	if st, err := w.eng.Retry(ctx, raise2.ID()); err != nil || !st.Done {
		t.Fatalf("retry %+v %v", st, err)
	}
	if _, err := w.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := w.slack.count(resolve2.Key); n != 1 {
		t.Fatalf("the retried alert's resolve was posted %d times, want 1", n)
	}
}

// One destination down with a backlog never starves another: the sweep
// tries the broken lane once and performs every effect of the other.
func TestDrainIsFairAcrossDestinations(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	var broken []effect.Effect
	for i := range 60 {
		m := w.message(fmt.Sprintf("a%02d", i), "topic-a")
		w.pub.then(m.Key, effect.Result{Outcome: effect.Unavailable, Err: errors.New("down")})
		broken = append(broken, m)
	}
	w.decide(t, "backlog", broken...) // their creator died
	w.clock.Advance(time.Second)
	var fine []effect.Effect
	for i := range 3 {
		fine = append(fine, w.message(fmt.Sprintf("b%d", i), "topic-b"))
	}
	// A topic no lane names any more (renamed in the configuration),
	// due after the whole backlog: it is not starved by it either.
	fine = append(fine, w.message("orphan", "topic-renamed"))
	w.decide(t, "fine", fine...)
	w.clock.Advance(2 * time.Minute)
	rep, err := w.eng.Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Performed != 4 || rep.Pending != 1 || len(rep.Stopped) != 1 || rep.Stopped[0] != "topic-a" {
		t.Fatalf("report %+v", rep)
	}
	tried := 0
	for _, m := range broken {
		tried += w.pub.count(m.Key)
	}
	if tried != 1 {
		t.Fatalf("the broken lane was tried %d times in one sweep", tried)
	}
}

// A try the sweep's own budget cut short is not a failed try: the effect
// stays due, with no backoff.
func TestBudgetCutIsNotATry(t *testing.T) {
	w := newWorld(t, false)
	a := slackAlert("c1", alert.Info)
	w.decide(t, "c1", a)
	w.clock.Advance(time.Minute)
	w.slack.block = true
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := w.eng.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	rec := w.record(t, a)
	if rec["state"] != "owed" || rec["failures"] != int64(0) || rec["ambiguous"] != int64(1) {
		t.Fatalf("record %v", rec)
	}
	if due, _ := rec["due_at"].(time.Time); due.After(w.clock.Now()) {
		t.Fatalf("due at %v, after now %v", due, w.clock.Now())
	}
}

// In shadow mode effects are recorded, never performed, never owed; a
// publish is confirmed on its owner with the shadow message id.
func TestShadowRecordsWithoutPerforming(t *testing.T) {
	w := newWorld(t, true)
	ctx := context.Background()
	m, a := w.message("s1", "topic-a"), slackAlert("s1", alert.Error)
	out := w.eng.Perform(ctx, w.decide(t, "s1", m, a))
	if !out[m.ID()].Done || !out[a.ID()].Done {
		t.Fatalf("statuses %+v", out)
	}
	if w.pub.count("s1") != 0 || w.slack.count(a.Key) != 0 {
		t.Fatal("a shadow effect was performed")
	}
	if d := w.ownerData(t, "s1"); d["confirmed"] != effect.ShadowRef {
		t.Fatalf("owner %v", d)
	}
	for _, e := range []effect.Effect{m, a} {
		if rec := w.record(t, e); rec["state"] != "shadow" || rec["due_at"] != nil || rec[config.ExpiresField] == nil {
			t.Fatalf("record %v", rec)
		}
	}
	c, err := effect.ReadCounts(ctx, w.fs, w.eng.Names)
	if err != nil || c.Owed != 0 || c.Failed != 0 {
		t.Fatalf("counts %+v %v", c, err)
	}
}

func TestRetryAndDismiss(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	a, b := slackAlert("o1", alert.Error), slackAlert("o2", alert.Error)
	for _, e := range []effect.Effect{a, b} {
		w.slack.then(e.Key, effect.Result{Outcome: effect.Refused, Err: errors.New("403")}, effect.Result{Outcome: effect.Refused, Err: errors.New("403")})
		w.eng.Perform(ctx, w.decide(t, e.Key, e))
	}
	w.clock.Advance(25 * time.Hour)
	for _, e := range []effect.Effect{a, b} {
		if _, err := w.eng.Resume(ctx, e.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := w.eng.Retry(ctx, a.ID()); err != nil || !st.Done {
		t.Fatalf("retry %+v %v", st, err)
	}
	if err := w.eng.Dismiss(ctx, b.ID()); err != nil {
		t.Fatal(err)
	}
	if err := w.eng.Dismiss(ctx, a.ID()); !errors.Is(err, effect.ErrNotChangeable) {
		t.Fatalf("dismissing a done effect: %v", err)
	}
	c, err := effect.ReadCounts(ctx, w.fs, w.eng.Names)
	if err != nil || c.Failed != 0 || c.Owed != 0 {
		t.Fatalf("counts %+v %v", c, err)
	}
	failed, err := effect.List(ctx, w.fs, w.eng.Names, effect.Dismissed, 10)
	if err != nil || len(failed) != 1 || failed[0].Key != b.Key {
		t.Fatalf("dismissed %v %v", failed, err)
	}

	// A message is never given up, and an effect its creator holds is not
	// tried beside it.
	m := w.message("m1", "topic-a")
	w.decide(t, "m1", m)
	if _, err := w.eng.Retry(ctx, m.ID()); !errors.Is(err, effect.ErrNotChangeable) {
		t.Fatalf("retrying a held message: %v", err)
	}
	if err := w.eng.Dismiss(ctx, m.ID()); !errors.Is(err, effect.ErrNotChangeable) {
		t.Fatalf("dismissing a message: %v", err)
	}
	w.clock.Advance(2 * time.Minute) // its creator's lease ran out
	if st, err := w.eng.Retry(ctx, m.ID()); err != nil || !st.Done {
		t.Fatalf("retrying a message whose lease ran out: %+v %v", st, err)
	}
}
