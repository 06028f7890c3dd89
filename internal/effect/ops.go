package effect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/opstate"
)

// Counts is the log as Health reports it.
type Counts struct {
	Owed, Failed int64
	OldestOwed   time.Time // zero when nothing is owed
	// AlertsOwed and OldestAlert are the Slack effects among the owed.
	AlertsOwed  int64
	OldestAlert time.Time
}

// ReadCounts counts owed and failed effects in bounded RPCs: a count
// aggregation per question (billed one read per 1,000 entries) and a
// one-document query for each oldest.
func ReadCounts(ctx context.Context, fs *firestore.Client, names config.Names) (Counts, error) {
	coll := fs.Collection(names.Coll(Collection))
	owed := coll.Where(fState, "==", string(Owed))
	alerts := owed.Where(fKind, "==", string(Slack))
	var c Counts
	g, ctx := errgroup.WithContext(ctx)
	count := func(into *int64, q firestore.Query) {
		g.Go(func() (err error) {
			*into, err = opstate.Count(ctx, q)
			return err
		})
	}
	oldest := func(into *time.Time, q firestore.Query) {
		g.Go(func() error {
			snaps, err := q.OrderBy(fCreated, firestore.Asc).Limit(1).Documents(ctx).GetAll()
			if err == nil && len(snaps) == 1 {
				*into, _ = snaps[0].Data()[fCreated].(time.Time)
			}
			return err
		})
	}
	count(&c.Owed, owed)
	count(&c.Failed, coll.Where(fState, "==", string(Failed)))
	count(&c.AlertsOwed, alerts)
	oldest(&c.OldestOwed, owed)
	oldest(&c.OldestAlert, alerts)
	if err := g.Wait(); err != nil {
		return Counts{}, fmt.Errorf("effect: count: %w", err)
	}
	return c, nil
}

// List returns the effects in state, oldest first, at most limit.
func List(ctx context.Context, fs *firestore.Client, names config.Names, state State, limit int) ([]*Record, error) {
	snaps, err := fs.Collection(names.Coll(Collection)).Where(fState, "==", string(state)).
		OrderBy(fCreated, firestore.Asc).Limit(limit).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("effect: list %s: %w", state, err)
	}
	out := make([]*Record, 0, len(snaps))
	for _, s := range snaps {
		r, err := decode(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// ErrNotChangeable is returned when an operator asks for what an effect's
// state does not allow (retrying one that is done).
var ErrNotChangeable = errors.New("effect: not in a state that allows it")

// Retry makes a failed, dismissed or backing-off effect owed again, as if
// new (its refusals and failures forgotten), and performs it now. An
// effect a performer holds right now is refused: a second try beside it
// could deliver a copy.
func (e *Engine) Retry(ctx context.Context, id string) (Status, error) {
	r, err := e.operate(ctx, id, func(r *Record) ([]firestore.Update, error) {
		if r.State == Done || r.State == Shadow {
			return nil, fmt.Errorf("%w: %s is %s", ErrNotChangeable, id, r.State)
		}
		if r.State == Owed && r.Tries > r.Settled && r.DueAt.After(e.Clock.Now()) {
			return nil, fmt.Errorf("%w: %s is being performed (held until %s); the sweep retries it after that",
				ErrNotChangeable, id, r.DueAt.Format(time.RFC3339))
		}
		return []firestore.Update{
			{Path: fState, Value: string(Owed)}, {Path: fDue, Value: e.Clock.Now()},
			{Path: fRefused, Value: firestore.Delete}, {Path: fFailures, Value: int64(0)},
			{Path: config.ExpiresField, Value: firestore.Delete},
		}, nil
	})
	if err != nil {
		return Status{}, err
	}
	if err := e.reoweFollowers(ctx, id); err != nil {
		return Status{}, err
	}
	return e.takeAndRun(ctx, r)
}

// reoweFollowers makes owed again the effects that follow id and were
// skipped because it had failed (a raise's "resolved"): retried, it may
// now be seen, and then so must its follow-up. They wait for id as
// before, and the sweep performs them after it.
func (e *Engine) reoweFollowers(ctx context.Context, id string) error {
	snaps, err := e.coll().Where(fAfter, "==", id).Documents(ctx).GetAll()
	if err != nil {
		return fmt.Errorf("effect: read what follows %s: %w", id, err)
	}
	now := e.Clock.Now()
	for _, snap := range snaps {
		r, err := decode(snap)
		if err != nil {
			return err
		}
		if r.State != Done || r.Ref != refSkipped {
			continue
		}
		_, err = snap.Ref.Update(ctx, []firestore.Update{
			{Path: fState, Value: string(Owed)}, {Path: fDue, Value: now}, {Path: fRef, Value: firestore.Delete},
			{Path: fDoneAt, Value: firestore.Delete}, {Path: config.ExpiresField, Value: firestore.Delete},
		}, firestore.LastUpdateTime(r.updateTime))
		if err := classify(err); err != nil && !errors.Is(err, ErrConflict) {
			return fmt.Errorf("effect: owe %s again: %w", r.ID, err)
		}
	}
	return nil
}

// Dismiss gives up an owed or failed alert or row: it is no longer
// performed or counted. A message is never given up: its gate or batch
// waits for its confirm, and the next phase for the message.
func (e *Engine) Dismiss(ctx context.Context, id string) error {
	_, err := e.operate(ctx, id, func(r *Record) ([]firestore.Update, error) {
		if r.State != Owed && r.State != Failed {
			return nil, fmt.Errorf("%w: %s is %s", ErrNotChangeable, id, r.State)
		}
		if r.Kind == Publish {
			return nil, fmt.Errorf("%w: %s is a message; dismissing it would leave its gate waiting for ever (fix the topic and let the sweep publish it, or retry it)",
				ErrNotChangeable, id)
		}
		return []firestore.Update{
			{Path: fState, Value: string(Dismissed)}, {Path: fDue, Value: firestore.Delete},
			{Path: config.ExpiresField, Value: e.Clock.Now().Add(e.Retention)},
		}, nil
	})
	return err
}

// operate applies f's change to effect id under its update time, and
// returns the record as changed.
func (e *Engine) operate(ctx context.Context, id string, f func(*Record) ([]firestore.Update, error)) (*Record, error) {
	snap, err := e.Ref(id).Get(ctx)
	if err != nil {
		if snap != nil && !snap.Exists() {
			return nil, fmt.Errorf("effect %s: %w", id, errNotFound)
		}
		return nil, fmt.Errorf("effect: read %s: %w", id, err)
	}
	r, err := decode(snap)
	if err != nil {
		return nil, err
	}
	ups, err := f(r)
	if err != nil {
		return nil, err
	}
	wr, err := e.Ref(id).Update(ctx, ups, firestore.LastUpdateTime(r.updateTime))
	if err != nil {
		return nil, fmt.Errorf("effect: change %s: %w", id, classify(err))
	}
	snap, err = e.Ref(id).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("effect: read %s: %w", id, err)
	}
	if !snap.UpdateTime.Equal(wr.UpdateTime) {
		return nil, fmt.Errorf("effect: %s: %w", id, ErrConflict)
	}
	return decode(snap)
}
