package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sethvargo/go-retry"
	"github.com/slack-go/slack"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/metrics"
)

// ErrBreakerOpen is returned (wrapped) when a webhook's circuit breaker is
// open: Slack has failed repeatedly, and the alert is refused at once rather
// than making every request wait out its retry budget.
var ErrBreakerOpen = errors.New("alert: circuit breaker open")

// ErrNotAsked is returned (wrapped, with ErrBreakerOpen) when Post never
// reached Slack because its breaker refused every try: the outbox does not
// count that as an attempt.
var ErrNotAsked = errors.New("alert: slack not asked")

// ErrRejected is returned (wrapped) when Slack refused the message with a
// 4xx other than 429: the same request can never succeed, so it is not
// retried.
var ErrRejected = errors.New("alert: rejected by slack")

// ErrMaybePosted is returned (wrapped) when a request was sent to Slack and
// no answer came back (a timeout, a reset connection): Slack may have
// posted it. Post does not try again at once
// (that would be a second message whenever the first got through); the
// effect log tries again after its backoff and counts the possible copy.
var ErrMaybePosted = errors.New("alert: slack did not answer in time; it may have posted the message")

// Defaults for the breaker and the backoff; the Option functions change them
// (tests use them to run fast).
const (
	DefaultBreakerFailures = 5
	DefaultBreakerOpenFor  = 30 * time.Second
	DefaultRetryBase       = 250 * time.Millisecond
	// maxBackoff caps one wait of the exponential backoff so that a long
	// budget (a sweep's MaxElapsed) keeps trying instead of sleeping it away.
	maxBackoff = 5 * time.Second
	// jitterPercent spreads retries of instances that failed together.
	jitterPercent = 25
)

// Notifier posts alerts to Slack incoming webhooks. It is safe for
// concurrent use and meant to live as long as the process, because its rate
// limiters and breakers only work if shared by every request.
type Notifier struct {
	cfg       config.Alerts
	log       *slog.Logger
	m         *metrics.Registry
	client    *http.Client
	retryBase time.Duration
	failures  uint32
	openFor   time.Duration
	routes    map[Severity]*route // absent severity: log only
	rec       BreakerRecorder
}

// BreakerRecorder keeps breaker transitions where every instance's Health
// sees them. BreakerChanged is called under the breaker's lock and must not
// block; WriteTransitions runs at the end of the Post that drove the breaker.
type BreakerRecorder interface {
	BreakerChanged(name string, openFor time.Duration, to string)
	WriteTransitions(ctx context.Context)
}

// route is one webhook URL with the state that must be shared by every
// alert posted to it. Severities that fall back to the same URL share it.
type route struct {
	name    string // the severities using it, e.g. "warning+info"; never the URL
	url     string
	limiter *rate.Limiter
	breaker *gobreaker.CircuitBreaker[struct{}]

	mu           sync.Mutex
	blockedUntil time.Time // from Slack's Retry-After, for every sender
}

// Option changes a Notifier default.
type Option func(*Notifier)

// WithRetryBase sets the first backoff delay.
func WithRetryBase(d time.Duration) Option { return func(n *Notifier) { n.retryBase = d } }

// WithBreaker sets how many consecutive failures open a webhook's breaker and
// how long it stays open before one trial request is let through.
func WithBreaker(failures int, openFor time.Duration) Option {
	return func(n *Notifier) { n.failures, n.openFor = uint32(max(failures, 1)), openFor }
}

// WithTransport sends every post through rt (a test injects faults at
// the HTTP boundary).
func WithTransport(rt http.RoundTripper) Option { return func(n *Notifier) { n.client.Transport = rt } }

// WithRecorder records every breaker transition with r.
func WithRecorder(r BreakerRecorder) Option { return func(n *Notifier) { n.rec = r } }

