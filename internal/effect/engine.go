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

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Sink performs one kind of effect at its destination.
type Sink interface {
	// Perform tries r once within ctx.
	Perform(ctx context.Context, r *Record) Result
	// Lanes are the destinations the sweep queries for this sink.
	Lanes() []string
}

// Outcome is what a destination made of a try.
type Outcome int

const (
	NotTried    Outcome = iota // no try was made (held by another, waiting)
	Performed                  // it took the effect
	Unavailable                // it is down or did not answer in time: later
	NotAsked                   // it was never reached (an open breaker): not a try
	Refused                    // it refused the effect: retrying as is cannot help
)

func (o Outcome) String() string {
	return [...]string{"not_tried", "performed", "unavailable", "not_asked", "refused"}[o]
}

// Result is one try's outcome.
type Result struct {
	Outcome Outcome
	Ref     string // the destination's answer (a message id)
	Err     error
	// Ambiguous: the request may have reached the destination although the
	// try did not see it succeed (a timeout after sending).
	Ambiguous bool
}

// Owner records a performed publish on the document that decided it.
type Owner interface {
	// Confirm returns the updates that record r published, with ref as
	// its message id, on its owner as it is now (data of the same
	// incarnation as r), or nil when the owner no longer awaits r. It is
	// pure: a commit that lost a race asks again.
	Confirm(data map[string]any, r *Record, ref string, now time.Time) []firestore.Update
	// Confirmed is told once the commit that recorded r done confirmed its
	// owner: the one moment a trigger or batch completion is known out and
	// recorded, whoever performed it (the logs and metrics of it).
	Confirmed(ctx context.Context, r *Record, ref string)
}

// Alarms are the alerts the engine raises itself, as Slack effects.
type Alarms interface {
	// Failing: a publish failed failures times in a row.
	Failing(r *Record, failures int64) Effect
	// Recovered resolves Failing once the publish went out.
	Recovered(r *Record, failing Effect) Effect
	// GaveUp: r's destination refused it for good.
	GaveUp(r *Record) Effect
}

// Policy is how one kind of effect is performed.
type Policy struct {
	// Lease is how long a performer holds an effect it took (or created):
	// longer than Budget, so that nobody takes over a try still running.
	Lease time.Duration
	// Budget bounds the first try, made inside the request that decided;
	// RetryBudget any later one (the sweep's, a redelivery's).
	Budget, RetryBudget time.Duration
	// Backoff is how long an effect waits after its n-th failed try in a
	// row (n ≥ 1).
	Backoff func(n int64) time.Duration
	// KeepRefused is how long a destination may keep refusing an effect
	// before it is given up; negative: never (a message stays owed).
	KeepRefused time.Duration
	// AlertAfter failed tries in a row raise the Failing alarm (0: never).
	AlertAfter int64
}

// ShadowRef is the message id a shadow phasegate records for a publish it
// did not make.
const ShadowRef = "shadow-unpublished"

// Engine records and performs effects.
type Engine struct {
	FS       *firestore.Client
	Names    config.Names
	Sinks    map[Kind]Sink
	Owners   map[string]Owner // by the owner document's collection
	Alarms   Alarms
	Policies map[Kind]Policy
	// Retention is how long a settled record is kept (its _expires_at).
	Retention time.Duration
	// Shadow records effects and performs none (CONTRACT §9): a publish is
	// confirmed on its owner with ShadowRef, nothing is sent.
	Shadow   bool
	Clock    clock.Clock
	Log      *slog.Logger
	Metrics  *metrics.Registry
	Instance string
}

func (e *Engine) coll() *firestore.CollectionRef { return e.FS.Collection(e.Names.Coll(Collection)) }

// Ref is the document of effect id.
func (e *Engine) Ref(id string) *firestore.DocumentRef { return e.coll().Doc(id) }

func (e *Engine) policy(k Kind) Policy {
	p := e.Policies[k]
	if p.Lease <= 0 {
		p.Lease = time.Minute
	}
	if p.Budget <= 0 || p.Budget >= p.Lease {
		p.Budget = p.Lease / 2
	}
	if p.RetryBudget <= 0 || p.RetryBudget >= p.Lease {
		p.RetryBudget = p.Budget
	}
	if p.Backoff == nil {
		p.Backoff = func(int64) time.Duration { return 0 }
	}
	return p
}

