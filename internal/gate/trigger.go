package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"cloud.google.com/go/firestore"
	"github.com/sethvargo/go-retry"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// publishAndConfirm publishes the claimed trigger and records it. On a
// failed publish the claim is released at once, so the redelivery this
// error asks for can claim and publish again immediately.
func (g *Gate) publishAndConfirm(ctx context.Context, date gamedate.Date, ref *firestore.DocumentRef, st *docState, out Outcome) (Outcome, error) {
	attrs := map[string]string{"trigger_id": st.triggerID, "game_date": date.String(), "phase": g.phase.Name}
	pctx, cancel := context.WithTimeout(ctx, g.Gate.PublishTimeout)
	id, err := g.Publisher.Publish(pctx, g.phase.OutputTopic, []byte(st.payload), attrs)
	cancel()
	if err != nil {
		g.Metrics.Inc(g.phase.Name + ".publish_failed")
		failures, rerr := g.release(context.WithoutCancel(ctx), ref, st.token)
		if rerr != nil {
			g.Log.ErrorContext(ctx, "releasing the claim failed; it expires with its lease", "error", rerr.Error())
		}
		g.Log.ErrorContext(ctx, "trigger not published; claim released for the redelivery", "trigger_id", st.triggerID,
			"publish_failures", failures, "error", err.Error())
		if failures >= int64(g.Gate.PublishFailuresAlert) {
			// Raised again on every later failure until recorded; the
			// service sends one per key.
			if aerr := g.Alerts.Raise(ctx, g.publishFailingAlert(date, st, failures, err)); aerr != nil {
				g.Log.ErrorContext(ctx, "publish-failure alert not recorded; the next failure raises it", "error", aerr.Error())
			}
		}
		return out, errs.E(errs.Transient, "publish_failed", err)
	}
	if err := g.fault(StepAfterPublish); err != nil {
		return out, err
	}
	var msg Message
	_ = json.Unmarshal([]byte(st.payload), &msg) // we wrote it
	if msg.IsPartial {
		if err := g.Alerts.Raise(ctx, g.partialAlert(date, st, msg)); err != nil {
			// As if this instance died here: the claim stays unconfirmed, and
			// whoever finishes it once the lease ends publishes the same
			// trigger_id again and raises the alert.
			return out, errs.E(errs.Transient, "alert_not_recorded", err)
		}
	}
	if err := g.confirm(context.WithoutCancel(ctx), date, ref, st, msg, id); err != nil {
		// Published but unconfirmed: the redelivery or the sweep re-publishes
		// the same trigger_id once the claim expires.
		return out, errs.E(errs.Transient, "confirm_failed", err)
	}
	if st.publishFailures >= int64(g.Gate.PublishFailuresAlert) {
		// The follow-up is a courtesy: the trigger is out, and an error here
		// must not make the event republish it.
		if err := g.Alerts.Resolve(ctx, alert.Alert{Key: publishFailingKey(st.triggerID), Phase: g.phase.Name,
			GameDate: date.String(), Title: fmt.Sprintf("trigger %s published after %d failures", st.triggerID, st.publishFailures)}); err != nil {
			g.Log.WarnContext(ctx, "publish-failure alert's follow-up not recorded", "error", err.Error())
		}
	}
	g.Metrics.Inc(g.phase.Name + ".triggered")
	g.Log.InfoContext(ctx, "next phase triggered", "trigger_id", st.triggerID, "trigger_reason", msg.TriggerReason,
		"is_partial", msg.IsPartial, "missing_processors", msg.MissingProcessors, "pubsub_message_id", id, "mode", msg.Mode)
	out.TriggerID, out.Reason, out.Missing = st.triggerID, msg.TriggerReason, msg.MissingProcessors
	return out, nil
}

// publishFailingKey is the key of the alert of a trigger that keeps failing
// to publish: one per trigger_id.
func publishFailingKey(triggerID string) string { return triggerID + ":publish_failing" }

func (g *Gate) publishFailingAlert(date gamedate.Date, st *docState, failures int64, err error) alert.Alert {
	return alert.Alert{
		Key: publishFailingKey(st.triggerID), Severity: alert.Error,
		Title: fmt.Sprintf("%s for %s: trigger %s keeps failing to publish", g.phase.Name, date, st.triggerID),
		Phase: g.phase.Name, GameDate: date.String(), Reason: "publish_failing",
		Elapsed: g.Clock.Now().Sub(st.first),
		Detail:  fmt.Sprintf("%d failed publishes to %s; last error: %v. Check the topic exists and the function's identity may publish to it.", failures, g.phase.OutputTopic, err),
	}
}

