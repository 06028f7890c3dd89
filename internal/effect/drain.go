package effect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"cloud.google.com/go/firestore"
)

// DrainReport is what one sweep's pass over the owed effects did.
type DrainReport struct {
	Performed int
	Pending   int // tried, still owed
	Failed    int // given up this pass
	Errors    int // could not be taken or recorded (logged); the next sweep retries
	// Stopped names each destination left after a failed try: it is down,
	// and the rest of its effects wait for the next sweep.
	Stopped []string
	// QueryFailed names each lane whose query failed: what it owes was not
	// seen.
	QueryFailed []string
}

func (r *DrainReport) add(o DrainReport) {
	r.Performed += o.Performed
	r.Pending += o.Pending
	r.Failed += o.Failed
	r.Errors += o.Errors
	r.Stopped = append(r.Stopped, o.Stopped...)
	r.QueryFailed = append(r.QueryFailed, o.QueryFailed...)
}

// laneLimit bounds the effects one lane takes per sweep: a backlog drains
// over several sweeps rather than holding one past its budget.
const laneLimit = 50

// maxNotIn is Firestore's limit on a not-in filter's values.
const maxNotIn = 10

// Drain performs what is owed and due, lane by lane: each destination is
// queried on its own (served by the index on destination, due_at), its
// effects tried oldest first, one at a time, and a lane stops at its first
// failed try (its destination is down; one try per sweep is its backoff),
// so one broken destination never starves the others. Lanes run
// concurrently. Effects whose destination no lane names (a topic since
// renamed in the configuration) have a lane of their own beside them.
// The error reports failed queries only; Drain goes on with the other
// lanes, and an effect it could not take or record is logged and counted.
func (e *Engine) Drain(ctx context.Context) (DrainReport, error) {
	now := e.Clock.Now()
	known := map[string]bool{}
	for _, s := range e.Sinks {
		for _, lane := range s.Lanes() {
			known[lane] = true
		}
	}
	lanes := slices.Sorted(func(yield func(string) bool) {
		for l := range known {
			if !yield(l) {
				return
			}
		}
	})
	var (
		rep  DrainReport
		errs []error
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	collect := func(r DrainReport, err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.add(r)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, lane := range lanes {
		wg.Go(func() {
			collect(e.drainLane(ctx, lane,
				e.coll().Where(fDest, "==", lane).Where(fDue, "<=", now).OrderBy(fDue, firestore.Asc), nil))
		})
	}
	// Beside the lanes, not after them: a slow lane must not spend the
	// budget it needs. The lanes' own effects are left out by the query,
	// not after it: a backlog on a known lane would otherwise fill every
	// page and starve the orphans. Firestore takes at most 10 values in
	// not-in; any lane past them is left out here.
	notIn := lanes[:min(len(lanes), maxNotIn)]
	wg.Go(func() {
		collect(e.drainLane(ctx, "(other)", e.coll().Where(fDest, "not-in", notIn).Where(fDue, "<=", now).OrderBy(fDue, firestore.Asc),
			func(r *Record) bool { return !known[r.Destination] }))
	})
	wg.Wait()
	return rep, errors.Join(errs...)
}

// drainLane performs the due effects q finds (those only accepts), one at
// a time, leaving a destination at its first failed try.
func (e *Engine) drainLane(ctx context.Context, lane string, q firestore.Query, only func(*Record) bool) (DrainReport, error) {
	var rep DrainReport
	if ctx.Err() != nil {
		return rep, nil // the sweep's budget is spent: the next one goes on
	}
	snaps, err := q.Limit(laneLimit).Documents(ctx).GetAll()
	if err != nil && ctx.Err() != nil {
		return rep, nil // the budget ran out under the query
	}
	if err != nil {
		rep.QueryFailed = append(rep.QueryFailed, lane)
		e.Log.ErrorContext(ctx, "effects query failed; what it owes is not performed", "lane", lane, "error", err.Error())
		return rep, fmt.Errorf("effect: query lane %q: %w", lane, err)
	}
	stopped := map[string]bool{}
	for _, snap := range snaps {
		r, err := decode(snap)
		if err != nil {
			rep.Errors++
			e.Log.ErrorContext(ctx, "effect record unreadable", "effect_id", snap.Ref.ID, "error", err.Error())
			continue
		}
		if (only != nil && !only(r)) || stopped[r.Destination] || ctx.Err() != nil {
			continue
		}
		st, err := e.takeAndRun(ctx, r)
		if err == nil {
			err = st.Err
		}
		switch {
		case err != nil && !st.Pending && !st.Done:
			rep.Errors++
			e.Log.ErrorContext(ctx, "effect not performed; the next sweep retries", "effect", r.Key, "error", err.Error())
		case st.Done:
			rep.Performed++
		case st.Outcome == Refused && !st.Pending:
			rep.Failed++
		case st.Outcome == Unavailable || st.Outcome == NotAsked:
			rep.Pending++
			stopped[r.Destination] = true
			rep.Stopped = append(rep.Stopped, r.Destination)
		case st.Outcome == Refused:
			rep.Pending++
		}
	}
	return rep, nil
}