// NewNotifier builds the routes of cfg: each severity's URL, or
// cfg.WebhookURL when that one is unset; with no URL at all alerts are only
// logged.
func NewNotifier(cfg config.Alerts, log *slog.Logger, m *metrics.Registry, opts ...Option) *Notifier {
	cfg = withDefaults(cfg)
	n := &Notifier{
		cfg: cfg, log: log, m: m,
		client:    &http.Client{Timeout: cfg.RequestTimeout},
		retryBase: DefaultRetryBase,
		failures:  DefaultBreakerFailures,
		openFor:   DefaultBreakerOpenFor,
		routes:    map[Severity]*route{},
	}
	for _, o := range opts {
		o(n)
	}
	if n.retryBase <= 0 {
		n.retryBase = DefaultRetryBase
	}
	byURL := map[string]*route{}
	for _, s := range []Severity{Error, Warning, Info} {
		url := map[Severity]string{Error: cfg.WebhookURLError, Warning: cfg.WebhookURLWarning, Info: cfg.WebhookURL}[s]
		if url == "" {
			url = cfg.WebhookURL
		}
		if url == "" {
			continue
		}
		r, ok := byURL[url]
		if !ok {
			r = &route{url: url, limiter: rate.NewLimiter(rate.Inf, 1)}
			if cfg.MinInterval > 0 {
				r.limiter = rate.NewLimiter(rate.Every(cfg.MinInterval), 1)
			}
			byURL[url] = r
		}
		if r.name != "" {
			r.name += "+"
		}
		r.name += s.String()
		n.routes[s] = r
	}
	for _, r := range byURL {
		r.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        r.name,
			MaxRequests: 1,
			Timeout:     n.openFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n.failures },
			IsExcluded:  notSlacksFault,
			OnStateChange: func(name string, from, to gobreaker.State) {
				level := slog.LevelInfo
				if to == gobreaker.StateOpen {
					level = slog.LevelError
				}
				n.m.Inc("alerts.breaker_to_" + strings.ReplaceAll(to.String(), "-", "_"))
				// The breaker calls this without a context; the line still
				// carries the webhook's route name.
				n.log.Log(context.Background(), level, "alert: slack circuit breaker changed state",
					"breaker", name, "from", from.String(), "to", to.String())
				if n.rec != nil {
					n.rec.BreakerChanged(BreakerName(name), n.openFor, to.String())
				}
			},
		})
	}
	return n
}

// BreakerName is the name a route's breaker is recorded under: "slack-"
// and the severities using the route ("slack-warning+info").
func BreakerName(route string) string { return "slack-" + route }

// BreakerNames lists the recorded names of every configured route's breaker.
func (n *Notifier) BreakerNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range []Severity{Error, Warning, Info} {
		if r := n.routes[s]; r != nil && !seen[r.name] {
			seen[r.name] = true
			out = append(out, BreakerName(r.name))
		}
	}
	return out
}

// Breakers reports each configured route's breaker state ("closed", "open",
// "half-open") for the Health endpoint, keyed "error", "warning", "info";
// routes sharing a URL share a state. Routes with no URL are absent, so an
// empty map means alerts are only logged.
func (n *Notifier) Breakers() map[string]string {
	out := map[string]string{}
	for s, r := range n.routes {
		out[s.String()] = r.breaker.State().String()
	}
	return out
}

// Refuses reports whether a would be refused without asking Slack, because
// its route's breaker is open.
func (n *Notifier) Refuses(a Alert) bool {
	_, r := n.route(a)
	return r != nil && r.breaker.State() == gobreaker.StateOpen
}

func (n *Notifier) route(a Alert) (Severity, *route) {
	s := a.Severity
	if a.Resolved {
		// The contract routes "resolved" follow-ups with the warnings.
		s = Warning
	}
	return s, n.routes[s]
}

