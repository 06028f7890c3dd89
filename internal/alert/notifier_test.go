package alert

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/slacktest"
)

var sample = Alert{
	Key: "phase3_to_phase4:2026-01-19:partial", Severity: Error, Title: "Phase 4 triggered without all data",
	Phase: "phase3_to_phase4", GameDate: "2026-01-19", Reason: "tier2_timeout", Completed: 4, Expected: 5,
	Missing: []string{"team_offense_game_summary"}, Elapsed: 42*time.Minute + 10*time.Second,
	Detail: "first completion 05:30 UTC",
}

func TestMessage(t *testing.T) {
	noMissing := sample
	noMissing.Missing, noMissing.Detail, noMissing.Severity = nil, "", Warning
	resolved := sample
	resolved.Resolved = true
	tests := []struct {
		name     string
		a        Alert
		text     string   // plain-text fallback, exact
		contains []string // in the JSON of the blocks
		absent   []string
	}{
		{"error", sample,
			"🚨 Phase 4 triggered without all data — 2026-01-19, phase3_to_phase4, tier2_timeout, 4/5 complete, missing: team_offense_game_summary",
			[]string{`"type":"header"`, `🚨 Phase 4 triggered without all data`, `*Date*\n2026-01-19`, `*Phase*\nphase3_to_phase4`,
				`*Completed*\n4/5`, `*Reason*\ntier2_timeout`, `*Elapsed*\n42m`, `*Missing*\nteam_offense_game_summary`,
				`"type":"context"`, `first completion 05:30 UTC`},
			nil},
		{"warning without missing or detail", noMissing,
			"⚠️ Phase 4 triggered without all data — 2026-01-19, phase3_to_phase4, tier2_timeout, 4/5 complete",
			[]string{`⚠️ Phase 4`, `*Missing*\nnone`},
			[]string{`"type":"context"`}},
		{"resolved", resolved, "✅ Resolved: Phase 4 triggered without all data",
			[]string{`✅ Resolved: Phase 4 triggered without all data`},
			[]string{`"type":"header"`, `*Missing*`, `🚨`}},
		{"escapes markup", Alert{Severity: Info, Title: "t", Reason: "<!here> & co"},
			"ℹ️ t — &lt;!here&gt; &amp; co",
			[]string{`&lt;!here&gt; &amp; co`}, []string{`<!here>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message(tt.a)
			if m.Text != tt.text {
				t.Errorf("Text = %q, want %q", m.Text, tt.text)
			}
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			// Undo JSON's HTML escaping so the expectations read naturally.
			js := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(raw))
			for _, s := range tt.contains {
				if !strings.Contains(js, s) {
					t.Errorf("payload lacks %q:\n%s", s, js)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(js, s) {
					t.Errorf("payload has %q:\n%s", s, js)
				}
			}
		})
	}
}

func TestFormatElapsed(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "–", 45 * time.Second: "45s", 42*time.Minute + 29*time.Second: "42m",
		42*time.Minute + 31*time.Second: "43m", 2 * time.Hour: "2h", 2*time.Hour + 5*time.Minute: "2h5m",
	} {
		if got := FormatElapsed(d); got != want {
			t.Errorf("FormatElapsed(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRouting(t *testing.T) {
	s := newSlack(t)
	all := testConfig(s)
	tests := []struct {
		name  string
		cfg   func(c *config.Alerts)
		want  map[string]string // alert → path; "" means logged only
		label map[string]bool   // expected keys of Breakers()
	}{
		{"each severity its own", func(*config.Alerts) {},
			map[string]string{"error": "/error", "warning": "/warning", "info": "/info", "resolved": "/warning"},
			map[string]bool{"error": true, "warning": true, "info": true}},
		{"unset fall back to the default", func(c *config.Alerts) { c.WebhookURLError, c.WebhookURLWarning = "", "" },
			map[string]string{"error": "/info", "warning": "/info", "info": "/info", "resolved": "/info"},
			map[string]bool{"error": true, "warning": true, "info": true}},
		{"error only plus default", func(c *config.Alerts) { c.WebhookURLWarning = "" },
			map[string]string{"error": "/error", "warning": "/info", "info": "/info", "resolved": "/info"},
			map[string]bool{"error": true, "warning": true, "info": true}},
		{"only a specific one set", func(c *config.Alerts) { c.WebhookURL, c.WebhookURLWarning = "", "" },
			map[string]string{"error": "/error", "warning": "", "info": "", "resolved": ""},
			map[string]bool{"error": true}},
		{"none set: logged only", func(c *config.Alerts) { c.WebhookURL, c.WebhookURLError, c.WebhookURLWarning = "", "", "" },
			map[string]string{"error": "", "warning": "", "info": "", "resolved": ""},
			map[string]bool{}},
	}
	alerts := map[string]Alert{
		"error":    {Key: "e", Severity: Error, Title: "error"},
		"warning":  {Key: "w", Severity: Warning, Title: "warning"},
		"info":     {Key: "i", Severity: Info, Title: "info"},
		"resolved": {Key: "e", Severity: Error, Title: "resolved", Resolved: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := all
			tt.cfg(&cfg)
			m := &metrics.Registry{}
			n := NewNotifier(cfg, testLogger(t), m)
			logged := 0
			for name, want := range tt.want {
				before := len(s.Posts())
				if err := n.Post(context.Background(), alerts[name]); err != nil {
					t.Fatalf("Post(%s): %v", name, err)
				}
				reqs := s.Posts()[before:]
				if want == "" {
					logged++
					if len(reqs) != 0 {
						t.Errorf("%s: posted to %s, want logged only", name, reqs[0].Path)
					}
					continue
				}
				if len(reqs) != 1 || reqs[0].Path != want {
					t.Errorf("%s: requests %v, want one to %s", name, paths(reqs), want)
				}
			}
			if got := m.Get("alerts.logged_only"); got != int64(logged) {
				t.Errorf("alerts.logged_only = %d, want %d", got, logged)
			}
			if got := m.Get("alerts.sent"); got != int64(len(tt.want)-logged) {
				t.Errorf("alerts.sent = %d, want %d", got, len(tt.want)-logged)
			}
			b := n.Breakers()
			if len(b) != len(tt.label) {
				t.Errorf("Breakers() = %v, want keys %v", b, tt.label)
			}
			for k, st := range b {
				if !tt.label[k] || st != "closed" {
					t.Errorf("Breakers()[%q] = %q, want a closed configured route", k, st)
				}
				if strings.Contains(k, "http") || strings.Contains(st, "http") {
					t.Errorf("Breakers() exposes a URL: %v", b)
				}
			}
		})
	}
}

func paths(ps []slacktest.Post) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Path)
	}
	return out
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name       string
		script     []slacktest.Reply
		def        slacktest.Reply
		maxElapsed time.Duration
		wantErr    error // nil: delivered; errAny: any error
		requests   int   // exact; -1 means at least 2
		delivered  int
		minGap     time.Duration // between the first two requests
		maxTook    time.Duration
	}{
		{name: "429 with Retry-After then 200", script: []slacktest.Reply{{Status: 429, RetryAfter: 1}}, def: slacktest.Reply{Status: 200},
			requests: 2, delivered: 1, minGap: time.Second, maxTook: 2500 * time.Millisecond},
		{name: "429 without Retry-After then 200", script: []slacktest.Reply{{Status: 429}}, def: slacktest.Reply{Status: 200},
			requests: 2, delivered: 1},
		{name: "500 then 200", script: []slacktest.Reply{{Status: 500}}, def: slacktest.Reply{Status: 200}, requests: 2, delivered: 1},
		{name: "502, 503 then 200", script: []slacktest.Reply{{Status: 502}, {Status: 503}}, def: slacktest.Reply{Status: 200}, requests: 3, delivered: 1},
		{name: "400 is not retried", def: slacktest.Reply{Status: 400}, wantErr: ErrRejected, requests: 1},
		{name: "404 is not retried", def: slacktest.Reply{Status: 404}, wantErr: ErrRejected, requests: 1},
		{name: "Retry-After beyond the budget gives up at once", def: slacktest.Reply{Status: 429, RetryAfter: 30},
			wantErr: errAny, requests: 1, maxTook: time.Second},
		{name: "500 forever stops at MaxElapsed", def: slacktest.Reply{Status: 500}, maxElapsed: 500 * time.Millisecond,
			wantErr: errAny, requests: -1, maxTook: 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSlack(t)
			s.SetDefault(tt.def)
			s.Script(tt.script...)
			cfg := testConfig(s)
			if tt.maxElapsed > 0 {
				cfg.MaxElapsed = tt.maxElapsed
			}
			m := &metrics.Registry{}
			n := NewNotifier(cfg, testLogger(t), m, WithRetryBase(10*time.Millisecond), WithBreaker(100, time.Minute))
			start := time.Now()
			err := n.Post(context.Background(), sample)
			took := time.Since(start)
			// Close waits for the handlers still running, so that a request
			// the client abandoned mid-flight is in Posts too.
			s.Close()
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Post: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Fatal("Post succeeded, want an error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("Post: %v, want %v", err, tt.wantErr)
			}
			reqs := s.Posts()
			if tt.requests >= 0 && len(reqs) != tt.requests || tt.requests < 0 && len(reqs) < 2 {
				t.Errorf("%d requests, want %d", len(reqs), tt.requests)
			}
			if got := len(s.Delivered()); got != tt.delivered {
				t.Errorf("%d delivered, want %d", got, tt.delivered)
			}
			if tt.minGap > 0 && len(reqs) >= 2 {
				if gap := reqs[1].At.Sub(reqs[0].At); gap < tt.minGap {
					t.Errorf("retried after %v, want at least %v (Retry-After)", gap, tt.minGap)
				}
			}
			if tt.maxTook > 0 && took > tt.maxTook {
				t.Errorf("Post took %v, want at most %v", took, tt.maxTook)
			}
			if got, want := m.Get("alerts.retry"), int64(max(len(reqs)-1, 0)); got != want {
				t.Errorf("alerts.retry = %d, want %d", got, want)
			}
			if tt.wantErr != nil && m.Get("alerts.failed") != 1 {
				t.Errorf("alerts.failed = %d, want 1", m.Get("alerts.failed"))
			}
		})
	}
}

var errAny = errors.New("any error")

func TestTimeoutsBounded(t *testing.T) {
	tests := []struct {
		name       string
		maxElapsed time.Duration
		ctxTimeout time.Duration
		bound      time.Duration
	}{
		{"the request's timeout ends a hanging Slack's post", 600 * time.Millisecond, 0, 150 * time.Millisecond},
		{"the caller's deadline wins when earlier", 10 * time.Second, 100 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSlack(t)
			s.SetDefault(slacktest.Reply{Status: 200, Delay: 10 * time.Second})
			cfg := testConfig(s)
			cfg.RequestTimeout, cfg.MaxElapsed = 150*time.Millisecond, tt.maxElapsed
			n := NewNotifier(cfg, testLogger(t), &metrics.Registry{}, WithRetryBase(10*time.Millisecond), WithBreaker(100, time.Minute))
			ctx := context.Background()
			if tt.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
				defer cancel()
			}
			start := time.Now()
			err := n.Post(ctx, sample)
			took := time.Since(start)
			if !errors.Is(err, ErrMaybePosted) {
				t.Fatalf("Post against a hanging Slack: %v, want ErrMaybePosted", err)
			}
			// Generous slack over the bound: this checks that the bound
			// holds, not how fast the machine is.
			if took > tt.bound+500*time.Millisecond {
				t.Errorf("Post took %v, want about %v", took, tt.bound)
			}
			// The server records a post when its handler ends, here when the
			// client gives up; Close waits for that.
			s.Close()
			// Slack may have posted the one that timed out: no second try
			// here (the effect log tries again after its backoff).
			if n := len(s.Posts()); n != 1 {
				t.Errorf("%d requests reached Slack, want 1", n)
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	s := newSlack(t)
	s.SetDefault(slacktest.Reply{Status: 500})
	cfg := testConfig(s)
	cfg.WebhookURLWarning = ""
	m := &metrics.Registry{}
	const failures, openFor = 3, 300 * time.Millisecond
	n := NewNotifier(cfg, testLogger(t), m, WithRetryBase(5*time.Millisecond), WithBreaker(failures, openFor))

	info := Alert{Key: "i", Severity: Info, Title: "info"}
	if err := n.Post(context.Background(), info); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Post against a failing Slack: %v, want ErrBreakerOpen once %d attempts failed", err, failures)
	}
	if got := len(s.Posts()); got != failures {
		t.Fatalf("%d requests before the breaker opened, want %d", got, failures)
	}
	want := map[string]string{"info": "open", "warning": "open", "error": "closed"}
	if b := n.Breakers(); !equal(b, want) {
		t.Errorf("Breakers() = %v, want %v (one breaker per URL)", b, want)
	}

	start := time.Now()
	err := n.Post(context.Background(), Alert{Key: "w", Severity: Warning, Title: "warning"})
	if !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Post with the breaker open: %v, want ErrBreakerOpen", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("Post with the breaker open took %v; it should fail at once", took)
	}
	if got := len(s.Posts()); got != failures {
		t.Errorf("Slack was called with the breaker open: %d requests, want %d", got, failures)
	}
	if got := m.Get("alerts.breaker_open"); got != 2 {
		t.Errorf("alerts.breaker_open = %d, want 2 (two alerts refused)", got)
	}
	if got := m.Get("alerts.breaker_to_open"); got != 1 {
		t.Errorf("alerts.breaker_to_open = %d, want 1", got)
	}

	// Another URL's breaker is unaffected.
	s.SetDefault(slacktest.Reply{Status: 200})
	if err := n.Post(context.Background(), Alert{Key: "e", Severity: Error, Title: "error"}); err != nil {
		t.Fatalf("Post to the error webhook: %v", err)
	}

	// After openFor, one trial goes through and closes the breaker.
	time.Sleep(openFor + 50*time.Millisecond)
	if got := n.Breakers()["info"]; got != "half-open" {
		t.Errorf("breaker after %v is %q, want half-open", openFor, got)
	}
	if err := n.Post(context.Background(), info); err != nil {
		t.Fatalf("Post after Slack recovered: %v", err)
	}
	if got := n.Breakers()["info"]; got != "closed" {
		t.Errorf("breaker after a success is %q, want closed", got)
	}
	if got := len(s.Delivered()); got != 2 {
		t.Errorf("%d delivered, want 2", got)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRateLimitSpacing(t *testing.T) {
	s := newSlack(t)
	cfg := testConfig(s)
	cfg.MinInterval = 100 * time.Millisecond
	n := NewNotifier(cfg, testLogger(t), &metrics.Registry{})
	const posts = 5
	var wg sync.WaitGroup
	start := time.Now()
	for i := range posts {
		wg.Go(func() {
			if err := n.Post(context.Background(), Alert{Key: string(rune('a' + i)), Severity: Error, Title: "x"}); err != nil {
				t.Error(err)
			}
		})
	}
	// A different webhook has its own limiter: it is not queued behind.
	wg.Go(func() {
		if err := n.Post(context.Background(), Alert{Key: "i", Severity: Info, Title: "x"}); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	// The limiter lets the last of five posts start no sooner than four
	// intervals after the first: a lower bound, which jitter in delivery
	// cannot break (arrival gaps between two posts can shrink).
	if took := time.Since(start); took < (posts-1)*cfg.MinInterval {
		t.Fatalf("%d posts took %v, want ≥ %v", posts, took, (posts-1)*cfg.MinInterval)
	}
	var errorPosts []time.Time
	var info time.Time
	for _, p := range s.Posts() {
		switch p.Path {
		case "/error":
			errorPosts = append(errorPosts, p.At)
		case "/info":
			info = p.At
		}
	}
	if len(errorPosts) != posts {
		t.Fatalf("%d posts to /error, want %d", len(errorPosts), posts)
	}
	slices.SortFunc(errorPosts, func(a, b time.Time) int { return a.Compare(b) })
	if !info.Before(errorPosts[len(errorPosts)-1]) {
		t.Fatalf("the /info post waited behind /error's limiter")
	}
}

// Whether a failed request may have been posted decides whether Post tries
// it again: a connection cut after the request was sent may have been
// posted (one request, ErrMaybePosted); one refused before anything was
// sent cannot have been (tried again until the budget ends).
func TestNoAnswerAfterSendingIsNotRetried(t *testing.T) {
	var requests atomic.Int64
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // no answer at all
		}
	}))
	defer cut.Close()
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close() // nothing listens: the request is never sent
	for _, tc := range []struct {
		name      string
		url       string
		maybe     bool
		wantTries func(int64) bool
	}{
		{"cut after sending", cut.URL + "/hook", true, func(n int64) bool { return n == 1 }},
		{"refused before sending", refusedURL + "/hook", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requests.Store(0)
			cfg := config.Alerts{WebhookURLError: tc.url, SendBudget: time.Second, MaxElapsed: 400 * time.Millisecond,
				RequestTimeout: 200 * time.Millisecond}
			m := &metrics.Registry{}
			n := NewNotifier(cfg, testLogger(t), m, WithRetryBase(10*time.Millisecond), WithBreaker(100, time.Minute))
			err := n.Post(context.Background(), sample)
			if err == nil || errors.Is(err, ErrMaybePosted) != tc.maybe {
				t.Fatalf("Post: %v, want ErrMaybePosted %v", err, tc.maybe)
			}
			if tc.wantTries != nil && !tc.wantTries(requests.Load()) {
				t.Fatalf("%d requests reached the server", requests.Load())
			}
			if !tc.maybe && m.Get("alerts.retry") == 0 {
				t.Fatal("a request that was never sent was not tried again")
			}
		})
	}
}
