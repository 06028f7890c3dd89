package gate

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/history"
	"github.com/phasegate/phasegate/internal/rules"
)

// plan is the change one evaluation makes: the gate's fields, and what the
// decisions among them owe — the claimed trigger's message, alerts and
// their "resolved", history rows — committed together as effects.
type plan struct {
	updates []firestore.Update
	message *Message      // the claimed trigger's
	payload []byte        // its exact bytes (_trigger_payload)
	alerts  []alert.Alert // owed: raised, or resolved (Resolved set)
	rows    []history.Row
	effects []effect.Effect // what the above owe, built last
	outcome Outcome
	claimed bool
	// triggerEffect is the id of the claimed trigger's publish.
	triggerEffect string
	// generation > 0: the claim's, which the ledger advances to.
	generation int64
	// needLedger: the plan claims and must know the ledger first.
	needLedger bool
	// needCheck: the rules fired and the data check must run first.
	needCheck *checkNeed
	// incarnation of a document this plan creates.
	incarnation string
	completed   int // expected processors completed after this event
}

func (pl *plan) set(path string, v any) {
	pl.updates = append(pl.updates, firestore.Update{Path: path, Value: v})
}

func (pl *plan) raise(a alert.Alert) { pl.alerts = append(pl.alerts, a) }

func (pl *plan) resolve(a alert.Alert) {
	a.Resolved = true
	pl.alerts = append(pl.alerts, a)
}

// owes builds the effects of what pl decided, for the incarnation inc.
func (g *Gate) owes(pl *plan, date gamedate.Date, inc string) {
	if m := pl.message; m != nil {
		publish := effect.Effect{Kind: effect.Publish, Key: triggerKey(m.TriggerID), Incarnation: inc,
			Destination: g.phase.OutputTopic, Data: pl.payload, Owner: g.ownerPath(date),
			Attributes: map[string]string{"trigger_id": m.TriggerID, "game_date": date.String(), "phase": g.phase.Name},
			GameDate:   date.String(), Subject: g.phase.Name}
		pl.effects, pl.triggerEffect = append(pl.effects, publish), publish.ID()
	}
	for _, a := range pl.alerts {
		if a.Resolved {
			pl.effects = append(pl.effects, alert.Resolve(a, inc))
		} else {
			pl.effects = append(pl.effects, alert.Raise(a, inc))
		}
	}
	if g.HistoryTable != "" {
		for _, r := range pl.rows {
			pl.effects = append(pl.effects, history.Effect(r, g.HistoryTable, inc))
		}
	}
}

// plan computes, from the document as read, what this evaluation writes
// and owes: the event's record, any trigger claim, the alerts their
// transitions call for. It is pure apart from the clock and the tokens,
// and it is re-run on every conflict; an alert is owed only by the write
// that makes its cause true, so recording a decision again owes nothing
// again. led is the generation ledger, nil when not read yet.
func (g *Gate) plan(date gamedate.Date, st *docState, ev *event, dup bool, src Source, res *datacheck.Result, led *ledger) *plan {
	now := g.Clock.Now()
	pl := &plan{}
	inc := st.incarnation
	if !st.exists {
		inc = newToken()
		pl.incarnation = inc
	}
	completed := st.completed
	first := st.first
	if ev != nil {
		completed, first = g.record(pl, date, st, ev, dup, now)
	}
	// The claim sees the state including this event's record.
	view := *st
	view.completed, view.first = completed, first
	pl.completed = len(completed)
	g.claim(pl, date, &view, ev, src, now, res, led)
	if pl.needLedger {
		return pl
	}
	if len(st.openAlerts) > 0 && view.allComplete(g.phase) {
		// Every processor the partial triggers went on without has arrived.
		pl.set(fAlertResolved, true)
		pl.set(fAlertKeys, []string{})
		for _, key := range st.openAlerts {
			pl.resolve(alert.Alert{Key: key, Phase: g.phase.Name, GameDate: date.String(),
				Title:     fmt.Sprintf("%s for %s: every processor has now completed", g.phase.Name, date),
				Completed: len(completed), Expected: len(g.phase.Expected), Elapsed: now.Sub(first)})
		}
	}
	if pl.claimed && src != SourceEvent {
		// An action nobody's message asked for is kept on the gate for operators.
		pl.set(fHistory, append(stringList(st.data[fHistory]),
			now.Format(time.RFC3339)+" "+string(src)+" claimed "+triggerIDOf(pl)))
	}
	if len(pl.updates) > 0 {
		pl.set(fUpdatedAt, now)
		if exp, ok := g.Names.Expires(now); ok {
			pl.set(config.ExpiresField, exp)
		}
		if !st.exists {
			pl.set(fTriggered, false) // the sweep's query filters on these
			pl.set(fOpen, true)
			pl.set(effect.FieldIncarnation, inc)
		}
	}
	g.owes(pl, date, inc)
	return pl
}

