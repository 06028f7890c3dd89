package alert

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/testenv"
)

type harness struct {
	svc  *Service
	fs   *firestore.Client
	s    *slacktest.Server
	clk  *clock.Fake
	m    *metrics.Registry
	cfg  config.Alerts
	t0   time.Time
	ctx  context.Context
	test *testing.T
}

func newHarness(t *testing.T, edit ...func(*config.Alerts)) *harness {
	t.Helper()
	s := newSlack(t)
	cfg := testConfig(s)
	cfg.SendBudget, cfg.MaxElapsed = 400*time.Millisecond, time.Second
	for _, e := range edit {
		e(&cfg)
	}
	fs := testenv.Firestore(t, testenv.Project(t))
	t0 := time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	m := &metrics.Registry{}
	log := testLogger(t)
	// A breaker that never opens, so that a test's deliberate failures do
	// not lock Slack out for the tests' later steps.
	n := NewNotifier(cfg, log, m, WithRetryBase(10*time.Millisecond), WithBreaker(1000, time.Minute))
	return &harness{svc: NewService(fs, n, clk, cfg, log, m), fs: fs, s: s, clk: clk, m: m, cfg: cfg, t0: t0,
		ctx: context.Background(), test: t}
}

// doc reads the alert document of key.
func (h *harness) doc(key string) map[string]any {
	h.test.Helper()
	snap, err := h.fs.Collection(Collection).Doc(DocID(key)).Get(h.ctx)
	if err != nil {
		h.test.Fatalf("alert document %q: %v", key, err)
	}
	return snap.Data()
}

// pastLeases moves the clock beyond any lease a sender could hold.
func (h *harness) pastLeases() {
	h.clk.Advance(h.cfg.MaxElapsed + h.cfg.SendBudget + leaseMargin + time.Second)
}

func (h *harness) flush(want int) {
	h.test.Helper()
	n, err := h.svc.Flush(h.ctx)
	if err != nil {
		h.test.Fatalf("Flush: %v", err)
	}
	if n != want {
		h.test.Fatalf("Flush sent %d, want %d", n, want)
	}
}

func (h *harness) wantDelivered(texts ...string) {
	h.test.Helper()
	got := h.s.Delivered()
	if len(got) != len(texts) {
		h.test.Fatalf("delivered %d messages %v, want %d %v", len(got), textsOf(got), len(texts), texts)
	}
	for i, p := range got {
		if !strings.HasPrefix(p.Text, texts[i]) {
			h.test.Errorf("message %d is %q, want it to start with %q", i, p.Text, texts[i])
		}
	}
}

func textsOf(ps []slacktest.Post) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Path+" "+p.Text)
	}
	return out
}

func alertFor(key string) Alert {
	a := sample
	a.Key, a.Title = key, "Alert "+key
	return a
}

func TestRaiseTwiceSendsOnce(t *testing.T) {
	h := newHarness(t)
	a := alertFor("k1")
	h.svc.Raise(h.ctx, a)
	h.clk.Advance(time.Minute)
	h.svc.Raise(h.ctx, a)
	h.wantDelivered("🚨 Alert k1")
	if got := h.s.Delivered()[0].Path; got != "/error" {
		t.Errorf("posted to %s, want /error", got)
	}
	d := h.doc("k1")
	if d["key"] != "k1" || d["state"] != StateSent || d["severity"] != "error" {
		t.Errorf("document = %v, want key k1, state sent, severity error", d)
	}
	if at, ok := d["sent_at"].(time.Time); !ok || !at.Equal(h.t0) {
		t.Errorf("sent_at = %v, want the clock's %v", d["sent_at"], h.t0)
	}
	if _, ok := d["sending_until"]; ok {
		t.Errorf("sending_until left on a sent alert: %v", d["sending_until"])
	}
	if got := h.m.Get("alerts.suppressed_duplicate"); got != 1 {
		t.Errorf("alerts.suppressed_duplicate = %d, want 1", got)
	}
	h.pastLeases()
	h.flush(0)
	h.wantDelivered("🚨 Alert k1")
}