// Owe returns the writes that record effs as owed at now, to be committed
// with the decision that owes them. The caller holds each for its kind's
// lease, and performs them with Perform after the commit.
func (e *Engine) Owe(now time.Time, effs ...Effect) []Write {
	ws := make([]Write, 0, len(effs))
	for _, ef := range effs {
		ws = append(ws, Write{Ref: e.Ref(ef.ID()), Create: e.record(ef, now)})
	}
	return ws
}

func (e *Engine) record(ef Effect, now time.Time) map[string]any {
	due := now.Add(e.policy(ef.Kind).Lease)
	state := Owed
	if e.Shadow {
		state = Shadow
		if ef.Kind != Publish || ef.Owner == "" {
			due = time.Time{} // nothing will ever be done with it
		}
	}
	d := doc(ef, state, now, due)
	if exp, ok := e.Names.Expires(now); ok {
		d[config.ExpiresField] = exp
	}
	return d
}

// OwnerState is an owner document as a decision's commit left it.
type OwnerState struct {
	Data    map[string]any
	Updated time.Time
}

// Made is what a decision's commit created: its effects, their update
// times (from Commit) and, when one is a publish, its owner as the commit
// left it (so that the confirm needs no read).
type Made struct {
	Effects []Effect
	Times   []time.Time
	Owner   *OwnerState
}

// Status is what became of one effect.
type Status struct {
	Outcome Outcome
	Done    bool   // performed or settled as done
	Pending bool   // someone else holds it, or it waits for its backoff
	Ref     string // the destination's answer
	Err     error
}

