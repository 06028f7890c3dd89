package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// fOverdue records the overdue warning of a gate: "raised", then
// "resolved". The sweep finds gates to resolve by it.
const fOverdue = "_overdue_alert"

// fTakenOver marks a running-system document (no _open) whose overdue
// warning phasegate raised: Health counts it overdue while the warning
// stands (no query of _open finds it).
const fTakenOver = "_taken_over"

// Overdue actions CheckOverdue reports.
const (
	OverdueRaised   = "raised"
	OverdueResolved = "resolved"
)

// OverdueQueries are the sweep's two questions for this phase: open gates
// whose first completion is older than stuck_after, at any age (the
// look-back must not let a stuck date age out unannounced; newest first,
// served by the index of the open-gates query), and gates whose overdue
// warning was raised and which have triggered since: _triggered, which
// phasegate's confirm and the running system both write (a running-system
// document has no _open), so warnings on stuck gates never fill the page.
func (g *Gate) OverdueQueries(fs *firestore.Client, cutoff time.Time) []firestore.Query {
	coll := fs.Collection(g.Names.Coll(g.phase.Collection))
	return []firestore.Query{
		coll.Where(fOpen, "==", true).Where(fFirstCompletion, "<=", cutoff).OrderBy(fFirstCompletion, firestore.Desc),
		coll.Where(fOverdue, "==", OverdueRaised).Where(fTriggered, "==", true),
	}
}

// CheckOverdue raises, once, a warning for a gate whose first completion is
// older than the phase's stuck_after while its trigger is unpublished, and
// once that gate has triggered, the "resolved" follow-up: each is owed in
// the commit that marks the gate (_overdue_alert), conditional on the gate
// being as snap read it, and performed at once. It reports what it did
// ("" for nothing); a gate that changed meanwhile is left for the next
// sweep. Documents the running system wrote (no _open) are judged by their
// trigger: untriggered is open.
func (g *Gate) CheckOverdue(ctx context.Context, date gamedate.Date, snap *firestore.DocumentSnapshot) (string, error) {
	st := decodeState(g.phase, snap)
	now := g.Clock.Now()
	mark, _ := st.data[fOverdue].(string)
	open, ours := st.data[fOpen].(bool)
	if !ours {
		open = !st.triggered
	}
	key := g.phase.Name + ":" + date.String() + ":overdue"
	var (
		action string
		eff    effect.Effect
	)
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
		action, eff = OverdueRaised, alert.Raise(alert.Alert{
			Key: key, Severity: alert.Warning,
			Title: fmt.Sprintf("%s for %s is overdue: no trigger %s after the first completion", g.phase.Name, date, alert.FormatElapsed(g.phase.StuckAfter)),
			Phase: g.phase.Name, GameDate: date.String(), Reason: "overdue",
			Completed: len(st.completed), Expected: len(g.phase.Expected), Missing: missing, Elapsed: now.Sub(st.first),
			Detail: waiting + "; when the missing processors cannot come, `phasegate trigger --phase " + g.phase.EntryPoint +
				" --date " + date.String() + "` goes on by hand",
		}, st.incarnation)
	case !open && mark == OverdueRaised:
		action, eff = OverdueResolved, alert.Resolve(alert.Alert{Key: key, Phase: g.phase.Name, GameDate: date.String(),
			Title:  fmt.Sprintf("%s for %s is no longer overdue", g.phase.Name, date),
			Detail: "triggered " + st.triggerID}, st.incarnation)
	default:
		return "", nil
	}
	ups := []firestore.Update{{Path: fOverdue, Value: action}}
	if !ours && action == OverdueRaised {
		ups = append(ups, firestore.Update{Path: fTakenOver, Value: true})
	}
	made, err := g.Effects.Decide(ctx, []effect.Write{{Ref: snap.Ref,
		Update: ups,
		Pre:    []firestore.Precondition{firestore.LastUpdateTime(snap.UpdateTime)}}}, []effect.Effect{eff}, nil)
	if errors.Is(err, effect.ErrConflict) {
		return "", nil // written meanwhile: the next sweep judges it again
	}
	if err != nil {
		return "", fmt.Errorf("record overdue %s: %w", action, err)
	}
	g.Effects.Perform(ctx, made)
	return action, nil
}
