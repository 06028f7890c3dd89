// Package gate is the phase gate: it records processor completions for a
// game date in phaseN_completion/{game_date} and decides, exactly once per
// generation, that the next phase is triggered.
//
// Concurrency is optimistic: each attempt reads the document, computes the
// new fields, and writes them with an update-time precondition (a create for
// the first completion). A conflicting writer makes the write fail at once
// and the attempt re-reads; no lock is held between read and write. Firestore
// transactions on one hot document serialize behind locks and abort after
// five tries (the emulator takes 30–50 s for 20 at once); a failed
// precondition costs one round trip.
//
// The gate only decides. The write that makes a rule true claims the
// trigger (_trigger_state: claimed, its generation, trigger_id and exact
// message), advances the per-(phase, date) generation ledger, and owes, in
// the same atomic commit, every side effect of the decision as records of
// the effect log (internal/effect): the message, its alert, its history
// row. Alerts of other decisions (a failure, a block, a resolution) are
// owed the same way, in the commit that records their cause. The effect log
// performs them after the commit and confirms the trigger on this document
// (_triggered) in the same commit that records the publish done. A gate
// deleted and created again is a new incarnation: its effects never meet
// the old ones, and the ledger keeps its trigger_ids new.
package gate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/sethvargo/go-retry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/completion"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Effects records and performs what decisions owe.
type Effects interface {
	Decide(ctx context.Context, ws []effect.Write, effs []effect.Effect, after map[string]any) (effect.Made, error)
	Perform(ctx context.Context, m effect.Made) map[string]effect.Status
	Resume(ctx context.Context, id string) (effect.Status, error)
}

// Deps are what a Gate needs from outside.
type Deps struct {
	Firestore *firestore.Client
	Effects   Effects
	Keys      *dedup.Keys // nil: idempotency keys off
	Clock     clock.Clock
	Log       *slog.Logger
	Metrics   *metrics.Registry
	Gate      config.Gate
	// Checks runs the phase's data check before a trigger; nil when
	// BigQuery is off. BigQuery carries the per-date switch.
	Checks   DataChecker
	BigQuery config.BigQuery
	// HistoryTable, "" when history is off (shadow mode, no BigQuery),
	// gets a row per trigger and blocked check.
	HistoryTable string
	// Names places the gate's documents: the running system's collection
	// live, its shadow_ twin in shadow mode.
	Names config.Names
}

// Gate decides one phase transition.
type Gate struct {
	Deps
	phase *config.Phase
	norm  *completion.Normalizer
	// seeded: this instance saw the ledger's seed marker (SeedLedgerOnce);
	// later sweeps skip its read.
	seeded atomic.Bool
}

// New returns the gate of phase p.
func New(p *config.Phase, d Deps) *Gate {
	return &Gate{Deps: d, phase: p, norm: completion.NewNormalizer(p)}
}

// Phase returns the gate's configuration.
func (g *Gate) Phase() *config.Phase { return g.phase }

// Collection is the gate documents' collection (the effect log's owner
// name for them).
func (g *Gate) Collection() string { return g.Names.Coll(g.phase.Collection) }

// Source says who drives an evaluation; it names the trigger's parent.
type Source string

const (
	SourceEvent  Source = "event"
	SourceSweep  Source = "sweep"
	SourceManual Source = "manual"
)

// event is a completion as the gate records it.
type event struct {
	msg       *completion.Message
	name      string // normalised
	expected  bool
	messageID string
}

// Outcome reports what an evaluation did; the sweep and the demo print it.
type Outcome struct {
	Recorded  string // recorded | duplicate | failure_recorded | failure_ignored | unexpected | late | ""
	TriggerID string // set when this call published a trigger
	Reason    string
	Missing   []string
	Waiting   bool   // rule not met yet
	Blocked   string // the data check holds the trigger: blocked | error
}

// Handle is the entry point for a completion message.
func (g *Gate) Handle(ctx context.Context, m envelope.Message) error {
	msg, date, err := completion.Parse(m.Data)
	if err != nil {
		return err
	}
	logging.Annotate(ctx, "game_date", date.String(), "phase", g.phase.Name,
		"correlation_id", msg.CorrelationID, "processor", msg.ProcessorName)
	name, expected, err := g.norm.Normalize(msg.ProcessorName, msg.OutputTable)
	if err != nil {
		return err
	}
	ev := &event{msg: msg, name: name, expected: expected, messageID: m.ID}
	out, err := g.run(ctx, date, ev, SourceEvent, nil, nil)
	if err != nil {
		return err
	}
	g.Log.InfoContext(ctx, "completion handled", "normalised", name, "status", msg.Status,
		"outcome", out.Recorded, "trigger_id", out.TriggerID, "trigger_reason", out.Reason)
	if out.Recorded == "duplicate" {
		return errs.E(errs.Duplicate, "duplicate_completion", nil)
	}
	return nil
}