// Post delivers a, retrying transient failures until the earlier of ctx's
// deadline and cfg.MaxElapsed. It returns nil once Slack accepted the
// message or, when no webhook is configured, once it is logged.
func (n *Notifier) Post(ctx context.Context, a Alert) error {
	if n.rec != nil {
		defer n.rec.WriteTransitions(ctx)
	}
	sev, r := n.route(a)
	attrs := []any{"alert_key", a.Key, "alert_severity", sev.String(), "resolved", a.Resolved}
	if r == nil {
		n.m.Inc("alerts.logged_only")
		n.log.Log(ctx, logLevel(a), "alert (no Slack webhook configured): "+a.Title, append(attrs,
			"game_date", a.GameDate, "phase", a.Phase, "reason", a.Reason,
			"completed", a.Completed, "expected", a.Expected, "missing", a.Missing,
			"elapsed", FormatElapsed(a.Elapsed), "detail", a.Detail)...)
		return nil
	}
	attrs = append(attrs, "route", r.name)
	if r.breaker.State() == gobreaker.StateOpen {
		n.m.Inc("alerts.breaker_open")
		n.m.Inc("alerts.failed")
		n.log.WarnContext(ctx, "alert not sent: slack circuit breaker open", attrs...)
		return fmt.Errorf("%w: %w (%s)", ErrNotAsked, ErrBreakerOpen, r.name)
	}

	deadline := time.Now().Add(n.cfg.MaxElapsed)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	msg := Message(a)
	exp := retry.WithCappedDuration(maxBackoff, retry.WithJitterPercent(jitterPercent, retry.NewExponential(n.retryBase)))
	var (
		attempt    int
		asked      bool
		retryAfter time.Duration
		lastErr    error
	)
	backoff := retry.BackoffFunc(func() (time.Duration, bool) {
		d, stop := exp.Next()
		if stop {
			return 0, true
		}
		d = max(d, retryAfter)
		// Waiting past the budget only to be cut off helps nobody; the
		// outbox will try again later.
		if time.Now().Add(d).After(deadline) {
			return 0, true
		}
		return d, false
	})
	err := retry.Do(ctx, backoff, func(ctx context.Context) error {
		attempt++
		retryAfter = 0
		if attempt > 1 {
			n.m.Inc("alerts.retry")
		}
		n.m.Inc("alerts.attempt")
		start := time.Now()
		err := n.attempt(ctx, r, msg, deadline, &asked)
		lastErr = err
		if err == nil {
			n.log.InfoContext(ctx, "alert sent to slack", append(attrs, "attempt", attempt, "took", time.Since(start).String())...)
			return nil
		}
		retryable := true
		var rl *slack.RateLimitedError
		var sc slack.StatusCodeError
		switch {
		case errors.Is(err, ErrBreakerOpen), errors.Is(err, ErrMaybePosted):
			retryable = false
		case errors.As(err, &rl):
			n.m.Inc("alerts.rate_limited")
			retryAfter = rl.RetryAfter
			r.block(time.Now().Add(rl.RetryAfter))
		case errors.As(err, &sc):
			if sc.Code == http.StatusTooManyRequests {
				n.m.Inc("alerts.rate_limited")
			}
			if !sc.Retryable() {
				retryable = false
				err = fmt.Errorf("%w: %w", ErrRejected, err)
				lastErr = err
			}
		}
		n.log.WarnContext(ctx, "alert attempt failed", append(attrs,
			"attempt", attempt, "error", err.Error(), "retryable", retryable, "retry_after", retryAfter.String())...)
		if retryable {
			return retry.RetryableError(err)
		}
		return err
	})
	if err == nil {
		n.m.Inc("alerts.sent")
		return nil
	}
	if lastErr != nil && !errors.Is(err, lastErr) {
		err = fmt.Errorf("%w (after %w)", lastErr, err)
	}
	if errors.Is(err, ErrBreakerOpen) {
		n.m.Inc("alerts.breaker_open")
	}
	n.m.Inc("alerts.failed")
	n.log.ErrorContext(ctx, "alert not delivered to slack", append(attrs, "attempts", attempt, "error", err.Error())...)
	if !asked && errors.Is(err, ErrBreakerOpen) {
		return fmt.Errorf("alert %q: %w: %w", a.Key, ErrNotAsked, err)
	}
	return fmt.Errorf("alert %q: %w", a.Key, err)
}

