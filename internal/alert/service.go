package alert

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
)

// Collection is where revisions before the effect log kept one document per
// alert key, with what they still owed to Slack (their outbox).
const Collection = "orchestrator_alerts"

// Values of the outbox's state and resolve_state fields.
const (
	StatePending = "pending" // recorded, not known to be delivered
	StateSent    = "sent"    // Slack accepted it (or it was logged)
)

// record is an outbox document as earlier revisions wrote it.
type record struct {
	Key           string    `firestore:"key"`
	Severity      string    `firestore:"severity"`
	Title         string    `firestore:"title"`
	Phase         string    `firestore:"phase"`
	GameDate      string    `firestore:"game_date"`
	Reason        string    `firestore:"reason"`
	Completed     int64     `firestore:"completed"`
	Expected      int64     `firestore:"expected"`
	Missing       []string  `firestore:"missing"`
	ElapsedMS     int64     `firestore:"elapsed_ms"`
	Detail        string    `firestore:"detail"`
	State         string    `firestore:"state"`
	ResolveState  string    `firestore:"resolve_state"`
	ResolveDetail string    `firestore:"resolve_detail"`
	SendingUntil  time.Time `firestore:"sending_until"`
}

func (r record) alert() Alert {
	return Alert{
		Key: r.Key, Severity: ParseSeverity(r.Severity), Title: r.Title, Phase: r.Phase,
		GameDate: r.GameDate, Reason: r.Reason, Completed: int(r.Completed), Expected: int(r.Expected),
		Missing: r.Missing, Elapsed: time.Duration(r.ElapsedMS) * time.Millisecond, Detail: r.Detail,
	}
}

// takeOverLimit bounds one sweep's share of an old outbox.
const takeOverLimit = 50

// outboxIncarnation stands for the incarnation of alerts an earlier
// revision recorded: their keys were "once ever", so one is enough.
const outboxIncarnation = "outbox"

// TakeOver moves into the effect log what an earlier revision's outbox
// still owes (a message whose sender's lease has passed), one document at a
// time: its effects are created in the same commit that clears the old
// document's lease, conditional on the document being unchanged, so an old
// revision still flushing it during a rollout and this one never both send
// it. They are due at once, for the sweep's lanes: a backlog drains at the
// lanes' pace, within the sweep's budget. The old document is marked sent,
// as the effect log will: a rolled-back revision resolving the alert then
// sends its resolve. It returns the documents taken over.
func TakeOver(ctx context.Context, fs *firestore.Client, names config.Names, eng *effect.Engine) (int, error) {
	now := eng.Clock.Now()
	snaps, err := fs.Collection(names.Coll(Collection)).Where("sending_until", "<=", now).
		OrderBy("sending_until", firestore.Asc).Limit(takeOverLimit).Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("alert: query the earlier outbox: %w", err)
	}
	n := 0
	var errs []error
	for _, snap := range snaps {
		var rec record
		if err := snap.DataTo(&rec); err != nil {
			errs = append(errs, fmt.Errorf("alert: decode %s: %w", snap.Ref.ID, err))
			continue
		}
		var effs []effect.Effect
		a := rec.alert()
		ups := []firestore.Update{{Path: "sending_until", Value: firestore.Delete}, {Path: "waiting_since", Value: firestore.Delete},
			{Path: "moved_to_effects_at", Value: now}}
		if rec.State == StatePending {
			effs = append(effs, Raise(a, outboxIncarnation))
			ups = append(ups, firestore.Update{Path: "state", Value: StateSent})
		}
		if rec.ResolveState == StatePending {
			a.Detail = rec.ResolveDetail
			effs = append(effs, Resolve(a, outboxIncarnation))
			ups = append(ups, firestore.Update{Path: "resolve_state", Value: StateSent})
		}
		ws := append([]effect.Write{{Ref: snap.Ref, Update: ups,
			Pre: []firestore.Precondition{firestore.LastUpdateTime(snap.UpdateTime)}}}, eng.Handoff(now, effs...)...)
		_, err := effect.Commit(ctx, fs, ws...)
		if errors.Is(err, effect.ErrConflict) {
			continue // its old sender recorded something meanwhile: the next sweep sees it
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("alert: take over %s: %w", rec.Key, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
