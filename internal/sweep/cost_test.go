package sweep_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// TestSweepReadCost measures what one sweep reads with 30 days of gate
// documents (90, three phases) of which 3 are open, none overdue: the query
// returns only the open gates in the look-back, the overdue queries return
// nothing, and the direct read of the look-back's dates (which finds
// documents the running system wrote) one document per existing date of the
// look-back and phase — bounded by the look-back, not by history.
func TestSweepReadCost(t *testing.T) {
	count, rpcs := apptest.CountRPCs(t)
	e := apptest.New(t, count, apptest.WithConfig(func(c *config.Config) {
		for i := range c.Phases {
			c.Phases[i].StuckAfter = 48 * time.Hour // the open gates are at most a day old
		}
	}))
	start, _ := gamedate.Parse("2025-12-20")
	procs := map[string][]string{
		"Phase2To3": {"BdlPlayerBoxscoresProcessor", "BigDataBallPbpProcessor", "OddsApiGameLinesBatchProcessor", "NbacScheduleProcessor", "NbacGamebookProcessor", "BrRostersCurrentProcessor"},
		"Phase3To4": {"PlayerGameSummaryProcessor", "TeamDefenseGameSummaryProcessor", "TeamOffenseGameSummaryProcessor", "UpcomingPlayerGameContextProcessor", "UpcomingTeamGameContextProcessor"},
		"Phase4To5": {"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor", "PlayerCompositeFactorsProcessor", "PlayerDailyCacheProcessor", "MLFeatureStoreProcessor"},
	}
	for day := range 30 {
		date := start.AddDays(day).String()
		e.Clock.Set(apptest.Start.Add(time.Duration(day-29) * 24 * time.Hour))
		for ep, ps := range procs {
			if day == 29 && ep == "Phase4To5" {
				ps = ps[:2] // the open ones: the last day's phase 4 …
			}
			if day == 28 && ep != "Phase4To5" {
				ps = ps[:1] // … and phases 2 and 3 of the day before
			}
			for i, p := range ps {
				if c := e.Deliver(ep, fmt.Sprintf("%s-%s-%d", ep, date, i), apptest.Completion(p, date, "success")); c >= 300 {
					t.Fatalf("status %d", c)
				}
			}
		}
	}
	// The first sweep after a deploy also carries the gates' generations
	// into the ledger, once (SeedLedgerOnce); measured is every one after.
	sweepOnce(t, e)
	rpcs.Take()
	sweepOnce(t, e)
	total, methods, docs := rpcs.Take()
	t.Logf("one sweep over 30 days × 3 phases with 3 open gates: %d RPCs %v, %d documents read", total, methods, docs)
	// Three queries return the three open gates; the overdue queries, the
	// alert outbox query and the batch query return nothing; one BatchGet per
	// phase reads the look-back's dates. No gate triggers, so the one write
	// is the sweep's heartbeat.
	if methods["/google.firestore.v1.Firestore/Commit"] != 1 {
		t.Errorf("sweep committed %d times, want 1 (the heartbeat)", methods["/google.firestore.v1.Firestore/Commit"])
	}
	now := e.Clock.Now()
	window := 0
	for d := gamedate.Today(now).AddDays(1); d.Compare(gamedate.Today(now.Add(-e.Cfg.Sweep.LookBack))) >= 0; d = d.AddDays(-1) {
		if d.Compare(start.AddDays(29)) <= 0 {
			window++ // a date with documents
		}
	}
	if want := 3 + 3*window; docs != want || methods["/google.firestore.v1.Firestore/BatchGetDocuments"] != 3 {
		t.Fatalf("sweep read %d documents (%v), want %d: the open gates and the look-back's %d dates × 3 phases", docs, methods, want, window)
	}
}
