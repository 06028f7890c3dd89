package effect

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"cloud.google.com/go/firestore"

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

// Owe returns the writes that record effs as owed at now, held by their
// creator for each kind's lease. Decide commits them with a decision;
// callers that commit them themselves perform them with Perform.
func (e *Engine) Owe(now time.Time, effs ...Effect) []Write {
	return e.owe(now, "", false, effs...)
}

// Handoff returns the writes that record effs as owed and due at once,
// with no creator holding them: the sweep's lanes perform them (what an
// earlier revision's outbox owed, taken over).
func (e *Engine) Handoff(now time.Time, effs ...Effect) []Write {
	return e.owe(now, "", true, effs...)
}

func (e *Engine) owe(now time.Time, decision string, dueNow bool, effs ...Effect) []Write {
	ws := make([]Write, 0, len(effs))
	for _, ef := range effs {
		d := e.record(ef, now, dueNow)
		if decision != "" {
			d[fDecision] = decision
		}
		ws = append(ws, Write{Ref: e.Ref(ef.ID()), Create: d})
	}
	return ws
}

func (e *Engine) record(ef Effect, now time.Time, dueNow bool) map[string]any {
	due := now.Add(e.policy(ef.Kind).Lease)
	state := Owed
	if e.Shadow {
		state = Shadow
		if ef.Kind != Publish || ef.Owner == "" {
			due = time.Time{} // nothing will ever be done with it
		}
	}
	d := doc(ef, state, now, due)
	if dueNow && !due.IsZero() {
		d[fDue], d[fTries] = now, int64(0)
	}
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
// times, when they were owed (their creator's lease counts from it) and,
// when one is a publish, its owner as the commit left it (so that the
// confirm needs no read).
type Made struct {
	Effects []Effect
	Times   []time.Time
	At      time.Time
	Owner   *OwnerState
	// Decided is the deciding document's update time after the commit;
	// zero when it is not known (a replayed commit, the document changed
	// since): the caller reads it again.
	Decided time.Time
}

func made(effs []Effect, times []time.Time, at, decided time.Time, after map[string]any) Made {
	m := Made{Effects: effs, Times: times, At: at, Decided: decided}
	if after != nil {
		m.Owner = &OwnerState{Data: after, Updated: decided}
	}
	return m
}

// Decide commits a decision — ws, whose first write is the deciding
// document's — with the effects it owes, in one atomic commit, and returns
// what Perform needs. after is the deciding document's data as the commit
// leaves it (what a publish's confirm reads), nil when no publish owes
// a confirm to it.
//
// The Go client retries a Commit answered Unavailable, and a replay of
// one that was applied fails its preconditions: each effect record carries
// the attempt's token, so an applied commit is recognised as ours instead
// of being decided again. An effect whose record another decision already
// holds (an alert raised once before) is dropped, not a reason to refuse
// the decision. Any other conflict is the caller's: it reads again and
// decides again.
func (e *Engine) Decide(ctx context.Context, ws []Write, effs []Effect, after map[string]any) (Made, error) {
	now := e.Clock.Now()
	token := newToken()
	for attempt := 0; ; attempt++ {
		if len(ws)+len(effs) == 0 {
			return Made{At: now}, nil // every effect was owed before: nothing to decide
		}
		all := append(ws[:len(ws):len(ws)], e.owe(now, token, false, effs...)...)
		times, err := Commit(ctx, e.FS, all...)
		if err == nil {
			return made(effs, times[len(ws):], now, first(times, len(ws)), after), nil
		}
		if !errors.Is(err, ErrConflict) || len(effs) == 0 {
			return Made{}, err
		}
		var refs []*firestore.DocumentRef
		for _, ef := range effs {
			refs = append(refs, e.Ref(ef.ID()))
		}
		if len(ws) > 0 {
			refs = append(refs, ws[0].Ref)
		}
		snaps, rerr := e.FS.GetAll(ctx, refs)
		if rerr != nil {
			return Made{}, fmt.Errorf("effect: read after a conflict: %w", rerr)
		}
		var (
			keep   []Effect
			etimes []time.Time
		)
		applied := true
		for i, ef := range effs {
			s := snaps[i]
			applied = applied && s.Exists() && s.Data()[fDecision] == token
			etimes = append(etimes, s.UpdateTime)
			if !s.Exists() {
				keep = append(keep, ef)
			}
		}
		if applied {
			// Our own commit, applied and replayed. The deciding document
			// is as the commit left it unless it changed since; then
			// Decided is zero, and the caller reads it again.
			e.Metrics.Inc("effects.decision_replayed")
			at := snaps[0].CreateTime
			if len(ws) == 0 || snaps[len(effs)].UpdateTime.Equal(at) {
				return made(effs, etimes, now, first([]time.Time{at}, len(ws)), after), nil
			}
			return made(effs, etimes, now, time.Time{}, nil), nil
		}
		if len(keep) == len(effs) || attempt == 2 {
			return Made{}, err // the decision itself conflicted
		}
		e.Metrics.Inc("effects.owed_before")
		e.Log.InfoContext(ctx, "a decision owes effects another one owed before; it owes the rest",
			"owed_before", len(effs)-len(keep), "left", len(keep))
		effs = keep
	}
}

// first is the deciding document's update time among a commit's, zero
// when the commit had none (n, the decision's own writes, is 0).
func first(times []time.Time, n int) time.Time {
	if n == 0 || len(times) == 0 {
		return time.Time{}
	}
	return times[0]
}

// fDecision is the token of the commit that created an effect.
const fDecision = "decision"

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var errNotFound = errors.New("no such effect")

// IsNotFound reports whether err says an effect does not exist.
func IsNotFound(err error) bool { return errors.Is(err, errNotFound) }

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
