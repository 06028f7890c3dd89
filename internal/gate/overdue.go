package gate

import (
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// fOverdue records the overdue warning of a gate: "raised", then
// "resolved". The sweep finds gates to resolve by it.
const fOverdue = "_overdue_alert"

// Overdue actions CheckOverdue reports.
const (
	OverdueRaised   = "raised"
	OverdueResolved = "resolved"
)

// OverdueQueries are the sweep's two questions for this phase: open gates
// whose first completion is older than stuck_after, at any age (the
// look-back must not let a stuck date age out unannounced; newest first,
// served by the index of the open-gates query), and gates whose overdue
// warning was raised and which have since triggered.
func (g *Gate) OverdueQueries(fs *firestore.Client, cutoff time.Time) []firestore.Query {
	coll := fs.Collection(g.Names.Coll(g.phase.Collection))
	return []firestore.Query{
		coll.Where(fOpen, "==", true).Where(fFirstCompletion, "<=", cutoff).OrderBy(fFirstCompletion, firestore.Desc),
		coll.Where(fOverdue, "==", OverdueRaised).Where(fOpen, "==", false),
	}
}

// CheckOverdue raises, once, a warning for a gate whose first completion is
// older than the phase's stuck_after while its trigger is unpublished, and
// once that gate has triggered, the "resolved" follow-up. snap is the gate
// as the sweep's query read it. It reports what it did ("" for nothing); an
// error leaves the gate unmarked, so the next sweep asks again.
func (g *Gate) CheckOverdue(ctx context.Context, date gamedate.Date, snap *firestore.DocumentSnapshot) (string, error) {
	st := decodeState(g.phase, snap)
	now := g.Clock.Now()
	mark, _ := st.data[fOverdue].(string)
	open, _ := st.data[fOpen].(bool)
	key := g.phase.Name + ":" + date.String() + ":overdue"
	var action string
	switch {
	case open && mark == "" && !st.first.IsZero() && now.Sub(st.first) >= g.phase.StuckAfter:
		var missing []string
		for _, name := range g.phase.Expected {
			if !st.completed[name] {
				missing = append(missing, name)
			}
		}
		waiting := "its trigger is owed but not published"
		if st.generation == 0 {
			waiting = "no rule has fired"
		}
		err := g.Alerts.Raise(ctx, alert.Alert{
			Key: key, Severity: alert.Warning,
			Title: fmt.Sprintf("%s for %s is overdue: no trigger %s after the first completion", g.phase.Name, date, alert.FormatElapsed(g.phase.StuckAfter)),
			Phase: g.phase.Name, GameDate: date.String(), Reason: "overdue",
			Completed: len(st.completed), Expected: len(g.phase.Expected), Missing: missing, Elapsed: now.Sub(st.first),
			Detail: waiting + "; when the missing processors cannot come, `phasegate trigger --phase " + g.phase.EntryPoint +
				" --date " + date.String() + "` goes on by hand",
		})
		if err != nil {
			return "", err
		}
		action = OverdueRaised
	case !open && mark == OverdueRaised:
		err := g.Alerts.Resolve(ctx, alert.Alert{Key: key, Phase: g.phase.Name, GameDate: date.String(),
			Title:  fmt.Sprintf("%s for %s is no longer overdue", g.phase.Name, date),
			Detail: "triggered " + st.triggerID})
		if err != nil {
			return "", err
		}
		action = OverdueResolved
	default:
		return "", nil
	}
	// Only this field: a gate write racing with it keeps its precondition
	// on the whole document and re-reads.
	if _, err := snap.Ref.Update(ctx, []firestore.Update{{Path: fOverdue, Value: action}}); err != nil {
		return action, fmt.Errorf("record overdue %s: %w", action, err)
	}
	return action, nil
}
