package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/sethvargo/go-retry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/history"
)

// Message is the batch completion (CONTRACT §5): a completion message (§2)
// from the PredictionCoordinator.
type Message struct {
	ProcessorName string   `json:"processor_name"`
	Phase         string   `json:"phase"`
	ExecutionID   string   `json:"execution_id"`
	CorrelationID string   `json:"correlation_id"`
	GameDate      string   `json:"game_date"`
	Status        string   `json:"status"`
	RecordCount   int64    `json:"record_count"`
	Timestamp     string   `json:"timestamp"`
	Metadata      Metadata `json:"metadata"`
}

// Metadata counts distinct players. completed_predictions and
// total_predictions are the same sum (the predictions of the players that
// completed); both names are kept for the consumers that read either.
type Metadata struct {
	BatchID              string  `json:"batch_id"`
	ExpectedPlayers      int64   `json:"expected_players"`
	CompletedPlayers     int64   `json:"completed_players"`
	TotalPredictions     int64   `json:"total_predictions"`
	CompletionPct        float64 `json:"completion_pct"`
	CompletedPredictions int64   `json:"completed_predictions"`
	StallCompleted       bool    `json:"stall_completed,omitempty"`
	StallReason          string  `json:"stall_reason,omitempty"`
}

// Completion statuses and reasons.
const (
	StatusSuccess = "success"
	StatusPartial = "partial"

	ReasonAllPlayers = "all_players"
	ReasonStalled    = "stalled"
	ReasonMaxAge     = "max_age"
)

// Source says who drives a completion attempt.
type Source string

const (
	SourceEvent Source = "event"
	SourceSweep Source = "sweep"
)

// Actions a completion attempt reports.
const (
	ActionNone      = ""          // not complete, nothing to do
	ActionCompleted = "completed" // this call published the completion
	ActionResumed   = "resumed"   // this call published a completion someone else had claimed
	ActionInFlight  = "in_flight" // another attempt holds the claim
	ActionDone      = "done"      // already complete
)

type finishResult struct {
	Action  string
	Status  string
	Reason  string
	Players int64
}

// complete is the event path's attempt, run when the fast path's estimate
// reaches expected_players. Concurrent attempts of one instance share one
// run: near the end many events see the estimate reach the target at once,
// and all but one would only lose the claim race.
func (t *Tracker) complete(ctx context.Context, m *meta, dup bool) (Outcome, error) {
	if !t.Config.Owns(config.BatchPhase) {
		return Outcome{}, nil // the running coordinator completes its own batches
	}
	var r finishResult
	var err error
	for range 2 {
		ran := false
		var v any
		v, err, _ = t.flight.Do(m.batchID, func() (any, error) {
			ran = true
			t.Metrics.Inc("batch.exact_checks")
			return t.finish(context.WithoutCancel(ctx), m.batchID, m, SourceEvent)
		})
		r, _ = v.(finishResult)
		// A run this call joined may have taken its snapshot before this
		// call's write: "not complete" from it says nothing about this
		// write. A run started after it returned began after the write.
		if ran || err != nil || r.Action != ActionNone {
			break
		}
	}
	out := Outcome{Completed: r.Action == ActionCompleted || r.Action == ActionResumed, Status: r.Status}
	if err == nil && r.Action == ActionInFlight && dup {
		// This may be the claimant's own redelivery, the one event left to
		// finish a crashed attempt before the sweep does: do not ack yet.
		err = errs.E(errs.Transient, "completion_in_flight", errors.New("another attempt is publishing the batch completion"))
	}
	return out, err
}

var errConflict = errors.New("batch document changed under us")

// completionKey is the effect key of a batch's completion message.
func completionKey(batchID string) string { return "completion:" + batchID }