// Evaluate applies the rules to date without an event: the sweep's and the
// operator's way in. It finishes a trigger still owed. snap, when the
// caller has just read the gate document (the sweep's query), saves the
// first read; a stale one only costs a conflict and a re-read.
func (g *Gate) Evaluate(ctx context.Context, date gamedate.Date, src Source, snap *firestore.DocumentSnapshot) (Outcome, error) {
	return g.run(ctx, date, nil, src, snap, nil)
}

var errConflict = errors.New("gate document changed under us")

func (g *Gate) ref(date gamedate.Date) *firestore.DocumentRef {
	return g.Firestore.Collection(g.Collection()).Doc(date.String())
}

// ownerPath is the gate document's path as the effect log names owners.
func (g *Gate) ownerPath(date gamedate.Date) string { return g.Collection() + "/" + date.String() }

// LedgerCollection keeps, per phase and date, the highest generation ever
// claimed. It never expires: a date re-run after its gate document was
// deleted continues from it, so a trigger_id is never used twice.
const LedgerCollection = "orchestrator_generations"

func (g *Gate) ledgerRef(date gamedate.Date) *firestore.DocumentRef {
	return g.Firestore.Collection(g.Names.Coll(LedgerCollection)).Doc(docid.Encode(g.phase.Name + ":" + date.String()))
}

// run is one evaluation: the optimistic write loop that records and
// decides, then what the decision owes. res is the data check's result
// when a first pass asked for one.
func (g *Gate) run(ctx context.Context, date gamedate.Date, ev *event, src Source, known *firestore.DocumentSnapshot, res *datacheck.Result) (Outcome, error) {
	ref := g.ref(date)
	var keyRef *firestore.DocumentRef
	if ev != nil && g.Keys.Enabled(date.String()) {
		m := ev.msg
		keyRef = g.Keys.Ref("completion", g.phase.Name, ev.name, date.String(), m.ExecutionID, m.Status)
	}
	var (
		out   Outcome
		pl    *plan
		after *docState
		made  effect.Made
		// The ledger comes in the first read, at no extra RPC, unless the
		// caller read the gate itself (the sweep): then only a claim reads it.
		withLedger = known == nil
	)
	err := retry.Do(ctx, g.backoff(), func(ctx context.Context) error {
		var (
			st  *docState
			dup bool
			led *ledger
		)
		for {
			var ledgerSnap *firestore.DocumentSnapshot
			snaps := []*firestore.DocumentSnapshot{known}
			known = nil
			if snaps[0] == nil || withLedger {
				var err error
				if snaps, err = g.read(ctx, ref, keyRef, withLedger, date); err != nil {
					return err
				}
				if withLedger {
					ledgerSnap = snaps[len(snaps)-1]
					snaps = snaps[:len(snaps)-1]
				}
			}
			st = decodeState(g.phase, snaps[0])
			dup = len(snaps) > 1 && snaps[1].Exists()
			if withLedger {
				led = decodeLedger(ledgerSnap)
			}
			pl = g.plan(date, st, ev, dup, src, res, led)
			out = pl.outcome
			if !pl.needLedger {
				break
			}
			// The plan claims: read again with the ledger, which only a
			// claim needs (not a conflict: the attempt goes on).
			withLedger = true
		}
		if len(pl.updates) == 0 {
			after = st
			return nil
		}
		if dup {
			keyRef = nil // recorded before; the write below is decision work only
		}
		ws := []effect.Write{g.gateWrite(ref, st, pl.updates)}
		if keyRef != nil {
			ws = append(ws, effect.Write{Ref: keyRef, Create: g.Keys.Record(ev.messageID, g.Clock.Now())})
		}
		switch {
		case pl.generation > 0:
			ws = append(ws, g.ledgerWrite(date, led, pl.generation))
		case led != nil && !st.legacy && st.generation > led.generation:
			// A generation from before the ledger: carried forward while
			// the gate is written anyway.
			ws = append(ws, g.ledgerAtLeast(date, st.generation))
		}
		after = g.applied(st, pl, time.Time{})
		var err error
		made, err = g.Effects.Decide(ctx, ws, pl.effects, after.data)
		if errors.Is(err, effect.ErrConflict) {
			g.Metrics.Inc(g.phase.Name + ".write_conflict")
			return retry.RetryableError(fmt.Errorf("%w: %w", errConflict, err))
		}
		if err != nil {
			return err
		}
		after.updateTime = made.Decided
		return nil
	})
	if err != nil {
		if errors.Is(err, errConflict) {
			return out, errs.E(errs.Transient, "contention", err)
		}
		if ev != nil && status.Code(err) == codes.InvalidArgument {
			// The store refuses what this event would write (a field or the
			// document over Firestore's limits): no redelivery can succeed.
			return out, errs.E(errs.Invalid, "unstorable_completion", err)
		}
		return out, errs.E(errs.KindOf(err), "firestore", err)
	}
	// A replayed claim is finished as claimed below, never planned again:
	// a manual trigger planned again would claim the next generation.
	replayed := len(pl.updates) > 0 && made.Decided.IsZero() && !pl.claimed
	if pl.needCheck != nil || replayed {
		// The rules fired; the data check decides. It runs outside the write
		// loop (a query takes seconds), then the gate is planned again with
		// its result: whatever changed meanwhile, the claim stays exclusive.
		// Or the commit was replayed, and the gate changed since: planned
		// again as it is now. What the first pass recorded owes its
		// effects all the same.
		g.Effects.Perform(ctx, made)
		var r *datacheck.Result
		if pl.needCheck != nil {
			res := g.Checks.Run(ctx, pl.needCheck.check, pl.needCheck.tables, date)
			r = &res
		}
		more, err := g.run(ctx, date, nil, src, nil, r)
		more.Recorded = out.Recorded
		return more, err
	}
	done := g.Effects.Perform(ctx, made)
	if pl.claimed {
		return g.claimed(ctx, date, after, done[pl.triggerEffect], out, src)
	}
	if after.owesTrigger() {
		return g.finishOwed(ctx, date, after, ev, out, src)
	}
	return out, nil
}