func triggerIDOf(pl *plan) string {
	for _, u := range pl.updates {
		if u.Path == fTriggerID {
			s, _ := u.Value.(string)
			return s
		}
	}
	return ""
}

// record adds the event's fields to pl, with the alert a first failure,
// a healed one or an unexpected name calls for, and returns the
// completions after it.
func (g *Gate) record(pl *plan, date gamedate.Date, st *docState, ev *event, dup bool, now time.Time) (map[string]bool, time.Time) {
	m, name := ev.msg, ev.name
	completed, first := st.completed, st.first
	at := func() map[string]any {
		return map[string]any{"status": m.Status, "at": now, "execution_id": m.ExecutionID}
	}
	failedKey := g.phase.Name + ":" + date.String() + ":failed:" + name
	_, failedBefore := st.sub(fFailed)[name]
	switch {
	case dup:
		pl.outcome.Recorded = "duplicate"
	case !ev.expected:
		if _, seen := st.sub(fUnexpected)[name]; seen {
			pl.outcome.Recorded = "duplicate"
			break
		}
		rec := at()
		rec["processor_name"] = m.ProcessorName
		pl.set(fUnexpected+"."+name, rec)
		pl.outcome.Recorded = "unexpected"
		pl.raise(alert.Alert{
			Key: g.phase.Name + ":" + date.String() + ":unexpected:" + name, Severity: alert.Warning,
			Title: fmt.Sprintf("unexpected processor %q for %s", m.ProcessorName, g.phase.Name), Phase: g.phase.Name,
			GameDate: date.String(), Reason: "unexpected_processor",
			Detail: "recorded under _unexpected as " + name + "; it does not count. Add it to the name map if it is a renamed processor.",
		})
	case !m.Completed():
		if completed[name] {
			pl.outcome.Recorded = "failure_ignored" // a failure after a success changes nothing
			break
		}
		if prev, ok := st.sub(fFailed)[name].(map[string]any); ok &&
			prev["execution_id"] == m.ExecutionID && prev["status"] == m.Status {
			pl.outcome.Recorded = "duplicate"
			break
		}
		pl.set(fFailed+"."+name, at())
		pl.outcome.Recorded = "failure_recorded"
		if failedBefore {
			break // its alert is out already; one per processor and date
		}
		sev, what := alert.Warning, "the gate can still go on without it"
		if g.blockedWithout(date, name) {
			sev, what = alert.Error, "the gate is blocked until it succeeds or an operator triggers"
		}
		pl.raise(alert.Alert{
			Key: failedKey, Severity: sev,
			Title: fmt.Sprintf("%s reported %s for %s", name, m.Status, date), Phase: g.phase.Name,
			GameDate: date.String(), Reason: "processor_" + m.Status, Completed: len(completed), Expected: len(g.phase.Expected),
			Missing: []string{name}, Detail: what + "; execution " + m.ExecutionID,
		})
	case completed[name]:
		pl.outcome.Recorded = "duplicate"
	default:
		rec := map[string]any{
			"completed_at": now, "correlation_id": m.CorrelationID, "status": m.Status,
			"execution_id": m.ExecutionID,
		}
		if m.RecordCount.Valid {
			rec["record_count"] = m.RecordCount.N
		}
		if g.phase.Number == 3 {
			rec["is_incremental"] = m.IsIncremental
			rec["entities_changed"] = nonNil(m.EntitiesChange)
		}
		pl.set(name, rec)
		completed = make(map[string]bool, len(st.completed)+1)
		for k := range st.completed {
			completed[k] = true
		}
		completed[name] = true
		pl.set(fCompletedCount, len(completed))
		if first.IsZero() {
			first = now
			pl.set(fFirstCompletion, now)
			pl.set(fCorrelation, m.CorrelationID)
		}
		pl.outcome.Recorded = "recorded"
		if failedBefore {
			pl.resolve(alert.Alert{Key: failedKey, Phase: g.phase.Name, GameDate: date.String(),
				Title: name + " completed after failing"})
		}
		if st.generation > 0 {
			pl.set(fLate, append(slices.Clone(st.late), name))
			pl.outcome.Recorded = "late"
		}
	}
	return completed, first
}