// finish decides, once per batch, that it is complete: the claim writes
// the exact count (from one consistent snapshot) and the whole message on
// the batch document, conditional on its update time, and owes in the same
// commit the message, the stall alert of a partial completion, its history
// row, and the capped legacy array brought up to date. The effect log
// publishes it and confirms is_complete. A completion claimed and not
// confirmed (its claimant died, its publish failed) is performed again
// from its record, never decided again.
func (t *Tracker) finish(ctx context.Context, batchID string, m *meta, src Source) (finishResult, error) {
	ref := t.batchRef(batchID)
	var (
		res        finishResult
		made       effect.Made
		completion string // the completion message's effect
		claimed    *state
	)
	err := retry.Do(ctx, t.backoff(), func(ctx context.Context) error {
		made, claimed = effect.Made{}, nil
		tl, err := t.take(ctx, batchID, src == SourceSweep)
		if err != nil {
			return err
		}
		if m != nil {
			m.observe(tl)
		}
		st, now := tl.st, t.Clock.Now()
		res = finishResult{Players: tl.players}
		switch {
		case st.done():
			res.Action = ActionDone
			return nil
		case st.owed():
			claimed, res.Status, res.Reason = st, st.status, st.reason
			return nil
		}
		status, reason := t.decide(tl, now, src)
		if status == "" {
			return nil
		}
		msg := t.message(tl, status, reason, now)
		payload, _ := json.Marshal(msg) // plain fields: cannot fail
		ups := []firestore.Update{
			{Path: FieldState, Value: stateClaimed}, {Path: FieldExpires, Value: now.Add(t.Config.Gate.ClaimLease)},
			{Path: FieldClaimedBy, Value: string(src)}, {Path: FieldToken, Value: firestore.Delete},
			{Path: FieldPayload, Value: string(payload)}, {Path: FieldStatus, Value: status}, {Path: FieldReason, Value: reason},
			{Path: FieldCountedAt, Value: tl.countedAt}, {Path: FieldCountedLen, Value: int64(len(st.array))},
			{Path: FieldCompletedCount, Value: tl.players}, {Path: FieldTotalPredictions, Value: tl.totalPredictions},
			{Path: FieldUpdatedAt, Value: now},
		}
		if status == StatusPartial {
			ups = append(ups, firestore.Update{Path: FieldStallCompleted, Value: true}, firestore.Update{Path: FieldStallReason, Value: reason})
		}
		if exp, ok := t.Config.Names().Expires(now); ok {
			ups = append(ups, firestore.Update{Path: config.ExpiresField, Value: exp})
		}
		st.payload, st.status, st.reason = string(payload), status, reason
		effs := t.owedByCompletion(ref, st, msg, now)
		if ModeFor(t.Config.Batch, batchID) == ModeDualSubReads {
			// The completion's commit brings the capped array up to date
			// with every completion it counted (all committed before the
			// count's read): it is the last write most batches get.
			more, arr, _, err := t.catchUp(ctx, batchID, st, tl.countedAt)
			if err != nil {
				return err
			}
			ups, effs = append(ups, more...), append(effs, arr...)
		}
		// What the confirm reads of the document this commit leaves.
		data := map[string]any{FieldState: stateClaimed, FieldPayload: string(payload), FieldMessageIDs: anyList(st.msgIDs)}
		made, err = t.Effects.Decide(ctx, []effect.Write{{Ref: ref, Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(st.updateTime)}}},
			effs, data)
		if errors.Is(err, effect.ErrConflict) {
			t.Metrics.Inc("batch.write_conflict")
			return retry.RetryableError(fmt.Errorf("%w: %w", errConflict, err))
		}
		if err != nil {
			return err
		}
		completion = effs[0].ID()
		res.Action, res.Status, res.Reason = ActionCompleted, status, reason
		return nil
	})
	switch {
	case errors.Is(err, errNoBatch):
		return res, errs.E(errs.Transient, "batch_not_found", err)
	case errors.Is(err, errConflict):
		return res, errs.E(errs.Transient, "contention", err)
	case err != nil:
		return res, errs.E(errs.KindOf(err), "firestore", err)
	}
	var s effect.Status
	switch {
	case res.Action == ActionCompleted:
		s = t.Effects.Perform(ctx, made)[completion]
	case claimed != nil:
		s, err = t.Effects.Resume(ctx, effect.ID(completionKey(batchID), claimed.incarnation))
		if effect.IsNotFound(err) {
			// Claimed by a revision before the effect log: owe it now.
			s, err = t.adoptClaim(ctx, ref, claimed)
		}
		if err != nil {
			return res, errs.E(errs.Transient, "firestore", err)
		}
		switch {
		case s.Done && s.Outcome == effect.Performed:
			res.Action = ActionResumed
		case s.Done: // by another attempt, since this one read the batch
			res.Action = ActionDone
			if m != nil {
				m.setComplete()
			}
			return res, nil
		default:
			res.Action = ActionInFlight
		}
	default:
		if res.Action == ActionDone && m != nil {
			m.setComplete()
		}
		return res, nil
	}
	if !s.Done {
		if s.Outcome == effect.NotTried {
			return res, nil // held by another performer: in flight
		}
		t.Metrics.Inc("batch.publish_failed")
		return res, errs.E(errs.Transient, "publish_failed", fmt.Errorf("batch completion not published: %w", errOrNil(s.Err)))
	}
	if m != nil {
		m.setComplete()
	}
	return res, nil
}

