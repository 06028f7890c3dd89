package gate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// BenchmarkGateContention measures how long 15 simultaneous completions on
// one date take to settle (5 processors × 3 deliveries, with redelivery on
// 5xx), through phasegate's optimistic gate and through the design it
// replaces: a Firestore transaction that reads the document and updates it.
// It reports seconds to settle and the 5xx answers or failed transactions.
// Rerun: make bench-gate.
func BenchmarkGateContention(b *testing.B) {
	d, _ := gamedate.Parse("2025-10-21")
	b.Run("optimistic", func(b *testing.B) {
		e := apptest.New(b)
		var settle time.Duration
		for i := range b.N {
			date := d.AddDays(i).String()
			var wg sync.WaitGroup
			start := time.Now()
			for _, p := range phase4 {
				for range 3 {
					wg.Go(func() {
						if c := e.Deliver("Phase4To5", "m-"+date+p, apptest.Completion(p, date, "success")); c >= 300 {
							b.Errorf("status %d", c)
						}
					})
				}
			}
			wg.Wait()
			settle += time.Since(start)
		}
		b.ReportMetric(settle.Seconds()/float64(b.N), "s/settle")
		b.ReportMetric(float64(e.Metrics.Get("Phase4To5.retry"))/float64(b.N), "5xx/date")
		b.ReportMetric(float64(e.Metrics.Get("phase4_to_phase5.write_conflict"))/float64(b.N), "conflicts/date")
	})
	b.Run("transaction", func(b *testing.B) {
		e := apptest.New(b)
		failed := 0
		var settle time.Duration
		for i := range b.N {
			ref := e.App.FS.Collection("txn_baseline").Doc(d.AddDays(i).String())
			var wg sync.WaitGroup
			var mu sync.Mutex
			start := time.Now()
			for _, p := range phase4 {
				for range 3 {
					wg.Go(func() {
						err := e.App.FS.RunTransaction(context.Background(), func(ctx context.Context, tx *firestore.Transaction) error {
							snap, err := tx.Get(ref)
							n := int64(0)
							if err == nil {
								if _, done := snap.Data()[p]; done {
									return nil
								}
								n, _ = snap.Data()["_completed_count"].(int64)
							}
							return tx.Set(ref, map[string]any{p: map[string]any{"status": "success"}, "_completed_count": n + 1}, firestore.MergeAll)
						})
						if err != nil {
							mu.Lock()
							failed++
							mu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			settle += time.Since(start)
		}
		b.ReportMetric(settle.Seconds()/float64(b.N), "s/settle")
		b.ReportMetric(float64(failed)/float64(b.N), "failed_txns/date")
	})
}
