// Package sweep is the scheduled pass that makes every timed rule fire when
// no message arrives, and heals what a crash left half-done. Cloud Scheduler
// publishes to orchestrator-sweep every five minutes; Scheduler delivers at
// least once, so two sweeps may run at once: every action goes through the
// same optimistic claims as the event path and is safe to race.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/iterator"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Gate is what the sweep needs of a phase gate.
type Gate interface {
	Phase() *config.Phase
	Evaluate(ctx context.Context, date gamedate.Date, src gate.Source, snap *firestore.DocumentSnapshot) (gate.Outcome, error)
	OverdueQueries(fs *firestore.Client, cutoff time.Time) []firestore.Query
	CheckOverdue(ctx context.Context, date gamedate.Date, snap *firestore.DocumentSnapshot) (string, error)
}

// Batches completes stalled and over-age prediction batches. Sweep's error
// means its query failed; a batch it could not finish is in the report.
type Batches interface {
	Sweep(ctx context.Context, lookBack time.Duration, max int) (BatchReport, error)
}

// BatchReport is what a batch pass did.
type BatchReport = fmt.Stringer

// Effects performs what decisions owe and requests could not perform.
type Effects interface {
	Drain(ctx context.Context) (effect.DrainReport, error)
}

// TakeOver moves into the effect log what an earlier revision's outbox
// still owes, and returns how much it moved.
type TakeOver struct {
	Name string // the outbox's collection, for logs
	Run  func(ctx context.Context) (int, error)
}

// Heartbeat records that a sweep finished, for Health on every instance.
type Heartbeat interface {
	SweepDone(ctx context.Context, summary map[string]any) error
}

// Sweeper runs sweeps.
type Sweeper struct {
	FS        *firestore.Client
	Gates     []Gate
	Batches   Batches // nil: no batch pass
	Effects   Effects
	TakeOvers []TakeOver
	Heartbeat Heartbeat // nil: not recorded
	Clock     clock.Clock
	Cfg       config.Sweep
	Names     config.Names
	Log       *slog.Logger
	Metrics   *metrics.Registry
}

// Report summarises one sweep.
type Report struct {
	Visited   int
	Triggered []string // trigger ids published
	Waiting   int
	Failed    int
	Batches   string
	// Effects is what the pass over the effect log did; TakenOver, what
	// it moved there from earlier revisions' outboxes.
	Effects   effect.DrainReport
	TakenOver int
	// Overdue warnings raised and resolved by this sweep.
	Overdue         int
	OverdueResolved int
	Blocked         int // gates a data check holds
	// QueryFailed names each collection whose query failed: what it would
	// have found was not visited.
	QueryFailed []string
}

// Handle is the Sweep entry point; the message's content does not matter.
func (s *Sweeper) Handle(ctx context.Context, _ envelope.Message) error {
	r, err := s.Run(ctx)
	s.Log.InfoContext(ctx, "sweep finished", "complete", err == nil, "visited", r.Visited, "triggered", r.Triggered,
		"waiting", r.Waiting, "blocked", r.Blocked, "failed", r.Failed, "batches", r.Batches,
		"effects_performed", r.Effects.Performed, "effects_pending", r.Effects.Pending, "effects_failed", r.Effects.Failed,
		"effects_errors", r.Effects.Errors, "effect_lanes_stopped", r.Effects.Stopped, "taken_over", r.TakenOver,
		"overdue_raised", r.Overdue, "overdue_resolved", r.OverdueResolved, "query_failed", r.QueryFailed)
	return err
}

