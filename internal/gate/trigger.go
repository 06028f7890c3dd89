package gate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/history"
	"github.com/phasegate/phasegate/internal/opstate"
	"github.com/phasegate/phasegate/internal/rules"
)

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

func (g *Gate) partialAlert(key string, date gamedate.Date, st *docState, msg Message, now time.Time) alert.Alert {
	return alert.Alert{
		Key: key, Severity: alert.Error,
		Title: fmt.Sprintf("%s went on without data (%s)", g.phase.Name, msg.TriggerReason),
		Phase: g.phase.Name, GameDate: date.String(), Reason: msg.TriggerReason,
		Completed: len(msg.CompletedProcessors), Expected: len(msg.ExpectedProcessors),
		Missing: msg.MissingProcessors, Elapsed: now.Sub(st.first),
		Detail: "trigger " + msg.TriggerID + " goes out with the data at hand",
	}
}

// triggerRow is a trigger's history row.
func (g *Gate) triggerRow(date gamedate.Date, st *docState, msg Message, now time.Time) history.Row {
	status := msg.TriggerReason
	switch {
	case msg.TriggerReason == rules.ReasonAllComplete:
		status = "complete"
	case strings.HasPrefix(msg.TriggerReason, "critical_plus_majority_"):
		status = "partial"
	}
	return history.Row{
		Key: msg.TriggerID, ExecutionTimestamp: now, PhaseName: g.phase.Name, GameDate: date,
		StartTime: st.first, DurationSeconds: durationSince(st.first, now), Status: status, CorrelationID: msg.CorrelationID,
		Metadata: map[string]any{
			"trigger_id": msg.TriggerID, "trigger_reason": msg.TriggerReason, "mode": msg.Mode,
			"is_partial": msg.IsPartial, "completed_processors": msg.CompletedProcessors,
			"missing_processors": msg.MissingProcessors, "data_freshness_verified": msg.DataFreshnessVerified,
			"data_check": msg.DataCheck, "missing_tables": msg.MissingTables, "table_row_counts": msg.TableRowCounts,
		},
	}
}

func durationSince(first, now time.Time) float64 {
	if first.IsZero() {
		return 0
	}
	return now.Sub(first).Seconds()
}

// ledgerWrite advances the generation ledger to gen, conditionally on it
// being as read.
func (g *Gate) ledgerWrite(date gamedate.Date, led *ledger, gen int64) effect.Write {
	now := g.Clock.Now()
	ref := g.ledgerRef(date)
	if !led.exists {
		doc := map[string]any{"phase": g.phase.Name, "game_date": date.String(), "generation": gen, "updated_at": now}
		if exp, ok := g.Names.Expires(now); ok {
			doc[config.ExpiresField] = exp
		}
		return effect.Write{Ref: ref, Create: doc}
	}
	ups := []firestore.Update{{Path: "generation", Value: gen}, {Path: "updated_at", Value: now}}
	if exp, ok := g.Names.Expires(now); ok {
		ups = append(ups, firestore.Update{Path: config.ExpiresField, Value: exp})
	}
	return effect.Write{Ref: ref, Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(led.updateTime)}}
}

// ledgerAtLeast raises the generation ledger to gen unless it is past it:
// a server-side maximum, so it needs neither the ledger's read nor a
// precondition. It carries forward a generation the ledger never saw (a
// trigger of a revision before the ledger), so that a re-created gate
// document never reuses its trigger_id.
func (g *Gate) ledgerAtLeast(date gamedate.Date, gen int64) effect.Write {
	now := g.Clock.Now()
	doc := map[string]any{"phase": g.phase.Name, "game_date": date.String(),
		"generation": firestore.FieldTransformMaximum(gen), "updated_at": now}
	if exp, ok := g.Names.Expires(now); ok {
		doc[config.ExpiresField] = exp
	}
	return effect.Write{Ref: g.ledgerRef(date), Merge: doc}
}

// SeedLedger raises the ledger of every date whose gate document has
// published a trigger to that document's generation, a page of
// pageSize at a time, and returns how many gate documents it read. It is
// the take-over's step for gates an earlier revision triggered before the
// ledger existed; what a gate decides after that keeps the ledger itself.
func (g *Gate) SeedLedger(ctx context.Context, pageSize int) (int, error) {
	q := g.Firestore.Collection(g.Collection()).Where(fGeneration, ">", 0).OrderBy(fGeneration, firestore.Asc).
		OrderBy(firestore.DocumentID, firestore.Asc).Limit(pageSize)
	read := 0
	for {
		snaps, err := q.Documents(ctx).GetAll()
		if err != nil {
			return read, fmt.Errorf("gate %s: read triggered gates: %w", g.phase.Name, err)
		}
		var ws []effect.Write
		for _, s := range snaps {
			date, err := gamedate.Parse(s.Ref.ID)
			if err != nil {
				continue // not a gate document
			}
			if gen := decodeState(g.phase, s).generation; gen > 0 {
				ws = append(ws, g.ledgerAtLeast(date, gen))
			}
		}
		read += len(snaps)
		for len(ws) > 0 {
			n := min(len(ws), 400)
			if _, err := effect.Commit(ctx, g.Firestore, ws[:n]...); err != nil {
				return read, fmt.Errorf("gate %s: seed the ledger: %w", g.phase.Name, err)
			}
			ws = ws[n:]
		}
		if len(snaps) < pageSize {
			return read, nil
		}
		q = q.StartAfter(snaps[len(snaps)-1])
	}
}

