package gate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/history"
	"github.com/phasegate/phasegate/internal/rules"
)

// DataChecker counts the upstream rows for a date before a trigger
// (CONTRACT §10). A BigQuery failure is a Result with Status error.
type DataChecker interface {
	Run(ctx context.Context, check *config.DataCheck, tables []config.CheckTable, date gamedate.Date) datacheck.Result
}

// History appends phase boundaries to the history table. Owe returns the
// outbox write the confirm commits with the trigger; Send inserts it; Append
// does both for rows that go with no commit of the gate's. Shadow mode
// leaves it nil: no rows.
type History interface {
	Owe(r history.Row) (*firestore.DocumentRef, map[string]any)
	Send(ctx context.Context, key string)
	Append(ctx context.Context, r history.Row)
}

// _data_check, the gate's record of its last check.
const (
	fDataCheck = "_data_check"
	// dcSince is when the check first failed in the current block: the
	// maximum wait counts from it.
	dcSince  = "blocked_since"
	dcGaveUp = "gave_up"
)

// What the trigger message says about the check (data_check).
const (
	checkPassed        = "passed"
	checkDegraded      = "degraded"        // passed, some non-critical table empty
	checkMonitor       = "monitor_missing" // a monitor-only check found tables empty or failed
	checkMaxWait       = "proceeded_after_max_wait"
	checkSkipManual    = "skipped_manual"
	checkSkipLate      = "skipped_late_arrival"
	checkOff           = "off"
	checkNotConfigured = "none"
)

// checkNeed asks run to evaluate a check before planning again.
type checkNeed struct {
	check  *config.DataCheck
	tables []config.CheckTable
}

// checkVerdict is what a trigger carries about the check.
type checkVerdict struct {
	status   string
	verified bool
	missing  []string
	counts   map[string]int64
}

// dataCheckAlerts are the alerts a plan's check calls for after its commit.
type dataCheckAlerts struct {
	result  *datacheck.Result
	blocked bool // raise the block (or monitor) alert
	gaveUp  bool // stay_blocked after the maximum wait
	proceed bool // proceed after the maximum wait
	resolve bool // the check passed after a block
	degrade bool // passed with some table empty
	monitor bool
	since   time.Time
}

// checkFor decides whether a trigger the rules fired may go: it returns the
// verdict the message carries and true, or false when the trigger waits
// (for a first evaluation, asked for through pl.needCheck; for a block).
func (g *Gate) checkFor(pl *plan, date gamedate.Date, st *docState, d rules.Decision, src Source,
	res *datacheck.Result, now time.Time) (checkVerdict, bool) {
	c := g.phase.DataCheck
	switch {
	case c == nil:
		return checkVerdict{status: checkNotConfigured}, true
	case g.Checks == nil || !g.BigQuery.DataChecks.Enabled(date.String()):
		return checkVerdict{status: checkOff}, true
	case src == SourceManual:
		return checkVerdict{status: checkSkipManual}, true
	}
	tables := c.Tables
	if d.Mode == rules.ModeSameDay || d.Mode == rules.ModeTomorrow {
		tables = c.TablesFor(rules.Required(g.phase, d.Mode))
	}
	if len(tables) == 0 {
		return checkVerdict{status: checkNotConfigured}, true
	}
	if res == nil {
		pl.needCheck = &checkNeed{check: c, tables: tables}
		return checkVerdict{}, false
	}
	prev := st.sub(fDataCheck)
	prevStatus, _ := prev["status"].(string)
	wasHeld := prevStatus == datacheck.Blocked || prevStatus == datacheck.Error
	rec := map[string]any{
		"check": c.Name, "action": c.Action, "status": res.Status, "counts": toAny(res.Counts),
		"missing": nonNil(res.Missing), "checked_at": res.CheckedAt, "tables": len(tables),
		"bytes_processed": res.BytesProcessed,
	}
	if res.Err != nil {
		rec["error"] = truncate(res.Err.Error(), 500)
	}
	v := checkVerdict{verified: res.Verified(), missing: nonNil(res.Missing), counts: res.Counts}
	a := &dataCheckAlerts{result: res}
	pl.dataAlerts = a
	pl.set(fDataCheck, rec)
	switch {
	case res.Status == datacheck.Passed:
		v.status = checkPassed
		a.resolve = wasHeld && c.Action == config.ActionBlock
		if len(res.Missing) > 0 {
			v.status, a.degrade = checkDegraded, true
		}
		return v, true
	case c.Action == config.ActionMonitor:
		v.status, a.monitor = checkMonitor, true
		return v, true
	}
	since := now
	if wasHeld {
		if t, ok := prev[dcSince].(time.Time); ok {
			since = t
		}
	}
	rec[dcSince], a.since = since, since
	pl.outcome.Blocked = res.Status
	if now.Sub(since) < c.MaxWait {
		a.blocked = true
		return v, false
	}
	if c.AfterMaxWait == config.AfterProceed {
		v.status, a.proceed = checkMaxWait, true
		return v, true
	}
	gaveUp, _ := prev[dcGaveUp].(bool)
	rec[dcGaveUp] = true
	a.gaveUp, a.blocked = !gaveUp, true
	return v, false
}

