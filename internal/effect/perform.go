package effect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/config"
)

// Status is what became of one effect.
type Status struct {
	Outcome Outcome
	Done    bool   // performed or settled as done
	Pending bool   // someone else holds it, or it waits for its backoff
	Ref     string // the destination's answer
	Err     error
}

// leaseMargin is kept between a try's end and its lease's, for Firestore
// latency and clock skew between instances: nobody takes over a try still
// running.
const leaseMargin = 10 * time.Second

// Perform performs the effects of m, each on its own budget and
// concurrently, and returns when all are settled: nothing outlives the
// request that calls it. It returns each effect's status by id.
func (e *Engine) Perform(ctx context.Context, m Made) map[string]Status {
	out := make(map[string]Status, len(m.Effects))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	at := m.At
	if at.IsZero() {
		at = e.Clock.Now()
	}
	for i, ef := range m.Effects {
		r := &Record{ID: ef.ID(), Effect: ef, State: Owed, CreatedAt: at, Tries: 1, LastTry: at,
			DueAt: at.Add(e.policy(ef.Kind).Lease)}
		if e.Shadow {
			r.State = Shadow
		}
		if i < len(m.Times) {
			r.updateTime = m.Times[i]
		}
		var owner *OwnerState
		if ef.Kind == Publish {
			owner = m.Owner
		}
		wg.Go(func() {
			st := e.run(ctx, r, owner)
			mu.Lock()
			out[r.ID] = st
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Resume performs the owed effect id now if it is due, taking it first;
// it reports Pending when another performer holds it or it waits for its
// backoff. It is how a redelivered event finishes what its first delivery
// decided.
func (e *Engine) Resume(ctx context.Context, id string) (Status, error) {
	snap, err := e.Ref(id).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return Status{}, fmt.Errorf("effect %s: %w", id, errNotFound)
	}
	if err != nil {
		return Status{}, fmt.Errorf("effect: read %s: %w", id, err)
	}
	r, err := decode(snap)
	if err != nil {
		return Status{}, err
	}
	return e.takeAndRun(ctx, r)
}

// fTake is the token of the try that took an effect: a take the client
// replayed after it was applied is recognised as this try's.
const fTake = "take_token"

func (e *Engine) takeAndRun(ctx context.Context, r *Record) (Status, error) {
	switch {
	case r.State == Done:
		return Status{Done: true, Ref: r.Ref}, nil
	case r.State == Shadow && r.DueAt.IsZero():
		return Status{Done: true, Ref: ShadowRef}, nil
	case r.State != Owed && r.State != Shadow:
		return Status{}, nil // failed or dismissed: an operator's turn
	}
	now := e.Clock.Now()
	if r.DueAt.After(now) {
		return Status{Pending: true}, nil
	}
	unsettled, ambiguous := r.Tries > r.Settled, r.Ambiguous > 0
	token, due := newToken(), now.Add(e.policy(r.Kind).Lease)
	wr, err := e.Ref(r.ID).Update(ctx, []firestore.Update{
		{Path: fDue, Value: due},
		{Path: fTries, Value: r.Tries + 1},
		{Path: fLastTry, Value: now},
		{Path: fPerformedBy, Value: e.Instance},
		{Path: fTake, Value: token},
	}, firestore.LastUpdateTime(r.updateTime))
	if err := classify(err); errors.Is(err, ErrConflict) {
		snap, rerr := e.Ref(r.ID).Get(ctx)
		if rerr != nil || snap.Data()[fTake] != token {
			return Status{Pending: true}, nil // another performer took it first
		}
		wr = &firestore.WriteResult{UpdateTime: snap.UpdateTime} // ours, applied and replayed
	} else if err != nil {
		return Status{}, err
	}
	r.Tries++
	r.updateTime, r.DueAt = wr.UpdateTime, due
	if unsettled || ambiguous {
		cause := "crash"
		if !unsettled {
			cause = "ambiguous"
		}
		// The try before may have reached the destination: this one may
		// be a copy (see the package doc).
		r.copyCause = cause
	}
	return e.run(ctx, r, nil), nil
}

// run tries r once and settles it. owner is the publish's owner as its
// decision left it, nil to read it.
func (e *Engine) run(ctx context.Context, r *Record, owner *OwnerState) Status {
	log := e.Log.With("effect", r.Key, "effect_kind", string(r.Kind), "destination", r.Destination,
		"game_date", r.GameDate)
	if e.Shadow && (r.Kind != Publish || r.Owner == "") {
		return Status{Done: true, Ref: ShadowRef} // recorded, never performed
	}
	if r.After != "" {
		if st, wait := e.prerequisite(ctx, r); wait {
			return st
		}
	}
	if owner == nil && r.Kind == Publish && r.Owner != "" && !e.Shadow {
		// Taken over: the owner may have been confirmed since by another
		// way (a revision before the effect log, after a rollback). Then
		// the message went out already: publishing it again is a copy.
		o, superseded, err := e.awaited(ctx, r)
		if err != nil {
			return Status{Pending: true, Err: err}
		}
		if superseded {
			e.Metrics.Inc("effects.superseded")
			log.InfoContext(ctx, "message published and confirmed another way; not published again")
			st, err := e.settle(context.WithoutCancel(ctx), r, Result{Outcome: Performed, Ref: refSuperseded}, nil, log)
			st.Err = errors.Join(st.Err, err)
			return st
		}
		owner = o
	}
	var res Result
	switch {
	case e.Shadow:
		res = Result{Outcome: Performed, Ref: ShadowRef}
	case e.Sinks[r.Kind] == nil && r.Kind == Row:
		// History was switched off: its owed rows have nowhere to go.
		log.WarnContext(ctx, "history row dismissed: no history table is configured")
		return e.dismissAsNoDestination(ctx, r)
	case e.Sinks[r.Kind] == nil:
		res = Result{Outcome: NotAsked, Err: fmt.Errorf("no %s destination is configured", r.Kind)}
	default:
		res = e.try(ctx, r)
	}
	if res.Outcome == Performed && r.copyCause != "" {
		e.Metrics.Inc("effects.possible_copy." + r.copyCause)
		log.WarnContext(ctx, "effect performed again after a try whose outcome is unknown: the destination may hold a copy",
			"copy_cause", r.copyCause, "tries", r.Tries)
	}
	st, err := e.settle(context.WithoutCancel(ctx), r, res, owner, log)
	if err != nil {
		e.Metrics.Inc("effects.settle_failed")
		log.ErrorContext(ctx, "effect outcome not recorded; it is tried again after its lease", "outcome", res.Outcome.String(),
			"error", err.Error())
		st.Err = errors.Join(st.Err, err)
	}
	return st
}

// try asks the destination once, within the try's budget, the caller's
// (a sweep's), and the time left in the lease, whichever ends first.
func (e *Engine) try(ctx context.Context, r *Record) Result {
	p := e.policy(r.Kind)
	budget := p.Budget
	if r.Tries > 1 {
		budget = p.RetryBudget
	}
	if left := r.DueAt.Sub(e.Clock.Now()) - leaseMargin; !r.DueAt.IsZero() && left < budget {
		budget = left
	}
	if budget <= 0 {
		return Result{Outcome: NotAsked, Err: errors.New("no time left in the lease")}
	}
	deadline := time.Now().Add(budget)
	dl, capped := ctx.Deadline()
	capped = capped && dl.Before(deadline)
	if capped {
		deadline = dl
	}
	tctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	res := e.Sinks[r.Kind].Perform(tctx, r)
	if res.Outcome == Unavailable && (ctx.Err() != nil || (capped && !time.Now().Before(dl))) {
		// The caller's budget ran out, not the destination's patience:
		// no try, but it may have been delivered.
		res.Outcome = NotAsked
	}
	return res
}

// awaited reads r's owner: whether it still awaits r (with the owner as
// read, for the confirm), or was confirmed for r by other means.
func (e *Engine) awaited(ctx context.Context, r *Record) (*OwnerState, bool, error) {
	coll := r.Owner[:strings.IndexByte(r.Owner+"/", '/')]
	o := e.Owners[coll]
	if o == nil {
		return nil, false, nil
	}
	snap, err := e.FS.Doc(r.Owner).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return nil, false, nil // deleted: the message is still owed
	}
	if err != nil {
		return nil, false, fmt.Errorf("effect: read owner %s: %w", r.Owner, err)
	}
	if Incarnation(snap.Data(), snap.CreateTime) != r.Incarnation {
		return nil, false, nil // re-created since: still owed, not its to confirm
	}
	known := &OwnerState{Data: snap.Data(), Updated: snap.UpdateTime}
	return known, len(o.Confirm(known.Data, r, "", e.Clock.Now())) == 0, nil
}

// refSuperseded is the ref of a message its owner confirmed by other means.
const refSuperseded = "superseded"

func (e *Engine) dismissAsNoDestination(ctx context.Context, r *Record) Status {
	_, err := e.Ref(r.ID).Update(context.WithoutCancel(ctx), []firestore.Update{
		{Path: fState, Value: string(Dismissed)}, {Path: fDue, Value: firestore.Delete},
		{Path: fLastError, Value: "no destination is configured"}, {Path: fSettled, Value: r.Tries},
		{Path: config.ExpiresField, Value: e.Clock.Now().Add(e.Retention)},
	}, firestore.LastUpdateTime(r.updateTime))
	return Status{Outcome: NotAsked, Err: ignoreConflict(err)}
}

// prerequisite decides whether r may go now: when the effect it follows
// is done (or expired long ago); r is skipped when that one failed or was
// dismissed, and waits, without a try, while it is owed.
func (e *Engine) prerequisite(ctx context.Context, r *Record) (Status, bool) {
	snap, err := e.Ref(r.After).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return Status{}, false // settled and expired: it was done
	}
	if err != nil {
		return Status{Err: fmt.Errorf("effect: read %s: %w", r.After, err)}, true
	}
	before, err := decode(snap)
	if err != nil {
		return Status{Err: err}, true
	}
	skip := before.State == Failed || before.State == Dismissed || (before.State == Done && before.Ref == refSkipped)
	if skip {
		e.Metrics.Inc("effects.skipped")
		st, err := e.settle(context.WithoutCancel(ctx), r, Result{Outcome: Performed, Ref: refSkipped}, nil, e.Log)
		st.Err = errors.Join(st.Err, err)
		return st, true
	}
	if before.State == Done || before.State == Shadow {
		return Status{}, false
	}
	// Due again at once, not a try: the next sweep looks again (the one
	// before it may be performing it right now, in another lane).
	_, err = e.Ref(r.ID).Update(context.WithoutCancel(ctx), []firestore.Update{
		{Path: fDue, Value: e.Clock.Now()}, {Path: fSettled, Value: r.Tries},
	}, firestore.LastUpdateTime(r.updateTime))
	return Status{Pending: true, Err: ignoreConflict(err)}, true
}

// refSkipped is the ref of an effect settled without being performed: its
// prerequisite never happened.
const refSkipped = "skipped"

func ignoreConflict(err error) error {
	if err = classify(err); err == nil || errors.Is(err, ErrConflict) {
		return nil
	}
	return err
}

// fSettle is the token of the commit that recorded a try's outcome.
const fSettle = "settle_token"

// settle records res for r, with the confirm of a publish on its owner and
// whatever alarm follows, and performs that alarm.
func (e *Engine) settle(ctx context.Context, r *Record, res Result, owner *OwnerState, log *slog.Logger) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	now := e.Clock.Now()
	p := e.policy(r.Kind)
	st := Status{Outcome: res.Outcome, Ref: res.Ref, Err: res.Err}
	token := newToken()
	ups := []firestore.Update{{Path: fSettled, Value: r.Tries}, {Path: fSettle, Value: token}}
	if res.Ambiguous {
		ups = append(ups, firestore.Update{Path: fAmbiguous, Value: r.Ambiguous + 1})
	}
	if res.Err != nil {
		ups = append(ups, firestore.Update{Path: fLastError, Value: truncate(res.Err.Error(), 500)})
	}
	var more []Effect // alarms this outcome raises, created in the same commit
	failed := func(failures int64) {
		if p.AlertAfter > 0 && failures >= p.AlertAfter && !r.Alerted && e.Alarms != nil {
			more = append(more, e.Alarms.Failing(r, failures))
			ups = append(ups, firestore.Update{Path: fAlerted, Value: true})
		}
	}
	switch res.Outcome {
	case Performed:
		ups = append(ups, firestore.Update{Path: fDue, Value: firestore.Delete}, firestore.Update{Path: fDoneAt, Value: now},
			firestore.Update{Path: fRef, Value: res.Ref})
		if r.State != Shadow {
			ups = append(ups, firestore.Update{Path: fState, Value: string(Done)},
				firestore.Update{Path: config.ExpiresField, Value: now.Add(e.Retention)})
		}
		if r.Alerted && e.Alarms != nil {
			more = append(more, e.Alarms.Recovered(r, e.Alarms.Failing(r, r.Failures)))
		}
	case Refused:
		since := r.RefusedSince
		if since.IsZero() {
			since = now
			ups = append(ups, firestore.Update{Path: fRefused, Value: now})
		}
		if p.KeepRefused >= 0 && now.Sub(since) >= p.KeepRefused {
			ups = append(ups, firestore.Update{Path: fState, Value: string(Failed)}, firestore.Update{Path: fDue, Value: firestore.Delete})
			if e.Alarms != nil && !isAlarm(r.Key) {
				r.RefusedSince = since
				more = append(more, e.Alarms.GaveUp(r))
			}
			e.Metrics.Inc("effects.failed")
			log.ErrorContext(ctx, "effect given up: its destination refused it", "effect_event", "failed",
				"refused_for_s", int64(now.Sub(since).Seconds()), "error", errText(res.Err))
			break
		}
		fallthrough
	case Unavailable:
		failures := r.Failures + 1
		ups = append(ups, firestore.Update{Path: fFailures, Value: failures},
			firestore.Update{Path: fDue, Value: now.Add(p.Backoff(failures))})
		failed(failures)
		st.Pending = true
		e.Metrics.Inc("effects.try_failed." + string(r.Kind))
		log.WarnContext(ctx, "effect not performed; it stays owed", "outcome", res.Outcome.String(), "failures", failures,
			"next_try", now.Add(p.Backoff(failures)).Format(time.RFC3339), "ambiguous", res.Ambiguous, "error", errText(res.Err))
	case NotAsked:
		// Not a try: due again at once, for the next sweep. Where a long
		// failure raises an alarm (a message that cannot be published),
		// an open breaker's refusals count towards it: its probes alone
		// would take too long to.
		ups = append(ups, firestore.Update{Path: fDue, Value: now})
		if p.AlertAfter > 0 {
			failures := r.Failures + 1
			ups = append(ups, firestore.Update{Path: fFailures, Value: failures})
			failed(failures)
		}
		st.Pending = true
	}
	if e.Shadow {
		more = nil
	}
	for attempt := 0; ; attempt++ {
		if r.updateTime.IsZero() {
			if held, err := e.stillHeld(ctx, r); err != nil || !held {
				return st, err
			}
		}
		all := []Write{{Ref: e.Ref(r.ID), Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(r.updateTime)}}}
		var confirmed Owner
		if res.Outcome == Performed && res.Ref != refSuperseded && r.Kind == Publish && r.Owner != "" {
			ow, o, err := e.confirm(ctx, r, res.Ref, owner, now)
			if err != nil {
				return st, err
			}
			if ow != nil {
				all, confirmed = append(all, *ow), o
			}
		}
		all = append(all, e.Owe(now, more...)...)
		times, err := Commit(ctx, e.FS, all...)
		if errors.Is(err, ErrConflict) && attempt < maxSettleAttempts {
			// Our own commit, applied and replayed by the client; or the
			// owner changed since it was read (another completion
			// recorded); or the effect did (a performer took it over); or
			// an alarm of the same episode exists.
			cur, rerr := e.current(ctx, r)
			switch {
			case rerr != nil:
				return st, rerr
			case cur != nil && cur.settleToken == token:
				e.Metrics.Inc("effects.settle_replayed")
				times, err = nil, nil
			case cur == nil || cur.Tries != r.Tries || (cur.State != Owed && cur.State != Shadow):
				e.Metrics.Inc("effects.lease_lost")
				log.WarnContext(ctx, "effect taken over by another performer before its outcome was recorded",
					"outcome", res.Outcome.String())
				return st, nil
			default:
				r.updateTime, owner = cur.updateTime, nil
				more = e.notOwed(ctx, more)
				continue
			}
		}
		if err != nil {
			return st, err
		}
		e.Metrics.Inc("effects." + res.Outcome.String() + "." + string(r.Kind))
		st.Done = res.Outcome == Performed || st.Done
		if confirmed != nil {
			confirmed.Confirmed(ctx, r, res.Ref)
		}
		if res.Outcome == Performed {
			log.InfoContext(ctx, "effect performed", "effect_event", "done", "ref", res.Ref, "tries", r.Tries)
		}
		if len(more) > 0 && times != nil {
			e.Perform(ctx, Made{Effects: more, Times: times[len(times)-len(more):], At: now})
		}
		return st, nil
	}
}