// Run visits every open gate whose first completion lies within the
// look-back, at most Cfg.MaxItems, Cfg.Concurrency at a time, then the
// batches and the alert outbox. One gate's or batch's failure does not stop
// the others, and is logged, counted and left for the next sweep. A failed
// query is different: the sweep cannot see what it owes, so after doing all
// it can, it logs each at ERROR, names it in the report and answers with a
// transient error (5xx), and Pub/Sub redelivers the run instead of waiting
// for the next tick; every action being a claim, the redelivery repeats
// nothing, and a query that keeps failing (a missing index) ends in the
// dead-letter topic instead of being silently skipped every five minutes.
func (s *Sweeper) Run(ctx context.Context) (Report, error) {
	var (
		r   Report
		mu  sync.Mutex
		now = s.Clock.Now()
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.Cfg.Concurrency)
	budget := s.Cfg.MaxItems
	// legacy: per phase, the look-back's documents without _open (the
	// running system's), which the overdue queries cannot find.
	legacy := map[string][]*firestore.DocumentSnapshot{}
	var queryErrs []error
	queryFailed := func(collection string, err error) {
		queryErrs = append(queryErrs, err)
		r.QueryFailed = append(r.QueryFailed, collection)
		s.Metrics.Inc("sweep.query_failed")
		s.Log.ErrorContext(ctx, "sweep query failed; what it would have found is not visited",
			"collection", collection, "error", err.Error())
	}
	for _, gt := range s.Gates {
		if gt.Phase().Unowned {
			continue // the running system still owns it (PHASEGATE_PHASES)
		}
		snaps, direct, err := s.openGates(ctx, gt.Phase(), now, budget)
		if err != nil {
			queryFailed(s.Names.Coll(gt.Phase().Collection), err)
			continue
		}
		budget -= len(snaps)
		legacy[gt.Phase().Name] = direct
		for _, snap := range snaps {
			date, err := gamedate.Parse(snap.Ref.ID)
			if err != nil {
				continue // not a gate document
			}
			g.Go(func() error {
				ictx := logging.WithLabels(gctx, "phase", gt.Phase().Name, "game_date", date.String())
				out, err := gt.Evaluate(ictx, date, gate.SourceSweep, snap)
				mu.Lock()
				defer mu.Unlock()
				r.Visited++
				switch {
				case err != nil && !errs.Is(err, errs.Duplicate):
					r.Failed++
					s.Metrics.Inc("sweep.gate_failed")
					s.Log.ErrorContext(ictx, "sweep could not finish a gate", "error", err.Error())
				case out.TriggerID != "":
					r.Triggered = append(r.Triggered, out.TriggerID)
					s.Metrics.Inc("sweep.triggered")
					s.Log.WarnContext(ictx, "sweep triggered the next phase", "trigger_id", out.TriggerID,
						"trigger_reason", out.Reason, "missing_processors", out.Missing)
				case out.Blocked != "":
					r.Blocked++
				case out.Waiting:
					r.Waiting++
				}
				return nil
			})
		}
	}
	_ = g.Wait()
	// After the gates, so that a gate this sweep just triggered is not
	// reported overdue.
	for _, gt := range s.Gates {
		if err := s.overdue(ctx, gt, now, legacy[gt.Phase().Name], &r); err != nil {
			queryFailed(gt.Phase().Collection, err)
		}
	}
	if s.Batches != nil && budget > 0 {
		br, err := s.Batches.Sweep(ctx, s.Cfg.LookBack, budget)
		if err != nil {
			queryFailed("prediction_batches", err)
		} else if br != nil {
			r.Batches = br.String()
		}
	}
	// Last, so that what the gates and batches just owed and could not
	// perform is tried again at once; bounded, so that a destination that
	// hangs cannot hold the sweep past its function's timeout.
	fctx, cancel := context.WithTimeout(ctx, s.Cfg.FlushBudget)
	for _, t := range s.TakeOvers {
		n, err := t.Run(fctx)
		r.TakenOver += n
		if err != nil {
			queryFailed(t.Name, err)
		}
	}
	var err error
	if r.Effects, err = s.Effects.Drain(fctx); err != nil {
		for _, lane := range r.Effects.QueryFailed {
			queryFailed("orchestrator_effects["+lane+"]", err)
		}
	}
	cancel()
	s.Metrics.Inc("sweep.runs")
	if len(queryErrs) > 0 {
		return r, errs.E(errs.Transient, "sweep_query", errors.Join(queryErrs...))
	}
	if s.Heartbeat != nil {
		// Only a sweep that could read what it sweeps counts as one.
		if err := s.Heartbeat.SweepDone(ctx, map[string]any{"visited": r.Visited, "triggered": len(r.Triggered),
			"failed": r.Failed, "effects_performed": r.Effects.Performed}); err != nil {
			return r, errs.E(errs.Transient, "sweep_heartbeat", err)
		}
	}
	return r, nil
}

// overdueLimit bounds each overdue query of one sweep; a gate left out is
// found by the next one.
const overdueLimit = 50