func (g *Gate) partialAlert(date gamedate.Date, st *docState, msg Message) alert.Alert {
	return alert.Alert{
		Key: st.alertKey, Severity: alert.Error,
		Title: fmt.Sprintf("%s went on without data (%s)", g.phase.Name, msg.TriggerReason),
		Phase: g.phase.Name, GameDate: date.String(), Reason: msg.TriggerReason,
		Completed: len(msg.CompletedProcessors), Expected: len(msg.ExpectedProcessors),
		Missing: msg.MissingProcessors, Elapsed: g.Clock.Now().Sub(st.first),
		Detail: "trigger " + st.triggerID + " published with the data at hand",
	}
}

// confirm marks the generation published. It needs no claim of its own: a
// slower instance whose claim was taken over confirms the same generation.
// The trigger's history row is recorded as owed in the same commit, so it
// exists if and only if the trigger is confirmed; it is inserted after.
func (g *Gate) confirm(ctx context.Context, date gamedate.Date, ref *firestore.DocumentRef, claimed *docState, msg Message, msgID string) error {
	now := g.Clock.Now()
	owed := false
	err := g.update(ctx, ref, claimed, func(st *docState) ([]firestore.Update, *firestore.DocumentRef, map[string]any) {
		if st.generation != claimed.generation || st.state == statePublished {
			return nil, nil, nil // already confirmed
		}
		ups := []firestore.Update{
			{Path: fState, Value: statePublished},
			{Path: fTriggered, Value: true},
			{Path: fMessageIDs, Value: append(st.messageIDs, msgID)},
			{Path: fOpen, Value: false},
			{Path: fClaimExpires, Value: firestore.Delete},
			{Path: fClaimToken, Value: firestore.Delete},
			{Path: fUpdatedAt, Value: now},
		}
		if !st.triggered {
			ups = append(ups, firestore.Update{Path: fTriggeredAt, Value: now})
		}
		if g.History == nil {
			return ups, nil, nil
		}
		owed = true
		hist, row := g.History.Owe(g.triggerRow(date, st, msg, now))
		return ups, hist, row
	})
	if err == nil && owed {
		g.History.Send(ctx, msg.TriggerID)
	}
	return err
}

// release gives up this attempt's claim after a failed publish and counts
// the failure; it returns the trigger's failures so far.
func (g *Gate) release(ctx context.Context, ref *firestore.DocumentRef, token string) (int64, error) {
	var failures int64
	err := g.update(ctx, ref, nil, func(st *docState) ([]firestore.Update, *firestore.DocumentRef, map[string]any) {
		failures = st.publishFailures
		if st.state != stateClaimed || st.token != token {
			return nil, nil, nil // taken over or finished by someone else
		}
		failures++
		return []firestore.Update{
			{Path: fState, Value: stateReleased},
			{Path: fClaimExpires, Value: firestore.Delete},
			{Path: fClaimToken, Value: firestore.Delete},
			{Path: fPublishFailures, Value: failures},
			{Path: fUpdatedAt, Value: g.Clock.Now()},
		}, nil, nil
	})
	return failures, err
}

// update applies f's updates with the same optimistic loop as recording,
// together with the document f may ask to create. known, when set, is a
// state believed current, which saves the first read.
func (g *Gate) update(ctx context.Context, ref *firestore.DocumentRef, known *docState,
	f func(*docState) ([]firestore.Update, *firestore.DocumentRef, map[string]any)) error {
	return retry.Do(ctx, g.backoff(), func(ctx context.Context) error {
		st := known
		known = nil
		if st == nil || st.updateTime.IsZero() {
			snap, err := ref.Get(ctx)
			if err != nil {
				return fmt.Errorf("read gate %s: %w", ref.Path, err)
			}
			st = decodeState(g.phase, snap)
		}
		ups, other, doc := f(st)
		if len(ups) == 0 {
			return nil
		}
		var err error
		if other == nil {
			_, err = ref.Update(ctx, ups, firestore.LastUpdateTime(st.updateTime))
		} else {
			// One atomic commit; a transaction without reads holds no locks.
			err = g.Firestore.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
				if err := tx.Update(ref, ups, firestore.LastUpdateTime(st.updateTime)); err != nil {
					return err
				}
				return tx.Create(other, doc)
			}, firestore.MaxAttempts(1))
		}
		if err = classifyWrite(err); errors.Is(err, errConflict) {
			return retry.RetryableError(err)
		}
		return err
	})
}