func TestConcurrentRaiseSendsOnce(t *testing.T) {
	h := newHarness(t)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { h.svc.Raise(h.ctx, alertFor("k2")) })
	}
	wg.Wait()
	h.wantDelivered("🚨 Alert k2")
	if got := h.m.Get("alerts.suppressed_duplicate"); got != 9 {
		t.Errorf("alerts.suppressed_duplicate = %d, want 9", got)
	}
}

func TestRaiseWhileSlackDownThenFlush(t *testing.T) {
	h := newHarness(t)
	h.s.SetDefault(slacktest.Reply{Status: 500})
	start := time.Now()
	h.svc.Raise(h.ctx, alertFor("k3"))
	if took := time.Since(start); took > h.cfg.SendBudget+time.Second {
		t.Errorf("Raise took %v with Slack down, want about the send budget %v", took, h.cfg.SendBudget)
	}
	if len(h.s.Posts()) == 0 {
		t.Fatal("Raise did not try Slack")
	}
	h.wantDelivered()
	if d := h.doc("k3"); d["state"] != StatePending {
		t.Fatalf("state = %v, want pending", d["state"])
	}

	// Within the raiser's lease the sweep leaves the alert alone, even with
	// Slack back: the request might still be sending it.
	h.s.SetDefault(slacktest.Reply{Status: 200})
	h.clk.Advance(h.cfg.SendBudget / 2)
	h.flush(0)
	h.wantDelivered()

	h.pastLeases()
	h.flush(1)
	h.wantDelivered("🚨 Alert k3")
	d := h.doc("k3")
	if d["state"] != StateSent {
		t.Errorf("state = %v after Flush, want sent", d["state"])
	}
	if _, ok := d["sending_until"]; ok {
		t.Errorf("sending_until left after Flush: %v", d["sending_until"])
	}
	h.pastLeases()
	h.flush(0)
	h.wantDelivered("🚨 Alert k3")
}

func TestFlushRetriesWhileSlackStaysDown(t *testing.T) {
	h := newHarness(t, func(c *config.Alerts) { c.MaxElapsed = 200 * time.Millisecond })
	h.s.SetDefault(slacktest.Reply{Status: 500})
	h.svc.Raise(h.ctx, alertFor("k4"))
	h.pastLeases()
	h.flush(0) // claimed, tried, failed: stays pending
	if d := h.doc("k4"); d["state"] != StatePending || d["attempts"] != int64(1) {
		t.Fatalf("after a failed Flush: state %v attempts %v, want pending, 1", d["state"], d["attempts"])
	}
	h.s.SetDefault(slacktest.Reply{Status: 200})
	h.flush(0) // it waits out its backoff
	h.clk.Advance(flushBackoffBase)
	h.flush(1)
	h.wantDelivered("🚨 Alert k4")
}

