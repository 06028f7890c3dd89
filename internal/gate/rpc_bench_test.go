package gate_test

import (
	"fmt"
	"testing"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// BenchmarkGateRPCs measures the Firestore RPCs and document writes one
// completion costs:
// recorded without triggering, recorded and triggering, and a duplicate;
// with idempotency keys on (the default) and off. It reports RPCs per event
// and prints the methods. Rerun: make bench-gate.
func BenchmarkGateRPCs(b *testing.B) {
	for _, keys := range []string{"true", "false"} {
		b.Run("keys="+keys, func(b *testing.B) {
			count, c := apptest.CountRPCs(b)
			e := apptest.New(b, apptest.WithConfig(func(cfg *config.Config) {
				cfg.Idempotency.Enabled, _ = config.ParseFlag(keys)
			}), count)
			kinds := map[string]*[3]int{"record": {}, "trigger": {}, "duplicate": {}}
			methods := map[string]map[string]int{}
			add := func(kind string, n int, m map[string]int) {
				kinds[kind][0] += n
				kinds[kind][1]++
				kinds[kind][2] += c.TakeWrites()
				if methods[kind] == nil {
					methods[kind] = m
				}
			}
			d, _ := gamedate.Parse("2025-10-21")
			b.ResetTimer()
			for i := range b.N {
				date := d.AddDays(i).String()
				c.Take()
				c.TakeWrites()
				for j, p := range phase4 {
					if code := e.PushOnce("Phase4To5", fmt.Sprintf("m-%d-%d", i, j), apptest.Completion(p, date, "success")); code >= 300 {
						b.Fatalf("status %d", code)
					}
					kind := "record"
					if j == len(phase4)-1 {
						kind = "trigger"
					}
					n, m, _ := c.Take()
					add(kind, n, m)
				}
				e.PushOnce("Phase4To5", fmt.Sprintf("m-%d-0", i), apptest.Completion(phase4[0], date, "success"))
				n, m, _ := c.Take()
				add("duplicate", n, m)
			}
			b.StopTimer()
			for kind, v := range kinds {
				b.ReportMetric(float64(v[0])/float64(v[1]), "rpcs/"+kind)
				b.ReportMetric(float64(v[2])/float64(v[1]), "writes/"+kind)
			}
			if b.N > 1 {
				b.Logf("keys=%s methods: record %v; trigger %v; duplicate %v", keys, methods["record"], methods["trigger"], methods["duplicate"])
			}
		})
	}
}