// claimed reports on the trigger this evaluation claimed, whose publish
// the effect log just tried.
func (g *Gate) claimed(ctx context.Context, date gamedate.Date, st *docState, s effect.Status, out Outcome, src Source) (Outcome, error) {
	if !s.Done {
		return out, g.notPublished(st, s)
	}
	out.TriggerID, out.Reason, out.Missing = st.triggerID, st.reason, st.missing
	return g.lateArrival(ctx, date, st, out, src)
}

func errOrPending(s effect.Status) error {
	if s.Err != nil {
		return s.Err
	}
	return errors.New("held by another performer")
}

// Confirmed logs a trigger published and recorded (effect.Owner), once,
// whoever published it: the line the log-based metric phasegate_triggers
// counts.
func (g *Gate) Confirmed(ctx context.Context, r *effect.Record, msgID string) {
	var m Message
	_ = json.Unmarshal(r.Data, &m) // its claim wrote it
	g.Metrics.Inc(g.phase.Name + ".triggered")
	g.Log.InfoContext(ctx, "next phase triggered", "trigger_id", m.TriggerID, "trigger_reason", m.TriggerReason,
		"is_partial", m.IsPartial, "missing_processors", m.MissingProcessors, "pubsub_message_id", msgID, "mode", m.Mode,
		"game_date", m.GameDate, "phase", g.phase.Name)
}

// lateArrival claims the late_arrival generation a partial trigger owes
// once everything has arrived, when the phase asks for one. It is not
// partial, so this ends.
func (g *Gate) lateArrival(ctx context.Context, date gamedate.Date, st *docState, out Outcome, src Source) (Outcome, error) {
	if !g.phase.LateArrival || !st.partial || !st.allComplete(g.phase) {
		return out, nil
	}
	more, err := g.run(ctx, date, nil, src, nil, nil)
	if more.TriggerID != "" {
		out.TriggerID, out.Reason, out.Missing = more.TriggerID, more.Reason, more.Missing
	}
	return out, err
}

// finishOwed performs a trigger claimed earlier and not confirmed: its
// claimant died, its publish failed, or it is being published right now
// (then an event must not be acknowledged yet: if that attempt dies, this
// event's redelivery finishes the trigger once its lease ends).
func (g *Gate) finishOwed(ctx context.Context, date gamedate.Date, st *docState, ev *event, out Outcome, src Source) (Outcome, error) {
	s, err := g.Effects.Resume(ctx, effect.ID(triggerKey(st.triggerID), st.incarnation))
	if effect.IsNotFound(err) {
		// Claimed by a revision before the effect log: owe it now.
		s, err = g.adopt(ctx, date, st)
	}
	switch {
	case err != nil:
		return out, errs.E(errs.Transient, "firestore", err)
	case s.Done:
		if s.Outcome == effect.Performed { // by this call, not already
			out.TriggerID, out.Reason, out.Missing = st.triggerID, st.reason, st.missing
		}
		return g.lateArrival(ctx, date, st, out, src)
	case ev == nil:
		return out, nil // the sweep or an operator: nothing to hold back
	case s.Outcome == effect.NotTried:
		return out, errs.E(errs.Transient, "trigger_in_flight", fmt.Errorf("trigger %s is being published by another attempt", st.triggerID))
	}
	return out, g.notPublished(st, s)
}

