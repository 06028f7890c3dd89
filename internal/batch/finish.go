package batch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/sethvargo/go-retry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/config"
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

// finish completes a batch exactly once: claim → publish → confirm on the
// batch document, each step conditional on the document's update time.
// The claim records the exact count, taken from one consistent snapshot,
// and the whole message, so that every later attempt publishes the same
// bytes. A failed publish releases the claim and returns a transient
// error; a claimant that dies leaves a claim that expires after the lease,
// and the next redelivery (a duplicate, which re-judges the batch) or the
// sweep publishes the stored message.
func (t *Tracker) finish(ctx context.Context, batchID string, m *meta, src Source) (finishResult, error) {
	ref := t.batchRef(batchID)
	var res finishResult
	var claimed *state
	err := retry.Do(ctx, t.backoff(), func(ctx context.Context) error {
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
		case st.liveClaim(now):
			res.Action = ActionInFlight
			return nil
		case st.resumable(now):
			token := newToken()
			err := t.conditional(ctx, ref, st, []firestore.Update{
				{Path: FieldState, Value: stateClaimed}, {Path: FieldToken, Value: token},
				{Path: FieldExpires, Value: now.Add(t.Config.Gate.ClaimLease)}, {Path: FieldClaimedBy, Value: string(src)},
				{Path: FieldUpdatedAt, Value: now},
			})
			if err != nil {
				return err
			}
			st.cstate, st.token = stateClaimed, token
			claimed, res.Action, res.Status, res.Reason = st, ActionResumed, st.status, st.reason
			return nil
		}
		status, reason := t.decide(tl, now, src)
		if status == "" {
			return nil
		}
		msg := t.message(tl, status, reason, now)
		payload, _ := json.Marshal(msg) // plain fields: cannot fail
		token := newToken()
		ups := []firestore.Update{
			{Path: FieldState, Value: stateClaimed}, {Path: FieldToken, Value: token},
			{Path: FieldExpires, Value: now.Add(t.Config.Gate.ClaimLease)}, {Path: FieldClaimedBy, Value: string(src)},
			{Path: FieldPayload, Value: string(payload)}, {Path: FieldStatus, Value: status}, {Path: FieldReason, Value: reason},
			{Path: FieldCountedAt, Value: tl.countedAt}, {Path: FieldCountedLen, Value: int64(len(st.array))},
			{Path: FieldCompletedCount, Value: tl.players}, {Path: FieldTotalPredictions, Value: tl.totalPredictions},
			{Path: FieldUpdatedAt, Value: now},
		}
		if status == StatusPartial {
			ups = append(ups, firestore.Update{Path: FieldStallCompleted, Value: true}, firestore.Update{Path: FieldStallReason, Value: reason})
		}
		if err := t.conditional(ctx, ref, st, ups); err != nil {
			return err
		}
		st.cstate, st.token, st.payload, st.status, st.reason = stateClaimed, token, string(payload), status, reason
		claimed, res.Action, res.Status, res.Reason = st, ActionCompleted, status, reason
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
	if res.Action == ActionDone && m != nil {
		m.setComplete()
	}
	if claimed == nil {
		return res, nil
	}
	if err := t.fault(StepAfterClaim); err != nil {
		return res, err
	}
	if err := t.publishAndConfirm(ctx, ref, claimed); err != nil {
		return res, err
	}
	if m != nil {
		m.setComplete()
	}
	return res, nil
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

// publishAndConfirm publishes the claimed message and records it.
func (t *Tracker) publishAndConfirm(ctx context.Context, ref *firestore.DocumentRef, st *state) error {
	var msg Message
	_ = json.Unmarshal([]byte(st.payload), &msg) // we wrote it
	attrs := map[string]string{"batch_id": msg.Metadata.BatchID, "game_date": msg.GameDate,
		"correlation_id": msg.CorrelationID, "status": msg.Status, "execution_id": msg.ExecutionID}
	pctx, cancel := context.WithTimeout(ctx, t.Config.Gate.PublishTimeout)
	id, err := t.Publisher.Publish(pctx, t.Config.Topics.BatchComplete, []byte(st.payload), attrs)
	cancel()
	if err != nil {
		t.Metrics.Inc("batch.publish_failed")
		if rerr := t.release(context.WithoutCancel(ctx), ref, st.token); rerr != nil {
			t.Log.ErrorContext(ctx, "releasing the batch claim failed; it expires with its lease", "error", rerr.Error())
		}
		return errs.E(errs.Transient, "publish_failed", err)
	}
	if err := t.fault(StepAfterPublish); err != nil {
		return err
	}
	if msg.Status == StatusPartial {
		err := t.Alerts.Raise(ctx, alert.Alert{
			Key: "batch:" + msg.Metadata.BatchID + ":" + msg.Metadata.StallReason, Severity: alert.Error,
			Title: fmt.Sprintf("batch going on without data: %s (%s)", msg.Metadata.BatchID, msg.Metadata.StallReason),
			Phase: "phase_5_predictions", GameDate: msg.GameDate, Reason: "batch_" + msg.Metadata.StallReason,
			Completed: int(msg.Metadata.CompletedPlayers), Expected: int(msg.Metadata.ExpectedPlayers),
			Detail: fmt.Sprintf("batch completion published as partial with %.2f%% of players", msg.Metadata.CompletionPct),
		})
		if err != nil {
			// As if this instance died here: the claim stays unconfirmed, and
			// whoever finishes it once the lease ends publishes the same
			// completion again and raises the alert.
			return errs.E(errs.Transient, "alert_not_recorded", err)
		}
	}
	if err := t.confirm(context.WithoutCancel(ctx), ref, msg, id); err != nil {
		return errs.E(errs.Transient, "confirm_failed", err)
	}
	t.Metrics.Inc("batch.completed")
	t.Log.InfoContext(ctx, "prediction batch completed", "status", msg.Status, "completed_players", msg.Metadata.CompletedPlayers,
		"expected_players", msg.Metadata.ExpectedPlayers, "pubsub_message_id", id, "stall_reason", msg.Metadata.StallReason)
	return nil
}

// confirm marks the completion published. It needs no claim of its own: a
// slower attempt whose claim was taken over confirms the same message. The
// batch's history row is recorded as owed in the same commit and inserted
// after it.
func (t *Tracker) confirm(ctx context.Context, ref *firestore.DocumentRef, msg Message, msgID string) error {
	owed := false
	err := retry.Do(ctx, t.backoff(), func(ctx context.Context) error {
		snap, err := ref.Get(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", ref.Path, err)
		}
		st := decodeState(snap)
		if st.cstate == statePublished {
			return nil
		}
		now := t.Clock.Now()
		ups := []firestore.Update{
			{Path: FieldState, Value: statePublished}, {Path: FieldComplete, Value: true},
			{Path: FieldCompletionTime, Value: now}, {Path: FieldUpdatedAt, Value: now},
			{Path: FieldMessageIDs, Value: append(st.msgIDs, msgID)}, {Path: FieldCompletedBy, Value: "phasegate"},
			{Path: FieldToken, Value: firestore.Delete}, {Path: FieldExpires, Value: firestore.Delete},
		}
		if t.History == nil {
			return t.conditional(ctx, ref, st, ups)
		}
		hist, doc := t.History.Owe(t.historyRow(st, msg, now))
		err = t.Firestore.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
			if err := tx.Update(ref, ups, firestore.LastUpdateTime(st.updateTime)); err != nil {
				return err
			}
			return tx.Create(hist, doc)
		}, firestore.MaxAttempts(1))
		if err = t.classify(ref, err); err == nil {
			owed = true
		}
		return err
	})
	if err == nil && owed {
		t.History.Send(ctx, msg.Metadata.BatchID)
	}
	return err
}