// claim adds a trigger claim to pl when one is due: the first trigger when
// the rules fire, a late_arrival generation when the phase asks for one and
// the last trigger was partial, or a manual one. A trigger claimed and not
// confirmed is finished by the effect log, never claimed again.
func (g *Gate) claim(pl *plan, date gamedate.Date, st *docState, ev *event, src Source, now time.Time,
	res *datacheck.Result, led *ledger) {
	d := rules.Decide(g.phase, date, st.rulesState(), now)
	pl.outcome.Missing, pl.outcome.Waiting = d.Missing, !d.Fire && st.generation == 0
	switch {
	case st.owesTrigger():
		return
	case st.generation == 0 && d.Fire:
	case st.generation > 0 && st.state == statePublished && g.phase.LateArrival && st.partial && st.allComplete(g.phase):
		d.Reason, d.IsPartial = rules.ReasonLateArrival, false
	case src == SourceManual:
		d.Reason = rules.ReasonManual
	default:
		return
	}
	v := checkVerdict{status: checkSkipLate}
	if d.Reason != rules.ReasonLateArrival {
		var ok bool
		if v, ok = g.checkFor(pl, date, st, d, src, res, now); !ok {
			pl.outcome.Waiting = false
			return
		}
	}
	if led == nil {
		pl.needLedger = true
		return
	}
	// A running-system document's trigger counts as the generation after
	// the ledger's: it had no trigger_id, and its successor must not reuse
	// one phasegate published before.
	base := st.generation
	if st.legacy {
		base = led.generation + 1
	}
	gen := max(base, led.generation) + 1
	corr := st.corrID
	if ev != nil {
		corr = ev.msg.CorrelationID
	}
	msg := g.message(date, d, gen, corr, src, now, v)
	payload, _ := json.Marshal(msg) // plain fields: cannot fail
	pl.set(fState, stateClaimed)
	pl.set(fGeneration, gen)
	pl.set(fTriggerID, msg.TriggerID)
	pl.set(fPayload, string(payload))
	pl.set(fPartial, d.IsPartial)
	pl.set(fReason, d.Reason)
	pl.set(fMode, d.Mode)
	pl.set(fMissing, nonNil(d.Missing))
	pl.set(fClaimExpires, now.Add(g.Gate.ClaimLease))
	pl.set(fClaimedBy, string(src))
	pl.set(fOpen, true)
	if st.exists {
		pl.set(fClaimToken, firestore.Delete)
	}
	pl.message, pl.payload = &msg, payload
	if key := g.phase.Name + ":" + date.String() + ":" + d.Reason; d.IsPartial && !slices.Contains(st.openAlerts, key) {
		// One alert per reason: a second manual trigger still without its
		// data is the same news.
		pl.set(fAlertKey, key)
		pl.set(fAlertResolved, false)
		pl.set(fAlertKeys, append(slices.Clone(st.openAlerts), key))
		pl.raise(g.partialAlert(key, date, st, msg, now))
	}
	pl.rows = append(pl.rows, g.triggerRow(date, st, msg, now))
	pl.claimed, pl.generation = true, gen
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