// overdue raises the warning of each gate open longer than its phase's
// stuck_after, at any age, and resolves those that have since triggered.
// legacy are the running system's untriggered documents the look-back
// read, which no query of _open finds: stuck_after is shorter than the
// look-back, so each is announced before it leaves it.
func (s *Sweeper) overdue(ctx context.Context, gt Gate, now time.Time, legacy []*firestore.DocumentSnapshot, r *Report) error {
	p := gt.Phase()
	seen := map[string]bool{}
	batches := [][]*firestore.DocumentSnapshot{legacy}
	for _, q := range gt.OverdueQueries(s.FS, now.Add(-p.StuckAfter)) {
		snaps, err := q.Limit(overdueLimit).Documents(ctx).GetAll()
		if err != nil {
			return fmt.Errorf("sweep: overdue gates of %s: %w", p.Collection, err)
		}
		batches = append(batches, snaps)
	}
	for _, snaps := range batches {
		for _, snap := range snaps {
			date, err := gamedate.Parse(snap.Ref.ID)
			if err != nil || seen[snap.Ref.ID] {
				continue
			}
			seen[snap.Ref.ID] = true
			ictx := logging.WithLabels(ctx, "phase", p.Name, "game_date", date.String())
			action, err := gt.CheckOverdue(ictx, date, snap)
			switch {
			case err != nil:
				r.Failed++
				s.Metrics.Inc("sweep.overdue_failed")
				s.Log.ErrorContext(ictx, "sweep could not record an overdue gate's alert; the next sweep retries", "error", err.Error())
			case action == gate.OverdueRaised:
				r.Overdue++
				s.Metrics.Inc("sweep.overdue_raised")
				s.Log.WarnContext(ictx, "gate overdue", "overdue_event", action, "stuck_after", p.StuckAfter.String())
			case action == gate.OverdueResolved:
				r.OverdueResolved++
				s.Metrics.Inc("sweep.overdue_resolved")
				s.Log.InfoContext(ictx, "gate no longer overdue", "overdue_event", action)
			}
		}
	}
	return nil
}

// openGates queries a phase's gates that still owe or have not confirmed a
// trigger: the open ones whose first completion is within the look-back
// (composite index _open, _first_completion_at), any trigger left claimed
// or released, however old or however it started — a manual trigger on a
// date without completions has no first completion (single-field index on
// _trigger_state) — and the untriggered documents of the look-back's dates,
// which is how documents the running system wrote are seen. It returns
// them all, and apart those of the last kind without _open.
func (s *Sweeper) openGates(ctx context.Context, p *config.Phase, now time.Time, limit int) ([]*firestore.DocumentSnapshot, []*firestore.DocumentSnapshot, error) {
	if limit <= 0 {
		return nil, nil, nil
	}
	coll := s.FS.Collection(s.Names.Coll(p.Collection))
	queries := []firestore.Query{
		coll.Where("_open", "==", true).
			Where("_first_completion_at", ">=", now.Add(-s.Cfg.LookBack)).
			OrderBy("_first_completion_at", firestore.Desc),
		coll.Where("_trigger_state", "in", []string{"claimed", "released"}),
	}
	seen := map[string]bool{}
	var out []*firestore.DocumentSnapshot
	for _, q := range queries {
		it := q.Limit(limit).Documents(ctx)
		for len(out) < limit {
			snap, err := it.Next()
			if errors.Is(err, iterator.Done) {
				break
			}
			if err != nil {
				it.Stop()
				return nil, nil, fmt.Errorf("sweep: query %s: %w", p.Collection, err)
			}
			if !seen[snap.Ref.ID] {
				seen[snap.Ref.ID] = true
				out = append(out, snap)
			}
		}
		it.Stop()
	}
	if len(out) >= limit {
		return out, nil, nil
	}
	// Documents the running system created carry no _open and may hold
	// _first_completion_at as a string, which no timestamp query matches:
	// read the look-back's dates directly (ids are dates, so this costs at
	// most one read per day of the look-back plus New York's tomorrow).
	refs := lookBackRefs(coll, now, s.Cfg.LookBack)
	snaps, err := s.FS.GetAll(ctx, refs)
	if err != nil {
		return nil, nil, fmt.Errorf("sweep: read %s of the look-back: %w", p.Collection, err)
	}
	var legacy []*firestore.DocumentSnapshot
	for _, snap := range snaps {
		if len(out) >= limit {
			break
		}
		if !snap.Exists() || seen[snap.Ref.ID] || !owes(snap.Data()) {
			continue
		}
		seen[snap.Ref.ID] = true
		out = append(out, snap)
		if _, ok := snap.Data()["_open"]; !ok {
			legacy = append(legacy, snap)
		}
	}
	return out, legacy, nil
}

// lookBackRefs are the gate documents of every New York date from now −
// lookBack through New York's tomorrow, newest first.
func lookBackRefs(coll *firestore.CollectionRef, now time.Time, lookBack time.Duration) []*firestore.DocumentRef {
	last := gamedate.Today(now).AddDays(1)
	first := gamedate.Today(now.Add(-lookBack))
	var refs []*firestore.DocumentRef
	for d := last; d.Compare(first) >= 0; d = d.AddDays(-1) {
		refs = append(refs, coll.Doc(d.String()))
	}
	return refs
}

// owes reports whether a gate document may still owe a trigger: not
// triggered (whoever created it), or a claim left unfinished.
func owes(data map[string]any) bool {
	if t, _ := data["_triggered"].(bool); !t {
		return true
	}
	s, _ := data["_trigger_state"].(string)
	return s == "claimed" || s == "released"
}
