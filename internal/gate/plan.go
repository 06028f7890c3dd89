package gate

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/rules"
)

// plan computes, from the document as read, what this evaluation writes:
// the event's record, then any trigger claim. It is pure apart from the
// clock and the claim token, and it is re-run on every conflict.
func (g *Gate) plan(date gamedate.Date, st *docState, ev *event, dup bool, src Source, res *datacheck.Result) *plan {
	now := g.Clock.Now()
	pl := &plan{}
	completed := st.completed
	first := st.first
	if ev != nil {
		completed, first = g.record(pl, st, ev, dup, now)
	}
	// The claim sees the state including this event's record.
	view := *st
	view.completed, view.first = completed, first
	pl.completed = len(completed)
	g.claim(pl, date, &view, ev, src, now, res)
	if pl.claimed && src != SourceEvent {
		// An action nobody's message asked for is kept on the gate for operators.
		pl.set(fHistory, append(stringList(st.data[fHistory]),
			now.Format(time.RFC3339)+" "+string(src)+" claimed "+pl.claimID))
	}
	if len(pl.updates) > 0 {
		pl.set(fUpdatedAt, now)
		if exp, ok := g.Names.Expires(now); ok {
			pl.set(config.ExpiresField, exp)
		}
		if !st.exists {
			pl.set(fTriggered, false) // the sweep's query filters on these
			pl.set(fOpen, true)
		}
	}
	return pl
}

// record adds the event's fields to pl and returns the completions after it.
func (g *Gate) record(pl *plan, st *docState, ev *event, dup bool, now time.Time) (map[string]bool, time.Time) {
	m, name := ev.msg, ev.name
	completed, first := st.completed, st.first
	at := func() map[string]any {
		return map[string]any{"status": m.Status, "at": now, "execution_id": m.ExecutionID}
	}
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
		pl.outcome.Recorded, pl.newUnexp = "unexpected", true
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
		pl.outcome.Recorded, pl.newFail = "failure_recorded", true
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
		_, pl.healedFailure = st.sub(fFailed)[name]
		if st.generation > 0 {
			pl.set(fLate, append(slices.Clone(st.late), name))
			pl.outcome.Recorded = "late"
		}
	}
	if pl.outcome.Recorded == "duplicate" {
		owedAlerts(pl, st, ev)
	}
	return completed, first
}

// owedAlerts asks again for the alert that recording ev called for. The
// first attempt may have died after its commit and before its alert, and
// its redelivery is a duplicate; the alert service sends a key at most
// once, so asking again never repeats a message.
func owedAlerts(pl *plan, st *docState, ev *event) {
	m, name := ev.msg, ev.name
	failure, failed := st.sub(fFailed)[name].(map[string]any)
	switch {
	case !ev.expected:
		_, pl.newUnexp = st.sub(fUnexpected)[name]
	case !m.Completed():
		pl.newFail = failed && !st.completed[name] &&
			failure["execution_id"] == m.ExecutionID && failure["status"] == m.Status
	case failed && st.completed[name]:
		rec, _ := st.data[name].(map[string]any)
		pl.healedFailure = rec["execution_id"] == m.ExecutionID
	}
}

// claim adds a trigger claim to pl when one is due and nobody holds it:
// resuming a released or expired claim (same message, same trigger_id),
// the first trigger when the rules fire, or a late_arrival generation when
// the phase asks for one and the last trigger was partial.
func (g *Gate) claim(pl *plan, date gamedate.Date, st *docState, ev *event, src Source, now time.Time, res *datacheck.Result) {
	d := rules.Decide(g.phase, date, st.rulesState(), now)
	pl.outcome.Missing, pl.outcome.Waiting = d.Missing, !d.Fire && st.generation == 0
	switch {
	case st.liveClaim(now):
		return
	case st.resumable(now):
		pl.token = newToken()
		pl.set(fState, stateClaimed)
		pl.set(fClaimExpires, now.Add(g.Gate.ClaimLease))
		pl.set(fClaimToken, pl.token)
		pl.set(fClaimedBy, string(src))
		pl.claimed, pl.claimID = true, st.triggerID
		return
	case st.generation == 0 && d.Fire:
	case st.generation > 0 && st.state == statePublished && g.phase.LateArrival && st.partial && st.allComplete(g.phase):
		d.Reason, d.IsPartial = rules.ReasonLateArrival, false
	case src == SourceManual && st.state != stateClaimed:
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
	gen := st.generation + 1
	corr := st.corrID
	if ev != nil {
		corr = ev.msg.CorrelationID
	}
	msg := g.message(date, d, gen, corr, src, now, v)
	payload, _ := json.Marshal(msg) // plain fields: cannot fail
	pl.token = newToken()
	pl.set(fState, stateClaimed)
	pl.set(fGeneration, gen)
	pl.set(fPublishFailures, 0)
	pl.set(fTriggerID, msg.TriggerID)
	pl.set(fPayload, string(payload))
	pl.set(fPartial, d.IsPartial)
	pl.set(fReason, d.Reason)
	pl.set(fMode, d.Mode)
	pl.set(fMissing, nonNil(d.Missing))
	pl.set(fClaimExpires, now.Add(g.Gate.ClaimLease))
	pl.set(fClaimToken, pl.token)
	pl.set(fClaimedBy, string(src))
	pl.set(fOpen, true)
	if d.IsPartial {
		pl.set(fAlertKey, g.phase.Name+":"+date.String()+":"+d.Reason)
		pl.set(fAlertResolved, false)
	}
	pl.claimed, pl.claimID = true, msg.TriggerID
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