// Confirmed logs a batch completion published and recorded
// (effect.Owner), once, whoever published it.
func (t *Tracker) Confirmed(ctx context.Context, r *effect.Record, msgID string) {
	var msg Message
	_ = json.Unmarshal(r.Data, &msg) // its claim wrote it
	t.Metrics.Inc("batch.completed")
	t.Log.InfoContext(ctx, "prediction batch completed", "batch_id", msg.Metadata.BatchID, "game_date", msg.GameDate,
		"status", msg.Status, "completed_players", msg.Metadata.CompletedPlayers, "expected_players", msg.Metadata.ExpectedPlayers,
		"pubsub_message_id", msgID, "stall_reason", msg.Metadata.StallReason)
}

func errOrNil(err error) error {
	if err == nil {
		return errors.New("not published yet")
	}
	return err
}

// owedByCompletion are the effects a batch's completion owes: its message,
// a partial completion's alert, its history row.
func (t *Tracker) owedByCompletion(ref *firestore.DocumentRef, st *state, msg Message, now time.Time) []effect.Effect {
	batchID := msg.Metadata.BatchID
	effs := []effect.Effect{{Kind: effect.Publish, Key: completionKey(batchID), Incarnation: st.incarnation,
		Destination: t.Config.Topics.BatchComplete, Data: []byte(st.payload), Owner: t.ownerPath(batchID),
		Attributes: map[string]string{"batch_id": batchID, "game_date": msg.GameDate,
			"correlation_id": msg.CorrelationID, "status": msg.Status, "execution_id": msg.ExecutionID},
		GameDate: msg.GameDate, Subject: batchID}}
	if msg.Status == StatusPartial {
		effs = append(effs, alert.Raise(t.stallAlert(msg), st.incarnation))
	}
	if t.HistoryTable != "" {
		effs = append(effs, history.Effect(t.historyRow(st, msg, now), t.HistoryTable, st.incarnation))
	}
	return effs
}

func (t *Tracker) stallAlert(msg Message) alert.Alert {
	return alert.Alert{
		Key: "batch:" + msg.Metadata.BatchID + ":" + msg.Metadata.StallReason, Severity: alert.Error,
		Title: fmt.Sprintf("batch going on without data: %s (%s)", msg.Metadata.BatchID, msg.Metadata.StallReason),
		Phase: "phase_5_predictions", GameDate: msg.GameDate, Reason: "batch_" + msg.Metadata.StallReason,
		Completed: int(msg.Metadata.CompletedPlayers), Expected: int(msg.Metadata.ExpectedPlayers),
		Detail: fmt.Sprintf("batch completion published as partial with %.2f%% of players", msg.Metadata.CompletionPct),
	}
}

// Confirm records a batch completion published (effect.Owner): the
// completion the publish was for, unless it is confirmed already.
func (t *Tracker) Confirm(data map[string]any, r *effect.Record, msgID string, now time.Time) []firestore.Update {
	st := decodeData(data, time.Time{}, time.Time{}, time.Time{})
	if st.cstate == statePublished || st.payload != string(r.Data) {
		return nil
	}
	ups := []firestore.Update{
		{Path: FieldState, Value: statePublished}, {Path: FieldComplete, Value: true},
		{Path: FieldCompletionTime, Value: now}, {Path: FieldUpdatedAt, Value: now},
		{Path: FieldMessageIDs, Value: append(st.msgIDs, msgID)}, {Path: FieldCompletedBy, Value: "phasegate"},
		{Path: FieldToken, Value: firestore.Delete}, {Path: FieldExpires, Value: firestore.Delete},
	}
	if exp, ok := t.Config.Names().Expires(now); ok {
		ups = append(ups, firestore.Update{Path: config.ExpiresField, Value: exp})
	}
	return ups
}

// adoptClaim owes a completion a revision before the effect log claimed and
// did not confirm, once that claim is released or its lease has passed:
// its exact message, the stall alert when that revision had not raised it,
// its history row. It then performs them.
func (t *Tracker) adoptClaim(ctx context.Context, ref *firestore.DocumentRef, st *state) (effect.Status, error) {
	now := t.Clock.Now()
	if st.cstate == stateClaimed && now.Before(st.expires) {
		return effect.Status{}, nil // that revision may still be publishing it
	}
	var msg Message
	if err := json.Unmarshal([]byte(st.payload), &msg); err != nil {
		return effect.Status{}, fmt.Errorf("batch %s: its stored completion is unreadable: %w", ref.ID, err)
	}
	effs := t.owedByCompletion(ref, st, msg, now)
	if msg.Status == StatusPartial {
		raised, err := t.raisedBefore(ctx, t.stallAlert(msg).Key)
		if err != nil {
			return effect.Status{}, err
		}
		if raised {
			effs = slices.DeleteFunc(effs, func(e effect.Effect) bool { return e.Kind == effect.Slack })
		}
	}
	ups := []firestore.Update{{Path: FieldState, Value: stateClaimed}, {Path: FieldExpires, Value: now.Add(t.Config.Gate.ClaimLease)},
		{Path: FieldToken, Value: firestore.Delete}, {Path: FieldUpdatedAt, Value: now}}
	data := map[string]any{FieldState: stateClaimed, FieldPayload: st.payload, FieldMessageIDs: anyList(st.msgIDs)}
	made, err := t.Effects.Decide(ctx, []effect.Write{{Ref: ref, Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(st.updateTime)}}},
		effs, data)
	if errors.Is(err, effect.ErrConflict) {
		return effect.Status{}, nil // changed meanwhile: the next attempt sees it
	}
	if err != nil {
		return effect.Status{}, err
	}
	done := t.Effects.Perform(ctx, made)
	t.Log.InfoContext(ctx, "a batch completion claimed by an earlier revision is owed in the effect log")
	return done[effs[0].ID()], nil
}