// afterRecord sends the alerts an event calls for. Slack's failures never
// fail the event (the alert service keeps the alert until Slack takes it);
// an alert it could not record does, and the redelivery, a duplicate, asks
// for it again (owedAlerts).
func (g *Gate) afterRecord(ctx context.Context, date gamedate.Date, ev *event, pl *plan) error {
	if ev == nil {
		return nil
	}
	switch {
	case pl.newFail:
		sev, what := alert.Warning, "the gate can still go on without it"
		if g.blockedWithout(date, ev.name) {
			sev, what = alert.Error, "the gate is blocked until it succeeds or an operator triggers"
		}
		return g.Alerts.Raise(ctx, alert.Alert{
			Key: g.phase.Name + ":" + date.String() + ":failed:" + ev.name, Severity: sev,
			Title: fmt.Sprintf("%s reported %s for %s", ev.name, ev.msg.Status, date), Phase: g.phase.Name,
			GameDate: date.String(), Reason: "processor_" + ev.msg.Status, Completed: pl.completed, Expected: len(g.phase.Expected),
			Missing: []string{ev.name}, Detail: what + "; execution " + ev.msg.ExecutionID,
		})
	case pl.newUnexp:
		return g.Alerts.Raise(ctx, alert.Alert{
			Key: g.phase.Name + ":" + date.String() + ":unexpected:" + ev.name, Severity: alert.Warning,
			Title: fmt.Sprintf("unexpected processor %q for %s", ev.msg.ProcessorName, g.phase.Name), Phase: g.phase.Name,
			GameDate: date.String(), Reason: "unexpected_processor",
			Detail: "recorded under _unexpected as " + ev.name + "; it does not count. Add it to the name map if it is a renamed processor.",
		})
	case pl.healedFailure:
		return g.Alerts.Resolve(ctx, alert.Alert{Key: g.phase.Name + ":" + date.String() + ":failed:" + ev.name,
			Phase: g.phase.Name, GameDate: date.String(), Title: ev.name + " completed after failing"})
	}
	return nil
}

// blockedWithout reports whether the gate can never go on while name is
// missing: no timed rule is enabled for date (a configured but disabled one,
// like phase 2's default deadline, does not count), and name is one the
// rules cannot do without (every expected processor, or for a mode-aware
// phase a critical or same-day-required one).
func (g *Gate) blockedWithout(date gamedate.Date, name string) bool {
	for _, r := range g.phase.Timed {
		if r.Enabled.Enabled(date.String()) {
			return false
		}
	}
	if g.phase.ModeAware {
		return slices.Contains(g.phase.Critical, name) || slices.Contains(g.phase.SameDayRequired, name)
	}
	return true
}

// resolveIfHealed sends the "resolved" follow-up once every processor a
// partial trigger went on without has arrived. Every later event retries
// it until _alert_resolved records it; a follow-up the alert service could
// not record fails the event, whose redelivery asks again.
func (g *Gate) resolveIfHealed(ctx context.Context, date gamedate.Date, ref *firestore.DocumentRef, st *docState) error {
	if st.alertKey == "" || st.resolved || !st.allComplete(g.phase) || st.state != statePublished {
		return nil
	}
	if err := g.Alerts.Resolve(ctx, alert.Alert{Key: st.alertKey, Phase: g.phase.Name, GameDate: date.String(),
		Title:     fmt.Sprintf("%s for %s: every processor has now completed", g.phase.Name, date),
		Completed: len(st.completed), Expected: len(g.phase.Expected), Elapsed: g.Clock.Now().Sub(st.first)}); err != nil {
		return err
	}
	_, err := ref.Update(ctx, []firestore.Update{{Path: fAlertResolved, Value: true}})
	if err != nil {
		g.Log.WarnContext(ctx, "recording the resolved alert failed; the next event retries", "error", err.Error())
	}
	return nil
}
