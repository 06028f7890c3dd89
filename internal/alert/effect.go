package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/phasegate/phasegate/internal/effect"
)

// Raise is the effect that posts a, once for the deciding document's
// incarnation inc: its id is fixed by a.Key and inc.
func Raise(a Alert, inc string) effect.Effect {
	a.Resolved = false
	return slackEffect(a, "alert:"+a.Key, inc, "")
}

// Resolve is the effect that posts a's "resolved" follow-up, once, after
// the alert Raise(a, inc) was delivered; it is skipped when that one never
// was.
func Resolve(a Alert, inc string) effect.Effect {
	a.Resolved = true
	return slackEffect(a, "resolve:"+a.Key, inc, effect.ID("alert:"+a.Key, inc))
}

func slackEffect(a Alert, key, inc, after string) effect.Effect {
	b, _ := json.Marshal(a) // plain fields: cannot fail
	return effect.Effect{Kind: effect.Slack, Key: key, Incarnation: inc, Destination: RouteOf(a).String(),
		Data: b, After: after, GameDate: a.GameDate, Subject: a.Phase}
}

// RouteOf is the severity whose webhook a goes to: resolved follow-ups go
// with the warnings (CONTRACT §6).
func RouteOf(a Alert) Severity {
	if a.Resolved {
		return Warning
	}
	return a.Severity
}

// Sink performs Slack effects through a Notifier.
type Sink struct{ N *Notifier }

// Perform posts r's alert once. Slack refusing it (a 4xx) is a refusal;
// a post that timed out may have been delivered (ambiguous); an open
// breaker never asked Slack.
func (s Sink) Perform(ctx context.Context, r *effect.Record) effect.Result {
	var a Alert
	if err := json.Unmarshal(r.Data, &a); err != nil {
		return effect.Result{Outcome: effect.Refused, Err: fmt.Errorf("alert: decode %s: %w", r.Key, err)}
	}
	err := s.N.Post(ctx, a)
	switch {
	case err == nil:
		// The line the log-based metric phasegate_alerts counts.
		msg, event := "alert raised", "raised"
		if a.Resolved {
			msg, event = "alert resolved", "resolved"
		}
		s.N.log.InfoContext(ctx, msg, "alert_event", event, "alert_key", a.Key, "alert_severity", RouteOf(a).String(),
			"title", a.Title, "game_date", a.GameDate, "phase", a.Phase, "reason", a.Reason)
		return effect.Result{Outcome: effect.Performed, Ref: "posted"}
	case errors.Is(err, ErrRejected):
		return effect.Result{Outcome: effect.Refused, Err: err}
	case errors.Is(err, ErrNotAsked):
		return effect.Result{Outcome: effect.NotAsked, Err: err}
	}
	return effect.Result{Outcome: effect.Unavailable, Err: err,
		Ambiguous: errors.Is(err, ErrMaybePosted) || errors.Is(err, context.DeadlineExceeded)}
}

// Lanes are the three routes.
func (Sink) Lanes() []string { return []string{Error.String(), Warning.String(), Info.String()} }

// Alarms are the alerts the effect log raises about its own effects.
type Alarms struct{}

var _ effect.Alarms = Alarms{}

// Failing is the error alert of a message that keeps failing to publish.
func (Alarms) Failing(r *effect.Record, failures int64) effect.Effect {
	a := Alert{Key: r.Key + ":publish_failing", Severity: Error, Phase: r.Subject, GameDate: r.GameDate,
		Title:  fmt.Sprintf("%s keeps failing to publish to %s", r.Key, r.Destination),
		Reason: "publish_failing",
		Detail: fmt.Sprintf("%d tries in a row failed; last error: %s. It stays owed and goes out once Pub/Sub takes it: check the topic exists and the function's identity may publish to it.", failures, r.LastError),
	}
	return slackEffect(a, effect.AlarmPrefix+"failing:"+r.Key, r.ID, "")
}

// Recovered follows Failing once the message went out.
func (Alarms) Recovered(r *effect.Record, failing effect.Effect) effect.Effect {
	a := Alert{Key: r.Key + ":publish_failing", Resolved: true, Phase: r.Subject, GameDate: r.GameDate,
		Title: fmt.Sprintf("%s published after %d failed tries", r.Key, r.Failures)}
	return slackEffect(a, effect.AlarmPrefix+"recovered:"+r.Key, r.ID, failing.ID())
}

// GaveUp tells, on another route than the failed effect's, that its
// destination refused it for good.
func (Alarms) GaveUp(r *effect.Record) effect.Effect {
	sev := Error
	if r.Kind == effect.Slack && r.Destination == Error.String() {
		sev = Warning
	}
	what := map[effect.Kind]string{effect.Slack: "Slack refused an alert", effect.Row: "BigQuery refused a history row",
		effect.Publish: "Pub/Sub refused a message"}[r.Kind]
	a := Alert{Key: r.Key + ":gave_up", Severity: sev, Phase: r.Subject, GameDate: r.GameDate, Reason: "effect_failed",
		Title:  fmt.Sprintf("%s: %s is given up", what, r.Key),
		Detail: fmt.Sprintf("refused since %s; last error: %s. `phasegate effects list --state failed` shows it; `phasegate effects retry %s` tries again.", r.RefusedSince.Format(time.RFC3339), r.LastError, r.ID),
	}
	// One alarm per refusal: a retried effect refused again says so again.
	episode := strconv.FormatInt(r.RefusedSince.Unix(), 10)
	return slackEffect(a, effect.AlarmPrefix+"gave_up:"+r.Key+":"+episode, r.ID, "")
}