// historyRow is a completed batch's phase_execution_log row.
func (t *Tracker) historyRow(st *state, msg Message, now time.Time) history.Row {
	date, _ := gamedate.Parse(msg.GameDate) // the batch's own, parsed when it was recorded
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

// release gives up this attempt's claim after a failed publish.
func (t *Tracker) release(ctx context.Context, ref *firestore.DocumentRef, token string) error {
	return t.update(ctx, ref, func(st *state) []firestore.Update {
		if st.cstate != stateClaimed || st.token != token {
			return nil
		}
		return []firestore.Update{
			{Path: FieldState, Value: stateReleased}, {Path: FieldToken, Value: firestore.Delete},
			{Path: FieldExpires, Value: firestore.Delete}, {Path: FieldUpdatedAt, Value: t.Clock.Now()},
		}
	})
}

// update applies f's updates with an optimistic loop on the batch document.
func (t *Tracker) update(ctx context.Context, ref *firestore.DocumentRef, f func(*state) []firestore.Update) error {
	return retry.Do(ctx, t.backoff(), func(ctx context.Context) error {
		snap, err := ref.Get(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", ref.Path, err)
		}
		st := decodeState(snap)
		ups := f(st)
		if len(ups) == 0 {
			return nil
		}
		return t.conditional(ctx, ref, st, ups)
	})
}

// conditional writes ups if the batch document is unchanged since st was
// read; a lost race is retryable.
func (t *Tracker) conditional(ctx context.Context, ref *firestore.DocumentRef, st *state, ups []firestore.Update) error {
	_, err := ref.Update(ctx, ups, firestore.LastUpdateTime(st.updateTime))
	return t.classify(ref, err)
}

// classify makes a lost race retryable.
func (t *Tracker) classify(ref *firestore.DocumentRef, err error) error {
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.FailedPrecondition, codes.Aborted:
		t.Metrics.Inc("batch.write_conflict")
		return retry.RetryableError(fmt.Errorf("%w: %v", errConflict, err))
	case codes.NotFound:
		return errNoBatch
	}
	return fmt.Errorf("write %s: %w", ref.Path, err)
}

func (t *Tracker) backoff() retry.Backoff {
	b := retry.NewExponential(15 * time.Millisecond)
	b = retry.WithCappedDuration(400*time.Millisecond, b)
	b = retry.WithJitterPercent(50, b)
	return retry.WithMaxRetries(uint64(max(t.Config.Gate.WriteAttempts-1, 0)), b)
}

func newToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