// raisedBefore reports whether a revision before the effect log recorded
// the alert key in its outbox (orchestrator_alerts/{sha256(key)}).
func (t *Tracker) raisedBefore(ctx context.Context, key string) (bool, error) {
	sum := sha256.Sum256([]byte(key))
	_, err := t.Firestore.Collection(t.Config.Names().Coll(alert.Collection)).Doc(hex.EncodeToString(sum[:])).Get(ctx)
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("read the earlier outbox: %w", err)
}

// decide returns the status a batch completes with now, or "".
func (t *Tracker) decide(tl *tally, now time.Time, src Source) (string, string) {
	st, cfg := tl.st, t.Config.Batch
	if tl.players >= st.expected {
		return StatusSuccess, ReasonAllPlayers
	}
	if src != SourceSweep {
		return "", ""
	}
	progress := tl.progress
	if progress.IsZero() {
		progress = st.start
	}
	if !progress.IsZero() && now.Sub(progress) >= cfg.StallAfter && tl.players*100 >= int64(cfg.StallMinPercent)*st.expected {
		return StatusPartial, ReasonStalled
	}
	if !st.start.IsZero() && now.Sub(st.start) >= cfg.MaxAge {
		return StatusPartial, ReasonMaxAge
	}
	return "", ""
}

func (t *Tracker) message(tl *tally, status, reason string, now time.Time) Message {
	st := tl.st
	batchID := st.batchID
	if batchID == "" {
		batchID = tl.batchID
	}
	corr := st.corrID
	if corr == "" {
		corr = batchID // §2: correlation_id defaults to execution_id
	}
	pct := 100.0
	if st.expected > 0 {
		pct = math.Round(float64(tl.players)*10000/float64(st.expected)) / 100
	}
	md := Metadata{
		BatchID: batchID, ExpectedPlayers: st.expected, CompletedPlayers: tl.players,
		TotalPredictions: tl.totalPredictions, CompletionPct: pct, CompletedPredictions: tl.totalPredictions,
	}
	if status == StatusPartial {
		md.StallCompleted, md.StallReason = true, reason
	}
	return Message{
		ProcessorName: "PredictionCoordinator", Phase: "phase_5_predictions", ExecutionID: batchID,
		CorrelationID: corr, GameDate: st.gameDate, Status: status, RecordCount: tl.totalPredictions,
		Timestamp: now.UTC().Format(time.RFC3339), Metadata: md,
	}
}

// historyRow is a completed batch's phase_execution_log row.
func (t *Tracker) historyRow(st *state, msg Message, now time.Time) history.Row {
	date, _ := gamedate.Parse(msg.GameDate) // a batch without a date: its row is refused, and said so
	status := "complete"
	if msg.Status == StatusPartial {
		status = "partial"
	}
	var dur float64
	if !st.start.IsZero() {
		dur = now.Sub(st.start).Seconds()
	}
	md := msg.Metadata
	return history.Row{
		Key: md.BatchID, ExecutionTimestamp: now, PhaseName: "prediction_batch", GameDate: date,
		StartTime: st.start, DurationSeconds: dur, Status: status, CorrelationID: msg.CorrelationID,
		Metadata: map[string]any{"batch_id": md.BatchID, "expected_players": md.ExpectedPlayers,
			"completed_players": md.CompletedPlayers, "total_predictions": md.TotalPredictions,
			"completion_pct": md.CompletionPct, "stall_reason": md.StallReason},
	}
}

func (t *Tracker) backoff() retry.Backoff {
	b := retry.NewExponential(15 * time.Millisecond)
	b = retry.WithCappedDuration(400*time.Millisecond, b)
	b = retry.WithJitterPercent(50, b)
	return retry.WithMaxRetries(uint64(max(t.Config.Gate.WriteAttempts-1, 0)), b)
}

func anyList(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
