package status

import "time"

// The outcomes a gate or a batch is in (CONTRACT §13). Both pages colour
// by them and the JSON carries them, all from stateOf.
const (
	StateTriggered  = "triggered" // went on with everything the mode requires
	StatePartial    = "partial"   // went on with something missing
	StateWaiting    = "waiting"
	StateOverdue    = "overdue"
	StateBlocked    = "blocked" // held by a data check
	StateNotStarted = "not_started"
)

// outcome is what decides a state, whether it comes from a gate or a batch.
type outcome struct {
	started   bool // something was recorded
	triggered bool // the trigger (the batch completion) is confirmed
	partial   bool
	held      bool       // a blocking data check holds the trigger
	since     *time.Time // the clock the overdue limit runs on; nil: none started
	limit     time.Duration
}

// stateOf is the one classification behind every cell, heading and JSON
// state. When several hold, blocked wins over overdue over waiting: a held
// gate needs its data, not patience, and an overdue one needs an operator.
func stateOf(o outcome, now time.Time) string {
	switch {
	case o.triggered && o.partial:
		return StatePartial
	case o.triggered:
		return StateTriggered
	case !o.started:
		return StateNotStarted
	case o.held:
		return StateBlocked
	case o.since != nil && o.limit > 0 && now.Sub(*o.since) >= o.limit:
		return StateOverdue
	}
	return StateWaiting
}

// phaseState classifies a gate. It is overdue as Health counts it: no
// trigger stuckAfter after the first completion (CONTRACT §11).
func phaseState(p Phase, stuckAfter time.Duration, now time.Time) string {
	return stateOf(outcome{started: p.Exists, triggered: p.Triggered, partial: p.TriggerPartial,
		held: holds(p.DataCheck), since: p.FirstCompletionAt, limit: stuckAfter}, now)
}

// holds reports whether a data check keeps the trigger back: a blocking
// check that did not pass. A monitor-only check never holds.
func holds(dc *DataCheck) bool {
	return dc != nil && dc.Action != "monitor" && (dc.Status == "blocked" || dc.Status == "error")
}

// batchState classifies a prediction batch: partial when it completed
// without every player, overdue while still open past its age limit (the
// sweep should have completed it by then). The running coordinator's
// completed batches carry no completion_status and count as complete.
func batchState(complete bool, status string, start time.Time, maxAge time.Duration, now time.Time) string {
	return stateOf(outcome{started: true, triggered: complete, partial: status == "partial",
		since: &start, limit: maxAge}, now)
}

// stateStyle is how a state looks: a glyph for where colour is not seen,
// words for the text alternative, and the cell's colours.
type stateStyle struct {
	State, Glyph, Words, Background, Color string
}

// stateStyles lists every state in the legend's order. The stylesheet of
// both pages is generated from it, so a state has one look everywhere.
var stateStyles = []stateStyle{
	{StateTriggered, "✓", "triggered, complete", "#dafbe1", "#116329"},
	{StatePartial, "◐", "triggered, partial", "#ffe2c2", "#953800"},
	{StateWaiting, "◷", "waiting", "#f3e8ff", "#6639ba"},
	{StateOverdue, "⚠", "overdue", "#fff3a3", "#7d4e00"},
	{StateBlocked, "■", "blocked by a data check", "#cf222e", "#ffffff"},
	{StateNotStarted, "·", "not started", "#f6f8fa", "#57606a"},
}

func styleOf(state string) stateStyle {
	for _, s := range stateStyles {
		if s.State == state {
			return s
		}
	}
	return stateStyles[len(stateStyles)-1]
}
