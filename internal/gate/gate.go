// Package gate is the phase gate: it records processor completions for a
// game date in phaseN_completion/{game_date} and triggers the next phase
// exactly once, resumably.
//
// Concurrency is optimistic: each attempt reads the document, computes the
// new fields, and writes them with an update-time precondition (a create for
// the first completion). A conflicting writer makes the write fail at once
// and the attempt re-reads; no lock is held between read and write. Firestore
// transactions on one hot document serialize behind locks and abort after
// five tries (the emulator takes 30–50 s for 20 at once); a failed
// precondition costs one round trip.
//
// The trigger goes through claim → publish → confirm. The claim is written
// with the completion that makes the rule true and carries the exact message
// and its trigger_id; the publish happens after that commit; the confirm
// sets _triggered. A failed publish releases the claim and returns a
// transient error, so the redelivery publishes; a claimant that dies leaves a
// claim that expires after the lease, and the next redelivery (which the
// missing ack guarantees) or the sweep publishes the same message again.
package gate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/sethvargo/go-retry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/completion"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/rules"
)

// Publisher sends a message to a topic and returns its id.
type Publisher interface {
	Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error)
}

// Alerter raises and resolves Slack alerts, at most once per key. Slack's
// failures never reach the gate; an error means the alert could not be
// recorded, and the event fails so that its redelivery raises it again.
type Alerter interface {
	Raise(ctx context.Context, a alert.Alert) error
	Resolve(ctx context.Context, a alert.Alert) error
}

// Deps are what a Gate needs from outside.
type Deps struct {
	Firestore *firestore.Client
	Publisher Publisher
	Alerts    Alerter
	Keys      *dedup.Keys // nil: idempotency keys off
	Clock     clock.Clock
	Log       *slog.Logger
	Metrics   *metrics.Registry
	Gate      config.Gate
	// Checks runs the phase's data check before a trigger; nil when
	// BigQuery is off. BigQuery carries the per-date switch.
	Checks   DataChecker
	BigQuery config.BigQuery
	// History, nil when off (shadow mode, no BigQuery), gets a row per
	// trigger and blocked check.
	History History
	// Names places the gate's documents: the running system's collection
	// live, its shadow_ twin in shadow mode.
	Names config.Names
	// Fault, when set, is called at each step of the trigger protocol; an
	// error stops the attempt right there, as a crash would: nothing is
	// released or rolled back. Tests use it to break the protocol.
	Fault func(step string) error
}

// Steps at which Deps.Fault is consulted.
const (
	StepAfterCommit  = "after_commit"  // the record (and any claim) is committed
	StepAfterPublish = "after_publish" // the trigger is published, not confirmed
)

func (g *Gate) fault(step string) error {
	if g.Fault == nil {
		return nil
	}
	if err := g.Fault(step); err != nil {
		return errs.E(errs.Transient, "fault_"+step, err)
	}
	return nil
}

// Gate decides one phase transition.
type Gate struct {
	Deps
	phase *config.Phase
	norm  *completion.Normalizer
}

// New returns the gate of phase p.
func New(p *config.Phase, d Deps) *Gate {
	return &Gate{Deps: d, phase: p, norm: completion.NewNormalizer(p)}
}

// Phase returns the gate's configuration.
func (g *Gate) Phase() *config.Phase { return g.phase }

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
// operator's way in. It finishes a trigger left claimed or released. snap,
// when the caller has just read the gate document (the sweep's query),
// saves the first read; a stale one only costs a conflict and a re-read.
func (g *Gate) Evaluate(ctx context.Context, date gamedate.Date, src Source, snap *firestore.DocumentSnapshot) (Outcome, error) {
	return g.run(ctx, date, nil, src, snap, nil)
}

var errConflict = errors.New("gate document changed under us")

