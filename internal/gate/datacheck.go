package gate

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

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

// _data_check, the gate's record of its last check.
const (
	fDataCheck = "_data_check"
	// dcSince is when the check first failed in the current block: the
	// maximum wait counts from it.
	dcSince  = "blocked_since"
	dcGaveUp = "gave_up"
	// dcRow: the block's history row is owed already.
	dcRow = "row"
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

// checkFor decides whether a trigger the rules fired may go: it returns the
// verdict the message carries and true, or false when the trigger waits
// (for a first evaluation, asked for through pl.needCheck; for a block).
// It owes, with the check's record, the alerts and the row of its
// transitions: into a block (one error alert, one row once blocked), out
// of it (the alert's "resolved", with the claim), past the maximum wait.
func (g *Gate) checkFor(pl *plan, date gamedate.Date, st *docState, d rules.Decision, src Source,
	res *datacheck.Result, now time.Time) (checkVerdict, bool) {
	c := g.phase.DataCheck
	switch {
	case c == nil:
		return checkVerdict{status: checkNotConfigured}, true
	case g.Checks == nil || !g.BigQuery.DataChecks.Enabled(date.String()):
		return checkVerdict{status: checkOff}, true
	case src == SourceManual:
		// An operator's trigger ends a block: its alerts are resolved.
		g.endBlock(pl, date, st.sub(fDataCheck), false,
			fmt.Sprintf("%s: %s for %s was triggered by an operator without the check", c.Name, g.phase.Name, date), "")
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
	pl.set(fDataCheck, rec)
	v := checkVerdict{verified: res.Verified(), missing: nonNil(res.Missing), counts: res.Counts}
	key := g.phase.Name + ":" + date.String() + ":data_check"
	raise := func(k string, sev alert.Severity, reason, title string) {
		a := g.checkAlert(date, res)
		a.Key, a.Severity, a.Reason, a.Title = k, sev, reason, title
		pl.raise(a)
	}
	switch {
	case res.Status == datacheck.Passed:
		v.status = checkPassed
		g.endBlock(pl, date, prev, false, fmt.Sprintf("%s: %s data for %s is in; the trigger goes out", c.Name, g.phase.Name, date), countsText(res))
		if len(res.Missing) > 0 {
			v.status = checkDegraded
			raise(key+"_degraded", alert.Warning, "data_check_degraded",
				fmt.Sprintf("%s: %s goes on degraded for %s (%d of %d tables hold rows)", c.Name, g.phase.Name, date,
					len(res.Counts)-len(res.Missing), len(res.Counts)))
		}
		return v, true
	case c.Action == config.ActionMonitor:
		v.status = checkMonitor
		raise(key, alert.Warning, "data_check_"+res.Status,
			fmt.Sprintf("%s: %s data for %s is incomplete; the next phase goes on", c.Name, g.phase.Name, date))
		return v, true
	}
	since := now
	if wasHeld {
		if t, ok := prev[dcSince].(time.Time); ok {
			since = t
		}
	}
	rec[dcSince] = since
	pl.outcome.Blocked = res.Status
	if !wasHeld {
		raise(key, alert.Error, "data_check_"+res.Status,
			fmt.Sprintf("%s: %s BLOCKED for %s (%s)", c.Name, g.phase.Name, date, res.Status))
	}
	rowOwed, _ := prev[dcRow].(bool)
	rowOwed = rowOwed && wasHeld
	if res.Status == datacheck.Blocked && !rowOwed && g.HistoryTable != "" {
		pl.rows = append(pl.rows, g.blockedRow(date, st, res, since))
		rowOwed = true
	}
	rec[dcRow] = rowOwed
	if now.Sub(since) < c.MaxWait {
		return v, false
	}
	if c.AfterMaxWait == config.AfterProceed {
		v.status = checkMaxWait
		raise(key+"_unverified", alert.Error, "data_check_max_wait",
			fmt.Sprintf("%s: %s for %s went on unverified after %v blocked", c.Name, g.phase.Name, date, c.MaxWait))
		// The block is over (its alert raised before or just now); the
		// alert above is the news that stays.
		g.endBlock(pl, date, prev, true, fmt.Sprintf("%s: %s for %s is no longer blocked: it went on unverified", c.Name, g.phase.Name, date), countsText(res))
		return v, true
	}
	if gaveUp, _ := prev[dcGaveUp].(bool); !gaveUp {
		raise(key+"_max_wait", alert.Error, "data_check_stay_blocked",
			fmt.Sprintf("%s: %s for %s still blocked after %v; it stays blocked until an operator triggers", c.Name, g.phase.Name, date, c.MaxWait))
	}
	rec[dcGaveUp] = true
	return v, false
}

// endBlock resolves the alerts of a block that ends (the data came in,
// an operator triggered, or the gate went on after the maximum wait): the
// BLOCKED alert when one was raised (prev, the check's last record, held
// the gate; or raisedNow), and the stay-blocked alert when it gave up.
// Resolving what was never raised would post a "resolved" out of nowhere.
func (g *Gate) endBlock(pl *plan, date gamedate.Date, prev map[string]any, raisedNow bool, title, detail string) {
	status, _ := prev["status"].(string)
	held := status == datacheck.Blocked || status == datacheck.Error
	if c := g.phase.DataCheck; c == nil || c.Action != config.ActionBlock || !(held || raisedNow) {
		return
	}
	key := g.phase.Name + ":" + date.String() + ":data_check"
	pl.resolve(alert.Alert{Key: key, Phase: g.phase.Name, GameDate: date.String(), Title: title, Detail: detail})
	if gaveUp, _ := prev[dcGaveUp].(bool); gaveUp && held {
		pl.resolve(alert.Alert{Key: key + "_max_wait", Phase: g.phase.Name, GameDate: date.String(), Title: title})
	}
}

// checkAlert is the body every alert of a check's result shares.
func (g *Gate) checkAlert(date gamedate.Date, r *datacheck.Result) alert.Alert {
	a := alert.Alert{Phase: g.phase.Name, GameDate: date.String(), Missing: r.Missing,
		Expected: len(r.Counts), Completed: len(r.Counts) - len(r.Missing), Detail: countsText(r)}
	if r.Status == datacheck.Error {
		a.Expected, a.Completed = 0, 0
		a.Detail = "BigQuery could not answer: " + truncate(errText(r.Err), 300) + "; the sweep retries"
	}
	return a
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (g *Gate) blockedRow(date gamedate.Date, st *docState, r *datacheck.Result, since time.Time) history.Row {
	now := g.Clock.Now()
	return history.Row{
		Key: g.phase.Name + ":" + date.String() + ":blocked", ExecutionTimestamp: now, PhaseName: g.phase.Name,
		GameDate: date, StartTime: st.first, DurationSeconds: durationSince(st.first, now), Status: "blocked",
		CorrelationID: st.corrID,
		Metadata: map[string]any{"check": g.phase.DataCheck.Name, "missing_tables": nonNil(r.Missing),
			"table_row_counts": r.Counts, "blocked_since": since.UTC().Format(time.RFC3339)},
	}
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