// SeedLedgerOnce is SeedLedger the first time any instance runs it for
// this phase, then nothing: the sweep's take-over step after a deploy over
// a revision before the ledger. A fact in orchestrator_health
// (ledger-seeded-<phase>) records that it ran; `phasegate effects take-over` runs
// SeedLedger again regardless (for gates an old instance triggered during
// the rollout, after the first sweep).
func (g *Gate) SeedLedgerOnce(ctx context.Context) (int, error) {
	if g.seeded.Load() {
		return 0, nil
	}
	marker := g.Firestore.Collection(g.Names.Coll(opstate.Collection)).Doc("ledger-seeded-" + g.phase.Name)
	if _, err := marker.Get(ctx); err == nil {
		g.seeded.Store(true)
		return 0, nil
	} else if status.Code(err) != codes.NotFound {
		return 0, fmt.Errorf("gate %s: read the ledger's seed marker: %w", g.phase.Name, err)
	}
	n, err := g.SeedLedger(ctx, 300)
	if err != nil {
		return n, err
	}
	_, err = marker.Create(ctx, map[string]any{"phase": g.phase.Name, "seeded_at": g.Clock.Now(), "gates": n})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return n, fmt.Errorf("gate %s: record the ledger's seed: %w", g.phase.Name, err)
	}
	g.seeded.Store(true)
	return n, nil
}

// Confirm records a trigger published (effect.Owner): the generation the
// publish was for, unless the gate moved on. The gate stays open when a
// late_arrival generation is owed at once, so the sweep claims it.
func (g *Gate) Confirm(data map[string]any, r *effect.Record, msgID string, now time.Time) []firestore.Update {
	st := decodeData(g.phase, data, time.Time{}, time.Time{})
	if st.triggerID != r.Attributes["trigger_id"] || st.state == statePublished {
		return nil
	}
	ups := []firestore.Update{
		{Path: fState, Value: statePublished},
		{Path: fTriggered, Value: true},
		{Path: fMessageIDs, Value: append(st.messageIDs, msgID)},
		{Path: fOpen, Value: g.phase.LateArrival && st.partial && st.allComplete(g.phase)},
		{Path: fClaimExpires, Value: firestore.Delete},
		{Path: fClaimToken, Value: firestore.Delete},
		{Path: fUpdatedAt, Value: now},
	}
	if !st.triggered {
		ups = append(ups, firestore.Update{Path: fTriggeredAt, Value: now})
	}
	if exp, ok := g.Names.Expires(now); ok {
		ups = append(ups, firestore.Update{Path: config.ExpiresField, Value: exp})
	}
	return ups
}

// adopt owes a trigger a revision before the effect log claimed and did
// not confirm, once that claim is released or its lease has passed: its
// exact message, the partial alert when that revision had not raised it,
// and its history row (that revision wrote it with the confirm). It then
// performs them.
func (g *Gate) adopt(ctx context.Context, date gamedate.Date, st *docState) (effect.Status, error) {
	now := g.Clock.Now()
	if st.state == stateClaimed && now.Before(st.expires) {
		return effect.Status{}, nil // that revision may still be publishing it
	}
	var msg Message
	if err := json.Unmarshal([]byte(st.payload), &msg); err != nil || msg.TriggerID != st.triggerID {
		return effect.Status{}, fmt.Errorf("trigger %s: its stored message is unreadable: %v", st.triggerID, err)
	}
	// Its stored bytes, not a message made again: a re-publication is
	// byte-identical.
	pl := &plan{message: &msg, payload: []byte(st.payload), rows: []history.Row{g.triggerRow(date, st, msg, now)}}
	if st.alertKey != "" {
		raised, err := g.raisedBefore(ctx, st.alertKey)
		if err != nil {
			return effect.Status{}, err
		}
		if !raised {
			pl.raise(g.partialAlert(st.alertKey, date, st, msg, now))
		}
	}
	g.owes(pl, date, st.incarnation)
	effs := pl.effects
	ups := []firestore.Update{{Path: fState, Value: stateClaimed}, {Path: fClaimExpires, Value: now.Add(g.Gate.ClaimLease)},
		{Path: fClaimToken, Value: firestore.Delete}, {Path: fUpdatedAt, Value: now}}
	data := maps.Clone(st.data)
	data[fState] = stateClaimed
	ws := []effect.Write{g.gateWrite(g.ref(date), st, ups), g.ledgerAtLeast(date, st.generation)}
	made, err := g.Effects.Decide(ctx, ws, effs, data)
	if errors.Is(err, effect.ErrConflict) {
		return effect.Status{}, nil // changed meanwhile: the next evaluation sees it
	}
	if err != nil {
		return effect.Status{}, err
	}
	done := g.Effects.Perform(ctx, made)
	g.Log.InfoContext(ctx, "a trigger claimed by an earlier revision is owed in the effect log", "trigger_id", st.triggerID)
	return done[effs[0].ID()], nil
}

// raisedBefore reports whether a revision before the effect log recorded
// the alert key in its outbox (orchestrator_alerts/{sha256(key)}).
func (g *Gate) raisedBefore(ctx context.Context, key string) (bool, error) {
	sum := sha256.Sum256([]byte(key))
	_, err := g.Firestore.Collection(g.Names.Coll(alert.Collection)).Doc(hex.EncodeToString(sum[:])).Get(ctx)
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("read the earlier outbox: %w", err)
}

// blockedWithout reports whether the gate can never go on while name is
// missing: no timed rule is enabled for date (a configured but disabled one,
// like phase 2's default deadline, does not count), and name is one the
// rules cannot do without (every expected processor, or for a mode-aware
// phase a critical or same-day-required one).
func (g *Gate) blockedWithout(date gamedate.Date, name string) bool {
	for _, r := range g.phase.Timed {
		if r.Enabled.Enabled(date.String()) {
			return false
		}
	}
	if g.phase.ModeAware {
		return slices.Contains(g.phase.Critical, name) || slices.Contains(g.phase.SameDayRequired, name)
	}
	return true
}