// notPublished is the transient error of a trigger still owed after a try:
// its publish failed, and it is due again at once (the redelivery this
// error asks for publishes it, or the sweep does); or it went out and the
// record of it did not, and whoever takes it after its lease confirms it.
func (g *Gate) notPublished(st *docState, s effect.Status) error {
	if s.Outcome == effect.Performed {
		return errs.E(errs.Transient, "confirm_failed", fmt.Errorf("trigger %s published, not recorded: %w", st.triggerID, errOrPending(s)))
	}
	g.Metrics.Inc(g.phase.Name + ".publish_failed")
	return errs.E(errs.Transient, "publish_failed", fmt.Errorf("trigger %s not published: %w", st.triggerID, errOrPending(s)))
}

func (g *Gate) read(ctx context.Context, ref, key *firestore.DocumentRef, withLedger bool, date gamedate.Date) ([]*firestore.DocumentSnapshot, error) {
	refs := []*firestore.DocumentRef{ref}
	if key != nil {
		refs = append(refs, key)
	}
	if withLedger {
		refs = append(refs, g.ledgerRef(date))
	}
	snaps, err := g.Firestore.GetAll(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("read gate %s: %w", ref.Path, err)
	}
	return snaps, nil
}

// gateWrite writes updates conditionally on the document being unchanged
// since st was read (a create when it did not exist).
func (g *Gate) gateWrite(ref *firestore.DocumentRef, st *docState, updates []firestore.Update) effect.Write {
	if !st.exists {
		return effect.Write{Ref: ref, Create: nest(updates)}
	}
	return effect.Write{Ref: ref, Update: updates, Pre: []firestore.Precondition{firestore.LastUpdateTime(st.updateTime)}}
}

func (g *Gate) backoff() retry.Backoff {
	b := retry.NewExponential(15 * time.Millisecond)
	b = retry.WithCappedDuration(400*time.Millisecond, b)
	b = retry.WithJitterPercent(50, b)
	return retry.WithMaxRetries(uint64(max(g.Gate.WriteAttempts-1, 0)), b)
}

// applied returns the state after pl's updates were committed at ut.
func (g *Gate) applied(st *docState, pl *plan, ut time.Time) *docState {
	data := make(map[string]any, len(st.data)+len(pl.updates))
	for k, v := range st.data {
		data[k] = v
	}
	for k, v := range nest(pl.updates) {
		if m, ok := v.(map[string]any); ok {
			if old, ok := data[k].(map[string]any); ok {
				merged := make(map[string]any, len(old)+len(m))
				for kk, vv := range old {
					merged[kk] = vv
				}
				for kk, vv := range m {
					merged[kk] = vv
				}
				v = merged
			}
		}
		if v == firestore.Delete {
			delete(data, k)
			continue
		}
		data[k] = v
	}
	out := decodeData(g.phase, data, ut, st.created)
	if !st.exists {
		out.incarnation = pl.incarnation
	}
	return out
}

// nest turns dotted update paths into the nested map a Create takes.
func nest(updates []firestore.Update) map[string]any {
	out := map[string]any{}
	for _, u := range updates {
		parent, leaf, ok := cut(u.Path)
		if !ok {
			out[u.Path] = u.Value
			continue
		}
		m, _ := out[parent].(map[string]any)
		if m == nil {
			m = map[string]any{}
			out[parent] = m
		}
		m[leaf] = u.Value
	}
	return out
}

func cut(path string) (string, string, bool) {
	for i := 0; i < len(path); i++ {
		if path[i] == '.' {
			return path[:i], path[i+1:], true
		}
	}
	return path, "", false
}

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (g *Gate) triggerID(date gamedate.Date, gen int64) string {
	return g.phase.Name + ":" + date.String() + ":" + strconv.FormatInt(gen, 10)
}

// triggerKey is the effect key of a trigger's publish.
func triggerKey(triggerID string) string { return "trigger:" + triggerID }