// run is one evaluation: the optimistic write loop, then the trigger. res
// is the data check's result when a first pass asked for one.
func (g *Gate) run(ctx context.Context, date gamedate.Date, ev *event, src Source, known *firestore.DocumentSnapshot, res *datacheck.Result) (Outcome, error) {
	ref := g.Firestore.Collection(g.Names.Coll(g.phase.Collection)).Doc(date.String())
	var keyRef *firestore.DocumentRef
	if ev != nil && g.Keys.Enabled(date.String()) {
		m := ev.msg
		keyRef = g.Keys.Ref("completion", g.phase.Name, ev.name, date.String(), m.ExecutionID, m.Status)
	}
	var (
		out   Outcome
		plan  *plan
		after *docState
	)
	err := retry.Do(ctx, g.backoff(), func(ctx context.Context) error {
		snaps := []*firestore.DocumentSnapshot{known}
		known = nil
		if snaps[0] == nil {
			var err error
			if snaps, err = g.read(ctx, ref, keyRef); err != nil {
				return err
			}
		}
		st := decodeState(g.phase, snaps[0])
		dup := len(snaps) > 1 && snaps[1].Exists()
		plan = g.plan(date, st, ev, dup, src, res)
		out = plan.outcome
		if len(plan.updates) == 0 {
			after = st
			return nil
		}
		if dup {
			keyRef = nil // recorded before; the write below is trigger work only
		}
		ut, err := g.commit(ctx, ref, st, plan.updates, keyRef, ev)
		if errors.Is(err, errConflict) {
			g.Metrics.Inc(g.phase.Name + ".write_conflict")
			return retry.RetryableError(err)
		}
		if err != nil {
			return err
		}
		after = g.applied(st, plan, ut)
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
	if err := g.fault(StepAfterCommit); err != nil {
		return out, err
	}
	if err := g.afterRecord(ctx, date, ev, plan); err != nil {
		return out, errs.E(errs.Transient, "alert_not_recorded", err)
	}
	if err := g.checkAlerts(ctx, date, after, plan.dataAlerts); err != nil {
		// The block is recorded; the redelivery or the sweep asks again.
		return out, errs.E(errs.Transient, "alert_not_recorded", err)
	}
	if plan.needCheck != nil {
		// The rules fired; the data check decides. It runs outside the write
		// loop (a query takes seconds), then the gate is planned again with
		// its result: whatever changed meanwhile, the claim stays exclusive.
		r := g.Checks.Run(ctx, plan.needCheck.check, plan.needCheck.tables, date)
		more, err := g.run(ctx, date, nil, src, nil, &r)
		more.Recorded = out.Recorded
		return more, err
	}
	if plan.claimed {
		out, err := g.finishClaim(ctx, date, ref, after, out, src)
		if err == nil {
			g.resolveCheck(ctx, date, plan.dataAlerts)
		}
		return out, err
	}
	if after.liveClaim(g.Clock.Now()) && ev != nil {
		// Someone else is publishing. Do not ack yet: if that attempt dies,
		// this event's redelivery finishes the trigger once the lease ends.
		return out, errs.E(errs.Transient, "trigger_in_flight", fmt.Errorf("trigger %s claimed until %s", after.triggerID, after.expires.Format(time.RFC3339)))
	}
	if err := g.resolveIfHealed(ctx, date, ref, after); err != nil {
		return out, errs.E(errs.Transient, "alert_not_recorded", err)
	}
	return out, nil
}

// finishClaim publishes and confirms the trigger this evaluation claimed,
// then settles what a confirmed trigger can leave owed: the confirm may be
// the gate's last write, and the sweep no longer visits a confirmed gate.
func (g *Gate) finishClaim(ctx context.Context, date gamedate.Date, ref *firestore.DocumentRef, claimed *docState, out Outcome, src Source) (Outcome, error) {
	out, err := g.publishAndConfirm(ctx, date, ref, claimed, out)
	if err != nil {
		return out, err
	}
	confirmed := *claimed
	confirmed.state = statePublished
	// A late_arrival trigger's confirm resolves the partial one's alert.
	if err := g.resolveIfHealed(ctx, date, ref, &confirmed); err != nil {
		return out, errs.E(errs.Transient, "alert_not_recorded", err)
	}
	if !g.phase.LateArrival || !confirmed.partial || !confirmed.allComplete(g.phase) {
		return out, nil
	}
	// This resumed a partial trigger that everything has since arrived for:
	// the late_arrival generation is owed now. It is not partial, so this
	// recursion ends.
	more, err := g.run(ctx, date, nil, src, nil, nil)
	if more.TriggerID != "" {
		out.TriggerID, out.Reason, out.Missing = more.TriggerID, more.Reason, more.Missing
	}
	return out, err
}

func (g *Gate) read(ctx context.Context, ref, key *firestore.DocumentRef) ([]*firestore.DocumentSnapshot, error) {
	refs := []*firestore.DocumentRef{ref}
	if key != nil {
		refs = append(refs, key)
	}
	snaps, err := g.Firestore.GetAll(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("read gate %s: %w", ref.Path, err)
	}
	return snaps, nil
}

// commit writes updates conditionally on the document being unchanged since
// st was read, together with the idempotency key when there is one.
func (g *Gate) commit(ctx context.Context, ref *firestore.DocumentRef, st *docState, updates []firestore.Update,
	key *firestore.DocumentRef, ev *event) (time.Time, error) {
	write := func(tx *firestore.Transaction) error {
		if !st.exists {
			return tx.Create(ref, nest(updates))
		}
		return tx.Update(ref, updates, firestore.LastUpdateTime(st.updateTime))
	}
	if key == nil {
		var wr *firestore.WriteResult
		var err error
		if !st.exists {
			wr, err = ref.Create(ctx, nest(updates))
		} else {
			wr, err = ref.Update(ctx, updates, firestore.LastUpdateTime(st.updateTime))
		}
		if err != nil {
			return time.Time{}, classifyWrite(err)
		}
		return wr.UpdateTime, nil
	}
	// Two documents in one atomic commit: a transaction without reads holds
	// no locks; the preconditions do the concurrency control.
	var resp firestore.CommitResponse
	err := g.Firestore.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		if err := write(tx); err != nil {
			return err
		}
		return tx.Create(key, g.Keys.Record(ev.messageID, g.Clock.Now()))
	}, firestore.MaxAttempts(1), firestore.WithCommitResponseTo(&resp))
	if err != nil {
		return time.Time{}, classifyWrite(err)
	}
	wrs, err := resp.WriteResults()
	if err != nil || len(wrs) == 0 {
		return time.Time{}, nil // unknown update time: the confirm falls back to a read
	}
	return wrs[0].UpdateTime, nil
}

