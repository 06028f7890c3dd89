package sweep_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/errs"
)

// A query the sweep sends that fails (here the batch query, as production
// fails it when its composite index is missing) is logged at ERROR, named
// in the report and answered 5xx so Pub/Sub redelivers the run, while
// everything the other queries found is still done: the due deadline
// fires. A redelivery repeats nothing already done.
func TestFailedSweepQueryIsReported(t *testing.T) {
	failing, failed := apptest.FailQueries(t, "prediction_batches")
	logs := &apptest.Logs{}
	e := apptest.New(t, deadline(config.On), failing, apptest.WithLogs(logs))
	sub := e.Sub("nba-phase3-trigger")
	if c := e.Deliver("Phase2To3", "m1", apptest.Completion("BdlPlayerBoxscoresProcessor", "2026-01-19", "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	e.Clock.Advance(30 * time.Minute)

	if c := e.PushOnce("Sweep", "sweep-1", map[string]any{}); c != 500 {
		t.Fatalf("sweep with a failed query answered %d, want 500", c)
	}
	if n := failed.Load(); n != 1 {
		t.Fatalf("%d batch queries failed, want 1", n)
	}
	if got := sub.Drain(t, 2*time.Second); len(got) != 1 {
		t.Fatalf("the gate query's due deadline: %d triggers, want 1", len(got))
	}
	var logged bool
	for _, l := range logs.Lines(t) {
		if l["severity"] == "ERROR" && l["collection"] == "prediction_batches" {
			logged = true
		}
	}
	if !logged {
		t.Fatalf("no ERROR line names the failed query:\n%s", logs.Text())
	}

	r, err := e.App.Sweeper.Run(context.Background())
	if !errs.Is(err, errs.Transient) || !slices.Equal(r.QueryFailed, []string{"prediction_batches"}) {
		t.Fatalf("redelivered run: report %+v, error %v; want prediction_batches failed, transient", r, err)
	}
	if got := sub.Drain(t, time.Second); len(got) != 0 {
		t.Fatalf("the redelivery published %d more triggers", len(got))
	}
	if n := e.Metrics.Get("sweep.query_failed"); n != 2 {
		t.Fatalf("sweep.query_failed = %d, want 2", n)
	}
}