// attempt is one POST, paced by the route's limiter and any Retry-After
// Slack gave, and guarded by its breaker.
// asked is set once a request has gone to Slack.
func (n *Notifier) attempt(ctx context.Context, r *route, msg *slack.WebhookMessage, deadline time.Time, asked *bool) error {
	if until := r.blocked(); !until.IsZero() {
		if until.After(deadline) {
			return &slack.RateLimitedError{RetryAfter: time.Until(until).Round(time.Second)}
		}
		if err := sleep(ctx, time.Until(until)); err != nil {
			return err
		}
	}
	if err := r.limiter.Wait(ctx); err != nil {
		return err
	}
	_, err := r.breaker.Execute(func() (struct{}, error) {
		*asked = true
		var wrote atomic.Bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) }})
		err := r.redact(slack.PostWebhookCustomHTTPContext(tctx, r.url, n.client, msg))
		if err != nil && ctx.Err() != nil {
			err = budgetError{err}
		}
		if err != nil && wrote.Load() && !answered(err) {
			// Sent, and no answer came (a timeout, a reset, EOF): Slack
			// may have posted it.
			err = fmt.Errorf("%w: %w", ErrMaybePosted, err)
		}
		return struct{}{}, err
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w (%s): %w", ErrBreakerOpen, r.name, err)
	}
	return err
}

// answered reports whether err is Slack's answer (a status it sent), as
// opposed to no answer at all.
func answered(err error) bool {
	var rl *slack.RateLimitedError
	var sc slack.StatusCodeError
	var ne *strconv.NumError // a 429 whose Retry-After slack-go could not parse
	return errors.As(err, &rl) || errors.As(err, &sc) || errors.As(err, &ne)
}

// notSlacksFault keeps out of the breaker's count what says nothing about
// the webhook being down: Slack asking us to slow down, a message it
// refused, and our own budget running out.
func notSlacksFault(err error) bool {
	var rl *slack.RateLimitedError
	var sc slack.StatusCodeError
	var ne *strconv.NumError // a 429 whose Retry-After slack-go could not parse
	switch {
	case errors.As(err, &rl), errors.As(err, &ne):
		return true
	case errors.As(err, &sc):
		return sc.Code < 500
	}
	return errors.As(err, new(budgetError))
}

// budgetError marks a request cut short by the caller's context rather than
// by Slack (whose hanging is caught by the client's Timeout, and counts).
type budgetError struct{ err error }

func (e budgetError) Error() string { return e.err.Error() }
func (e budgetError) Unwrap() error { return e.err }

// redact keeps the webhook URL, a secret, out of err: every error that
// leaves this package, and every log line it writes, comes through here.
// Go's HTTP client puts the full URL into its errors (`Post "https://…":
// context deadline exceeded`); the route's name takes its place. The URL
// inside a *url.Error is overwritten too, so that a caller unwrapping the
// chain finds no secret either; the chain itself is kept for errors.As.
func (r *route) redact(err error) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = r.label()
	}
	if !strings.Contains(err.Error(), r.secret()) {
		return err
	}
	return redacted{err: err, r: r}
}

// label names the route in place of its URL.
func (r *route) label() string { return "slack-webhook:" + r.name }

// secret is the part of the URL that must not be shown: everything from
// the path on (Slack's is /services/T…/B…/token), or the whole URL when it
// has no path.
func (r *route) secret() string {
	u, err := url.Parse(r.url)
	if err != nil || u.Path == "" || u.Path == "/" {
		return r.url
	}
	return u.EscapedPath()
}

// redacted is an error whose text had the webhook URL in it.
type redacted struct {
	err error
	r   *route
}

func (e redacted) Error() string {
	text := strings.ReplaceAll(e.err.Error(), e.r.url, e.r.label())
	return strings.ReplaceAll(text, e.r.secret(), "/…")
}

func (e redacted) Unwrap() error { return e.err }

func (r *route) block(until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until.After(r.blockedUntil) {
		r.blockedUntil = until
	}
}

func (r *route) blocked() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Now().After(r.blockedUntil) {
		return time.Time{}
	}
	return r.blockedUntil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// withDefaults fills durations a hand-built configuration (a test's, say)
// left zero with the shipped defaults: a zero MaxElapsed would make every
// Post give up before its first attempt.
func withDefaults(cfg config.Alerts) config.Alerts {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.SendBudget, 8 * time.Second}, {&cfg.MaxElapsed, 30 * time.Second}, {&cfg.RequestTimeout, 5 * time.Second},
		{&cfg.KeepFor, 24 * time.Hour}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	return cfg
}

func logLevel(a Alert) slog.Level {
	switch {
	case a.Resolved:
		return slog.LevelInfo
	case a.Severity == Error:
		return slog.LevelError
	case a.Severity == Warning:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