// maxSettleAttempts bounds the re-reads of a contended owner: a gate takes
// a few writes a minute, so losing this many races in a row means the
// store is failing, and the effect is settled by whoever takes it next.
const maxSettleAttempts = 8

const settleTimeout = 10 * time.Second

// current reads r as it is now (nil when it is gone).
func (e *Engine) current(ctx context.Context, r *Record) (*Record, error) {
	snap, err := e.Ref(r.ID).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("effect: read %s: %w", r.ID, err)
	}
	return decode(snap)
}

// stillHeld reports whether r is still owed by this performer's try:
// nobody took it over since.
func (e *Engine) stillHeld(ctx context.Context, r *Record) (bool, error) {
	cur, err := e.current(ctx, r)
	if err != nil || cur == nil {
		return false, err
	}
	if cur.Tries != r.Tries || (cur.State != Owed && cur.State != Shadow) {
		return false, nil
	}
	r.updateTime = cur.updateTime
	return true, nil
}

// notOwed returns the effects of effs no record holds yet.
func (e *Engine) notOwed(ctx context.Context, effs []Effect) []Effect {
	if len(effs) == 0 {
		return nil
	}
	refs := make([]*firestore.DocumentRef, len(effs))
	for i, ef := range effs {
		refs[i] = e.Ref(ef.ID())
	}
	snaps, err := e.FS.GetAll(ctx, refs)
	if err != nil {
		return effs
	}
	var out []Effect
	for i, s := range snaps {
		if !s.Exists() {
			out = append(out, effs[i])
		}
	}
	return out
}

// confirm returns the owner write that records a performed publish, and
// the owner, or nil when the owner no longer awaits it (deleted, another
// incarnation, confirmed already). known is the owner as the decision left
// it; nil reads it.
func (e *Engine) confirm(ctx context.Context, r *Record, ref string, known *OwnerState, now time.Time) (*Write, Owner, error) {
	coll := r.Owner[:strings.IndexByte(r.Owner+"/", '/')]
	o := e.Owners[coll]
	if o == nil {
		return nil, nil, nil
	}
	if known == nil {
		var err error
		if known, _, err = e.awaited(ctx, r); err != nil || known == nil {
			return nil, nil, err
		}
	}
	ups := o.Confirm(known.Data, r, ref, now)
	if len(ups) == 0 {
		return nil, nil, nil
	}
	return &Write{Ref: e.FS.Doc(r.Owner), Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(known.Updated)}}, o, nil
}