// classifyWrite turns a lost race into errConflict; anything else is the
// store's failure.
func classifyWrite(err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.AlreadyExists, codes.NotFound, codes.Aborted:
		return fmt.Errorf("%w: %v", errConflict, err)
	}
	return fmt.Errorf("write gate: %w", err)
}

func (g *Gate) backoff() retry.Backoff {
	b := retry.NewExponential(15 * time.Millisecond)
	b = retry.WithCappedDuration(400*time.Millisecond, b)
	b = retry.WithJitterPercent(50, b)
	return retry.WithMaxRetries(uint64(max(g.Gate.WriteAttempts-1, 0)), b)
}

// plan is the change one evaluation makes.
type plan struct {
	updates []firestore.Update
	outcome Outcome
	claimed bool   // this write claims the trigger
	claimID string // the claimed trigger's id
	token   string // the claim's token
	newFail bool
	// needCheck: the rules fired and the data check must run first.
	needCheck  *checkNeed
	dataAlerts *dataCheckAlerts
	newUnexp   bool
	completed  int // expected processors completed after this event
	// healedFailure: a processor that had reported a failure completed.
	healedFailure bool
}

func (pl *plan) set(path string, v any) {
	pl.updates = append(pl.updates, firestore.Update{Path: path, Value: v})
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
	return decodeData(g.phase, data, ut)
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

// Message is the trigger the next phase receives (CONTRACT §5).
type Message struct {
	GameDate                string   `json:"game_date"`
	CorrelationID           string   `json:"correlation_id"`
	TriggerSource           string   `json:"trigger_source"`
	TriggeredBy             string   `json:"triggered_by"`
	ParentProcessor         string   `json:"parent_processor"`
	UpstreamProcessorsCount int      `json:"upstream_processors_count"`
	ExpectedProcessors      []string `json:"expected_processors"`
	CompletedProcessors     []string `json:"completed_processors"`
	MissingProcessors       []string `json:"missing_processors"`
	IsPartial               bool     `json:"is_partial"`
	TriggerReason           string   `json:"trigger_reason"`
	TriggerID               string   `json:"trigger_id"`
	Mode                    string   `json:"mode"`
	Timestamp               string   `json:"timestamp"`
	// The data check (CONTRACT §10): verified when it passed with every
	// table holding rows; DataCheck says what was checked (passed,
	// degraded, monitor_missing, proceeded_after_max_wait, skipped_manual,
	// skipped_late_arrival, off, none).
	DataFreshnessVerified bool             `json:"data_freshness_verified"`
	MissingTables         []string         `json:"missing_tables"`
	TableRowCounts        map[string]int64 `json:"table_row_counts"`
	DataCheck             string           `json:"data_check"`
}

func (g *Gate) message(date gamedate.Date, d rules.Decision, gen int64, corrID string, src Source, now time.Time, v checkVerdict) Message {
	parent := fmt.Sprintf("Phase%dOrchestrator", g.phase.Number)
	if src == SourceSweep {
		parent += "Sweep"
	}
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return Message{
		GameDate: date.String(), CorrelationID: corrID, TriggerSource: "orchestrator",
		TriggeredBy: g.phase.Name + "_orchestrator", ParentProcessor: parent,
		UpstreamProcessorsCount: len(d.Completed), ExpectedProcessors: nonNil(d.Expected),
		CompletedProcessors: nonNil(d.Completed), MissingProcessors: nonNil(d.Missing),
		IsPartial: d.IsPartial, TriggerReason: d.Reason, TriggerID: g.triggerID(date, gen),
		Mode: d.Mode, Timestamp: now.UTC().Format(time.RFC3339),
		DataFreshnessVerified: v.verified, MissingTables: nonNil(v.missing), TableRowCounts: nonNilCounts(v.counts),
		DataCheck: v.status,
	}
}

func nonNilCounts(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}