// checkAlerts raises what a committed check called for and appends the
// blocked row. The alert service sends each key at most once, so raising
// again on every evaluation of a blocked gate costs no message.
func (g *Gate) checkAlerts(ctx context.Context, date gamedate.Date, st *docState, a *dataCheckAlerts) error {
	if a == nil {
		return nil
	}
	c, r := g.phase.DataCheck, a.result
	key := g.phase.Name + ":" + date.String() + ":data_check"
	base := alert.Alert{Phase: g.phase.Name, GameDate: date.String(), Missing: r.Missing,
		Expected: len(r.Counts), Completed: len(r.Counts) - len(r.Missing), Detail: countsText(r)}
	if r.Status == datacheck.Error {
		base.Expected, base.Completed = 0, 0
		base.Detail = "BigQuery could not answer: " + truncate(r.Err.Error(), 300) + "; the sweep retries"
	}
	var errs []error
	raise := func(k string, sev alert.Severity, reason, title string) {
		al := base
		al.Key, al.Severity, al.Reason, al.Title = k, sev, reason, title
		errs = append(errs, g.Alerts.Raise(ctx, al))
	}
	switch {
	case a.monitor:
		raise(key, alert.Warning, "data_check_"+r.Status,
			fmt.Sprintf("%s: %s data for %s is incomplete; the next phase goes on", c.Name, g.phase.Name, date))
	case a.degrade:
		raise(key+"_degraded", alert.Warning, "data_check_degraded",
			fmt.Sprintf("%s: %s goes on degraded for %s (%d of %d tables hold rows)", c.Name, g.phase.Name, date,
				len(r.Counts)-len(r.Missing), len(r.Counts)))
	}
	if a.blocked {
		raise(key, alert.Error, "data_check_"+r.Status,
			fmt.Sprintf("%s: %s BLOCKED for %s (%s)", c.Name, g.phase.Name, date, r.Status))
		if r.Status == datacheck.Blocked && g.History != nil {
			g.History.Append(ctx, g.blockedRow(date, st, a))
		}
	}
	if a.gaveUp {
		raise(key+"_max_wait", alert.Error, "data_check_stay_blocked",
			fmt.Sprintf("%s: %s for %s still blocked after %v; it stays blocked until an operator triggers", c.Name, g.phase.Name, date, c.MaxWait))
	}
	if a.proceed {
		raise(key+"_max_wait", alert.Error, "data_check_max_wait",
			fmt.Sprintf("%s: %s for %s went on unverified after %v blocked", c.Name, g.phase.Name, date, c.MaxWait))
	}
	return errors.Join(errs...)
}

// resolveCheck follows a block's alert with "resolved" once the trigger it
// held is out. The trigger is confirmed and the sweep no longer visits the
// gate, so a follow-up the alert service could not record is logged, not
// retried.
func (g *Gate) resolveCheck(ctx context.Context, date gamedate.Date, a *dataCheckAlerts) {
	if a == nil || !a.resolve {
		return
	}
	err := g.Alerts.Resolve(ctx, alert.Alert{Key: g.phase.Name + ":" + date.String() + ":data_check", Phase: g.phase.Name,
		GameDate: date.String(), Title: fmt.Sprintf("%s: %s data for %s is in; the trigger went out", g.phase.DataCheck.Name, g.phase.Name, date),
		Detail: countsText(a.result)})
	if err != nil {
		g.Log.ErrorContext(ctx, "the data check's resolved alert was not recorded", "error", err.Error())
	}
}

func (g *Gate) blockedRow(date gamedate.Date, st *docState, a *dataCheckAlerts) history.Row {
	now := g.Clock.Now()
	return history.Row{
		Key: g.phase.Name + ":" + date.String() + ":blocked", ExecutionTimestamp: now, PhaseName: g.phase.Name,
		GameDate: date, StartTime: st.first, DurationSeconds: durationSince(st.first, now), Status: "blocked",
		CorrelationID: st.corrID,
		Metadata: map[string]any{"check": g.phase.DataCheck.Name, "missing_tables": nonNil(a.result.Missing),
			"table_row_counts": a.result.Counts, "blocked_since": a.since.UTC().Format(time.RFC3339)},
	}
}

// triggerRow is a published trigger's history row.
func (g *Gate) triggerRow(date gamedate.Date, st *docState, msg Message, now time.Time) history.Row {
	status := msg.TriggerReason
	switch {
	case msg.TriggerReason == rules.ReasonAllComplete:
		status = "complete"
	case strings.HasPrefix(msg.TriggerReason, "critical_plus_majority_"):
		status = "partial"
	}
	return history.Row{
		Key: msg.TriggerID, ExecutionTimestamp: now, PhaseName: g.phase.Name, GameDate: date,
		StartTime: st.first, DurationSeconds: durationSince(st.first, now), Status: status, CorrelationID: msg.CorrelationID,
		Metadata: map[string]any{
			"trigger_id": msg.TriggerID, "trigger_reason": msg.TriggerReason, "mode": msg.Mode,
			"is_partial": msg.IsPartial, "completed_processors": msg.CompletedProcessors,
			"missing_processors": msg.MissingProcessors, "data_freshness_verified": msg.DataFreshnessVerified,
			"data_check": msg.DataCheck, "missing_tables": msg.MissingTables, "table_row_counts": msg.TableRowCounts,
		},
	}
}

func durationSince(first, now time.Time) float64 {
	if first.IsZero() {
		return 0
	}
	return now.Sub(first).Seconds()
}

func countsText(r *datacheck.Result) string {
	if len(r.Counts) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(r.Counts)) {
		fmt.Fprintf(&b, "• %s: %d\n", k, r.Counts[k])
	}
	return strings.TrimRight(b.String(), "\n")
}

func toAny(m map[string]int64) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
