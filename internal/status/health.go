package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/opstate"
)

// SweepLate is how old the last sweep may be before Health says degraded:
// three missed runs of a five-minute schedule.
const SweepLate = 15 * time.Minute

// healthTimeout bounds Health's reads, which run concurrently. It is
// generous because a new instance's first RPCs are slow (the emulator's take
// seconds on a busy machine): "unavailable" must mean Firestore, not a
// cold start.
const healthTimeout = 20 * time.Second

// Health answers the same on every instance, from durable state only
// (CONTRACT §11): the sweep's heartbeat, each breaker's last recorded
// transition, overdue gates, unconfirmed claims and the effect log. Its
// reads are bounded whatever the data: one BatchGet, one count aggregation
// per query, and one single-document query.
type Health struct {
	FS          *firestore.Client
	Phases      []config.Phase
	Names       config.Names // the running system's collections live, shadow_ ones in shadow mode
	BatchColl   string       // the prediction batches' collection (its base name)
	BatchState  string       // its claim-state field
	BreakerList []string     // recorded breaker names to report
	Clock       clock.Clock
	Log         *slog.Logger
	// Instance, when set, adds this instance's own view under "instance".
	Instance func() any
}

// Report is Health's JSON.
type Report struct {
	Status           string                     `json:"status"` // ok | degraded | unavailable
	LastSweepAt      *time.Time                 `json:"last_sweep_at"`
	Overdue          int64                      `json:"overdue"`
	Unpublished      int64                      `json:"unpublished"`
	AlertsWaiting    int64                      `json:"alerts_waiting"`
	OldestAlertAgeS  int64                      `json:"oldest_alert_age_s"`
	EffectsOwed      int64                      `json:"effects_owed"`
	OldestEffectAgeS int64                      `json:"oldest_effect_age_s"`
	EffectsFailed    int64                      `json:"effects_failed"`
	Breakers         map[string]opstate.Breaker `json:"breakers"`
	Reasons          []string                   `json:"reasons,omitempty"`
	Error            string                     `json:"error,omitempty"`
	Instance         any                        `json:"instance,omitempty"`
	OverdueByPhase   map[string]int64           `json:"overdue_by_phase,omitempty"`
	UnpublishedByKey map[string]int64           `json:"unpublished_by_collection,omitempty"`
}

// Check reads the durable state and judges it.
func (h *Health) Check(ctx context.Context) Report {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	now := h.Clock.Now().UTC()
	r := Report{Breakers: map[string]opstate.Breaker{}, OverdueByPhase: map[string]int64{}, UnpublishedByKey: map[string]int64{}}
	var (
		mu      sync.Mutex
		facts   opstate.Facts
		effects effect.Counts
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		facts, err = opstate.Read(gctx, h.FS, h.Names, now, h.BreakerList)
		return err
	})
	g.Go(func() (err error) {
		effects, err = effect.ReadCounts(gctx, h.FS, h.Names)
		return err
	})
	count := func(into map[string]int64, key string, q firestore.Query) {
		g.Go(func() error {
			n, err := opstate.Count(gctx, q)
			if err != nil {
				return fmt.Errorf("count %s: %w", key, err)
			}
			mu.Lock()
			into[key] += n
			mu.Unlock()
			return nil
		})
	}
	unconfirmed := []string{"claimed", "released"}
	for _, p := range h.Phases {
		coll := h.FS.Collection(h.Names.Coll(p.Collection))
		// Open (a trigger owed or unconfirmed) with the first completion
		// older than stuck_after; the sweep's composite index serves it.
		count(r.OverdueByPhase, p.Name, coll.Where("_open", "==", true).
			Where("_first_completion_at", "<=", now.Add(-p.StuckAfter)).
			OrderBy("_first_completion_at", firestore.Desc))
		// A running-system document the sweep warned about (it has no
		// _open): overdue until the sweep sees it triggered.
		count(r.OverdueByPhase, p.Name, coll.Where("_overdue_alert", "==", "raised").Where("_taken_over", "==", true))
		count(r.UnpublishedByKey, p.Collection, coll.Where("_trigger_state", "in", unconfirmed))
	}
	// Alerts an earlier revision's outbox still holds, not yet moved into
	// the effect log (the sweep moves them a page at a time).
	outbox := map[string]int64{}
	count(outbox, "alerts", h.FS.Collection(h.Names.Coll(alert.Collection)).Where("waiting_since", ">", time.Time{}))
	if h.BatchColl != "" {
		count(r.UnpublishedByKey, h.BatchColl, h.FS.Collection(h.Names.Coll(h.BatchColl)).Where(h.BatchState, "in", unconfirmed))
	}
	if h.Instance != nil {
		r.Instance = h.Instance()
	}
	if err := g.Wait(); err != nil {
		r.Status, r.Error = "unavailable", err.Error()
		if h.Log != nil {
			h.Log.ErrorContext(ctx, "health: durable state unreadable", "error", err.Error())
		}
		return r
	}
	for _, n := range r.OverdueByPhase {
		r.Overdue += n
	}
	for _, n := range r.UnpublishedByKey {
		r.Unpublished += n
	}
	r.Breakers = facts.Breakers
	r.AlertsWaiting, r.EffectsOwed, r.EffectsFailed = effects.AlertsOwed+outbox["alerts"], effects.Owed, effects.Failed
	if !effects.OldestAlert.IsZero() {
		r.OldestAlertAgeS = int64(now.Sub(effects.OldestAlert).Seconds())
	}
	if !effects.OldestOwed.IsZero() {
		r.OldestEffectAgeS = int64(now.Sub(effects.OldestOwed).Seconds())
	}
	if !facts.LastSweepAt.IsZero() {
		t := facts.LastSweepAt.UTC()
		r.LastSweepAt = &t
	}
	switch {
	case facts.LastSweepAt.IsZero():
		r.Reasons = append(r.Reasons, "no sweep has run")
	case now.Sub(facts.LastSweepAt) > SweepLate:
		r.Reasons = append(r.Reasons, fmt.Sprintf("last sweep %s ago", now.Sub(facts.LastSweepAt).Round(time.Second)))
	}
	if r.Overdue > 0 {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d gate(s) overdue", r.Overdue))
	}
	if r.Unpublished > 0 {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d claim(s) not confirmed", r.Unpublished))
	}
	if r.AlertsWaiting > 0 {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d alert(s) waiting", r.AlertsWaiting))
	}
	if r.OldestEffectAgeS > int64(SweepLate.Seconds()) {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d effect(s) owed, the oldest for %s", r.EffectsOwed,
			(time.Duration(r.OldestEffectAgeS)*time.Second).String()))
	}
	if r.EffectsFailed > 0 {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d effect(s) failed: refused by their destination (phasegate effects list --state failed)", r.EffectsFailed))
	}
	for _, name := range slices.Sorted(maps.Keys(r.Breakers)) {
		if b := r.Breakers[name]; b.State != "closed" {
			r.Reasons = append(r.Reasons, "breaker "+name+" "+b.State)
		}
	}
	r.Status = "ok"
	if len(r.Reasons) > 0 {
		r.Status = "degraded"
	}
	return r
}

// ServeHTTP answers 200 for ok and degraded, 503 when Firestore cannot be
// read.
func (h *Health) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r := h.Check(req.Context())
	code := http.StatusOK
	if r.Status == "unavailable" {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(r)
}