func TestConcurrentFlushSendsEachOnce(t *testing.T) {
	// A post that outlives its client timeout after Slack took it is the
	// accepted duplicate (docs/reliability.md); on a loaded machine the
	// harness's 1 s would make one here, so this test, which is about the
	// claims, gives each post all the time it needs.
	h := newHarness(t, func(c *config.Alerts) {
		c.RequestTimeout, c.MaxElapsed = 20*time.Second, time.Minute
	})
	h.s.SetDefault(slacktest.Reply{Status: 500})
	keys := []string{"c1", "c2", "c3", "c4", "c5"}
	for _, k := range keys {
		h.svc.Raise(h.ctx, alertFor(k))
	}
	h.s.SetDefault(slacktest.Reply{Status: 200, Delay: 20 * time.Millisecond})
	h.pastLeases()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 2 {
		wg.Go(func() {
			n, err := h.svc.Flush(h.ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != len(keys) {
		t.Errorf("the two Flushes sent %d, want %d", total, len(keys))
	}
	got := map[string]int{}
	for _, p := range h.s.Delivered() {
		got[p.Text[:strings.Index(p.Text, " —")]]++
	}
	for _, k := range keys {
		if n := got["🚨 Alert "+k]; n != 1 {
			t.Errorf("alert %s delivered %d times, want 1", k, n)
		}
	}
}

func TestResolve(t *testing.T) {
	h := newHarness(t)
	a := alertFor("r1")
	h.svc.Raise(h.ctx, a)
	h.clk.Advance(10 * time.Minute)
	h.svc.Resolve(h.ctx, Alert{Key: "r1"})
	h.wantDelivered("🚨 Alert r1", "✅ Resolved: Alert r1")
	if got := h.s.Delivered()[1].Path; got != "/warning" {
		t.Errorf("resolved follow-up went to %s, want /warning", got)
	}
	d := h.doc("r1")
	if at, ok := d["resolved_at"].(time.Time); d["resolve_state"] != StateSent || !ok || !at.Equal(h.t0.Add(10*time.Minute)) {
		t.Errorf("resolve_state %v resolved_at %v, want sent at %v", d["resolve_state"], d["resolved_at"], h.t0.Add(10*time.Minute))
	}

	h.svc.Resolve(h.ctx, Alert{Key: "r1"})
	h.pastLeases()
	h.flush(0)
	h.wantDelivered("🚨 Alert r1", "✅ Resolved: Alert r1")
}

func TestConcurrentResolveSendsOnce(t *testing.T) {
	h := newHarness(t)
	h.svc.Raise(h.ctx, alertFor("r2"))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { h.svc.Resolve(h.ctx, Alert{Key: "r2"}) })
	}
	wg.Wait()
	h.wantDelivered("🚨 Alert r2", "✅ Resolved: Alert r2")
}

func TestResolveWithoutRaise(t *testing.T) {
	h := newHarness(t)
	h.svc.Resolve(h.ctx, Alert{Key: "never"})
	h.pastLeases()
	h.flush(0)
	h.wantDelivered()
	if _, err := h.fs.Collection(Collection).Doc(DocID("never")).Get(h.ctx); err == nil {
		t.Error("Resolve created a document for an alert never raised")
	}
}

func TestResolveBeforeRaiseDelivered(t *testing.T) {
	h := newHarness(t)
	h.s.SetDefault(slacktest.Reply{Status: 500})
	h.svc.Raise(h.ctx, alertFor("r3"))
	h.svc.Resolve(h.ctx, Alert{Key: "r3"})
	h.wantDelivered()
	h.s.SetDefault(slacktest.Reply{Status: 200})
	h.pastLeases()
	h.flush(2) // the alert first, then its follow-up
	h.wantDelivered("🚨 Alert r3", "✅ Resolved: Alert r3")
	if d := h.doc("r3"); d["state"] != StateSent || d["resolve_state"] != StateSent {
		t.Errorf("state %v resolve_state %v, want both sent", d["state"], d["resolve_state"])
	}
	h.pastLeases()
	h.flush(0)
}

func TestFlushBacksOff(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want time.Duration
	}{{1, 5 * time.Minute}, {2, 10 * time.Minute}, {3, 20 * time.Minute}, {4, 40 * time.Minute}, {5, time.Hour}, {40, time.Hour}} {
		if got := flushBackoff(tc.n); got != tc.want {
			t.Errorf("flushBackoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// A message Slack keeps refusing is tried for keep_for, with backoff, and
// only then marked failed.
func TestFlushGivesUpOnlyAfterKeepFor(t *testing.T) {
	h := newHarness(t)
	h.s.SetDefault(slacktest.Reply{Status: 400})
	if err := h.svc.Raise(h.ctx, alertFor("g1")); err != nil {
		t.Fatal(err)
	}
	start := h.clk.Now()
	for h.clk.Now().Sub(start) < 24*time.Hour {
		h.clk.Advance(5 * time.Minute) // one sweep
		h.flush(0)
		if d := h.doc("g1"); d["state"] != StatePending {
			t.Fatalf("after %v: state %v, want pending for at least 24h", h.clk.Now().Sub(start), d["state"])
		}
	}
	requests := len(h.s.Posts())
	if requests > 1+30 {
		t.Errorf("%d requests in 24h of sweeps every 5 minutes, want backoff to keep it near 28", requests)
	}
	h.clk.Advance(time.Hour)
	h.flush(0)
	if d := h.doc("g1"); d["state"] != StateFailed {
		t.Errorf("state = %v after 25h of refusals, want failed", d["state"])
	}
	// Nobody saw the alert, so its resolution is not announced either.
	h.s.SetDefault(slacktest.Reply{Status: 200})
	if err := h.svc.Resolve(h.ctx, Alert{Key: "g1"}); err != nil {
		t.Fatal(err)
	}
	h.pastLeases()
	h.flush(0)
	h.wantDelivered()
}

// While Slack is down (5xx) nothing is given up, however long it takes.
func TestKeptWhileSlackDown(t *testing.T) {
	h := newHarness(t, func(c *config.Alerts) { c.MaxElapsed = 100 * time.Millisecond })
	h.s.SetDefault(slacktest.Reply{Status: 503})
	_ = h.svc.Raise(h.ctx, alertFor("d1"))
	for range 48 {
		h.clk.Advance(time.Hour)
		h.flush(0)
	}
	if d := h.doc("d1"); d["state"] != StatePending {
		t.Fatalf("state = %v after 48h of Slack down, want pending", d["state"])
	}
	h.s.SetDefault(slacktest.Reply{Status: 200})
	h.clk.Advance(time.Hour)
	h.flush(1)
	h.wantDelivered("🚨 Alert d1")
}

// An open breaker refuses without asking Slack: no attempt is counted, no
// write is made, and the message stays due.
func TestBreakerRejectionIsNotAnAttempt(t *testing.T) {
	h := newHarness(t)
	h.svc.n = NewNotifier(h.cfg, testLogger(t), h.m, WithRetryBase(10*time.Millisecond), WithBreaker(1, time.Hour))
	h.s.SetDefault(slacktest.Reply{Status: 500})
	_ = h.svc.Raise(h.ctx, alertFor("b1")) // one request, which opens the breaker
	if !h.svc.n.Refuses(alertFor("b1")) {
		t.Fatal("breaker not open after a failure")
	}
	requests := len(h.s.Posts())
	for range 20 {
		h.clk.Advance(5 * time.Minute)
		h.flush(0)
	}
	d := h.doc("b1")
	if d["attempts"] != int64(0) || d["state"] != StatePending {
		t.Errorf("attempts %v state %v after 20 sweeps with the breaker open, want 0, pending", d["attempts"], d["state"])
	}
	if got := len(h.s.Posts()); got != requests {
		t.Errorf("%d requests reached Slack with the breaker open", got-requests)
	}
	if got := h.m.Get("alerts.flush_breaker_open"); got != 20 {
		t.Errorf("alerts.flush_breaker_open = %d, want 20", got)
	}
}

// Slack down for three hours, with the injected clock and a sweep every five
// minutes: alerts raised and resolved during the outage are each delivered
// once when Slack is back, the resolved follow-ups after their alerts.
func TestSlackDownThreeHours(t *testing.T) {
	h := newHarness(t, func(c *config.Alerts) { c.MaxElapsed = 100 * time.Millisecond })
	// The breaker's open period runs on the real clock: short, so the
	// sweeps alternate between probing Slack and being refused unasked.
	h.svc.n = NewNotifier(h.cfg, testLogger(t), h.m, WithRetryBase(5*time.Millisecond), WithBreaker(2, 20*time.Millisecond))
	h.s.SetDefault(slacktest.Reply{Status: 503})
	keys := []string{"o1", "o2", "o3", "o4", "o5", "o6"}
	resolved := map[string]bool{"o1": true, "o3": true, "o5": true}
	start := h.clk.Now()
	sweep := 0
	for h.clk.Now().Sub(start) < 3*time.Hour {
		if sweep < len(keys) {
			k := keys[sweep]
			if err := h.svc.Raise(h.ctx, alertFor(k)); err != nil {
				t.Fatal(err)
			}
		}
		if sweep == 10 {
			for k := range resolved {
				if err := h.svc.Resolve(h.ctx, Alert{Key: k}); err != nil {
					t.Fatal(err)
				}
			}
		}
		h.clk.Advance(5 * time.Minute)
		if _, err := h.svc.Flush(h.ctx); err != nil {
			t.Fatal(err)
		}
		sweep++
	}
	h.wantDelivered()
	for _, k := range keys {
		if d := h.doc(k); d["state"] != StatePending {
			t.Fatalf("%s: state %v after 3h of outage, want pending", k, d["state"])
		}
	}

	h.s.SetDefault(slacktest.Reply{Status: 200})
	time.Sleep(50 * time.Millisecond) // the breaker's real-time open period
	for range 24 {                    // two hours of sweeps: past the longest backoff
		h.clk.Advance(5 * time.Minute)
		if _, err := h.svc.Flush(h.ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	count := map[string]int{}
	order := map[string][]string{}
	for _, p := range h.s.Delivered() {
		for _, k := range keys {
			if strings.Contains(p.Text, "Alert "+k) {
				kind := "alert"
				if strings.HasPrefix(p.Text, "✅") {
					kind = "resolved"
				}
				count[k+" "+kind]++
				order[k] = append(order[k], kind)
			}
		}
	}
	for _, k := range keys {
		want := []string{"alert"}
		if resolved[k] {
			want = append(want, "resolved")
		}
		if strings.Join(order[k], ",") != strings.Join(want, ",") {
			t.Errorf("%s delivered %v, want %v", k, order[k], want)
		}
		d := h.doc(k)
		if d["state"] != StateSent || (resolved[k] && d["resolve_state"] != StateSent) {
			t.Errorf("%s: state %v resolve_state %v, want sent", k, d["state"], d["resolve_state"])
		}
	}
}

func TestRaiseNotRecordedFails(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(h.ctx)
	cancel()
	if err := h.svc.Raise(ctx, alertFor("n1")); !errors.Is(err, ErrNotRecorded) {
		t.Errorf("Raise with Firestore unreachable = %v, want ErrNotRecorded", err)
	}
	if err := h.svc.Resolve(ctx, alertFor("n1")); !errors.Is(err, ErrNotRecorded) {
		t.Errorf("Resolve with Firestore unreachable = %v, want ErrNotRecorded", err)
	}
	h.wantDelivered()
	// The retry the error asks for raises it.
	if err := h.svc.Raise(h.ctx, alertFor("n1")); err != nil {
		t.Fatal(err)
	}
	h.wantDelivered("🚨 Alert n1")
}

func TestLoggedOnlyStillOnce(t *testing.T) {
	h := newHarness(t, func(c *config.Alerts) { c.WebhookURL, c.WebhookURLError, c.WebhookURLWarning = "", "", "" })
	h.svc.Raise(h.ctx, alertFor("l1"))
	h.svc.Raise(h.ctx, alertFor("l1"))
	h.svc.Resolve(h.ctx, Alert{Key: "l1"})
	if got := h.m.Get("alerts.logged_only"); got != 2 {
		t.Errorf("alerts.logged_only = %d, want 2 (the alert and its follow-up)", got)
	}
	if d := h.doc("l1"); d["state"] != StateSent || d["resolve_state"] != StateSent {
		t.Errorf("state %v resolve_state %v, want both sent", d["state"], d["resolve_state"])
	}
	if len(h.s.Posts()) != 0 {
		t.Error("Slack was called with no webhook configured")
	}
}