// Perform performs the effects of m, each on its own budget and
// concurrently, and returns when all are settled: nothing outlives the
// request that calls it. It returns each effect's status by id.
func (e *Engine) Perform(ctx context.Context, m Made) map[string]Status {
	now := e.Clock.Now()
	out := make(map[string]Status, len(m.Effects))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i, ef := range m.Effects {
		r := &Record{ID: ef.ID(), Effect: ef, State: Owed, CreatedAt: now, Tries: 1, LastTry: now}
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

var errNotFound = errors.New("no such effect")

// IsNotFound reports whether err says an effect does not exist.
func IsNotFound(err error) bool { return errors.Is(err, errNotFound) }

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
	wr, err := e.Ref(r.ID).Update(ctx, []firestore.Update{
		{Path: fDue, Value: now.Add(e.policy(r.Kind).Lease)},
		{Path: fTries, Value: r.Tries + 1},
		{Path: fLastTry, Value: now},
		{Path: fPerformedBy, Value: e.Instance},
	}, firestore.LastUpdateTime(r.updateTime))
	if err := classify(err); errors.Is(err, ErrConflict) {
		return Status{Pending: true}, nil // another performer took it first
	} else if err != nil {
		return Status{}, err
	}
	r.Tries++
	r.updateTime = wr.UpdateTime
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
// decision left it, nil to read it when confirming.
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
	var res Result
	switch {
	case e.Shadow:
		res = Result{Outcome: Performed, Ref: ShadowRef}
	case e.Sinks[r.Kind] == nil:
		res = Result{Outcome: NotAsked, Err: fmt.Errorf("no %s destination is configured", r.Kind)}
	default:
		p := e.policy(r.Kind)
		budget := p.Budget
		if r.Tries > 1 {
			budget = p.RetryBudget
		}
		deadline := time.Now().Add(budget)
		dl, capped := ctx.Deadline()
		capped = capped && dl.Before(deadline) // the caller's budget (a sweep's) ends first
		if capped {
			deadline = dl
		}
		tctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		res = e.Sinks[r.Kind].Perform(tctx, r)
		cut := ctx.Err() != nil || (capped && !time.Now().Before(dl))
		cancel()
		if res.Outcome == Unavailable && cut {
			// The caller's budget ran out, not the destination's patience:
			// no try, but it may have been delivered.
			res.Outcome = NotAsked
		}
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

// settle records res for r, with the confirm of a publish on its owner and
// whatever alarm follows, and performs that alarm.
func (e *Engine) settle(ctx context.Context, r *Record, res Result, owner *OwnerState, log *slog.Logger) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	now := e.Clock.Now()
	p := e.policy(r.Kind)
	st := Status{Outcome: res.Outcome, Ref: res.Ref, Err: res.Err}
	ups := []firestore.Update{{Path: fSettled, Value: r.Tries}}
	if res.Ambiguous {
		ups = append(ups, firestore.Update{Path: fAmbiguous, Value: r.Ambiguous + 1})
	}
	if res.Err != nil {
		ups = append(ups, firestore.Update{Path: fLastError, Value: truncate(res.Err.Error(), 500)})
	}
	var more []Effect // alarms this outcome raises, created in the same commit
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
		if p.AlertAfter > 0 && failures >= p.AlertAfter && !r.Alerted && e.Alarms != nil {
			more = append(more, e.Alarms.Failing(r, failures))
			ups = append(ups, firestore.Update{Path: fAlerted, Value: true})
		}
		st.Pending = true
		e.Metrics.Inc("effects.try_failed." + string(r.Kind))
		log.WarnContext(ctx, "effect not performed; it stays owed", "outcome", res.Outcome.String(), "failures", failures,
			"next_try", now.Add(p.Backoff(failures)).Format(time.RFC3339), "ambiguous", res.Ambiguous, "error", errText(res.Err))
	case NotAsked:
		// Not a try: due again at once, for the next sweep.
		ups = append(ups, firestore.Update{Path: fDue, Value: now})
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
		if res.Outcome == Performed && r.Kind == Publish && r.Owner != "" {
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
			// The owner changed since it was read (another completion
			// recorded), or the effect did: a performer took it over.
			held, err := e.stillHeld(ctx, r)
			if err != nil {
				return st, err
			}
			if !held {
				e.Metrics.Inc("effects.lease_lost")
				log.WarnContext(ctx, "effect taken over by another performer before its outcome was recorded",
					"outcome", res.Outcome.String())
				return st, nil
			}
			owner = nil
			continue
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
		if len(more) > 0 {
			e.Perform(ctx, Made{Effects: more, Times: times[len(times)-len(more):]})
		}
		return st, nil
	}
}

// maxSettleAttempts bounds the re-reads of a contended owner: a gate takes
// a few writes a minute, so losing this many races in a row means the
// store is failing, and the effect is settled by whoever takes it next.
const maxSettleAttempts = 8

const settleTimeout = 10 * time.Second

// stillHeld reports whether r is still owed by this performer's try:
// nobody took it over since.
func (e *Engine) stillHeld(ctx context.Context, r *Record) (bool, error) {
	snap, err := e.Ref(r.ID).Get(ctx)
	if err != nil {
		return false, fmt.Errorf("effect: read %s: %w", r.ID, err)
	}
	cur, err := decode(snap)
	if err != nil {
		return false, err
	}
	if cur.Tries != r.Tries || (cur.State != Owed && cur.State != Shadow) {
		return false, nil
	}
	r.updateTime = cur.updateTime
	return true, nil
}

// confirm returns the owner write that records a performed publish, and
// the owner, or nil when the owner no longer awaits it (deleted, another
// incarnation, confirmed already). known is the owner as the decision left
// it; nil reads it.
func (e *Engine) confirm(ctx context.Context, r *Record, ref string, known *OwnerState, now time.Time) (*Write, Owner, error) {
	own := e.FS.Doc(r.Owner)
	coll := r.Owner[:strings.IndexByte(r.Owner+"/", '/')]
	o := e.Owners[coll]
	if o == nil {
		return nil, nil, nil
	}
	if known == nil {
		snap, err := own.Get(ctx)
		if status.Code(err) == codes.NotFound {
			return nil, nil, nil // deleted: the message went out all the same
		}
		if err != nil {
			return nil, nil, fmt.Errorf("effect: read owner %s: %w", r.Owner, err)
		}
		if Incarnation(snap.Data(), snap.CreateTime) != r.Incarnation {
			return nil, nil, nil // re-created since: not its trigger
		}
		known = &OwnerState{Data: snap.Data(), Updated: snap.UpdateTime}
	}
	ups := o.Confirm(known.Data, r, ref, now)
	if len(ups) == 0 {
		return nil, nil, nil
	}
	return &Write{Ref: own, Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(known.Updated)}}, o, nil
}

// isAlarm reports whether key is one of the engine's own alarms, which
// raise nothing further when they fail.
func isAlarm(key string) bool { return strings.HasPrefix(key, AlarmPrefix) }

// AlarmPrefix starts the key of every alarm effect.
const AlarmPrefix = "alarm:"

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
