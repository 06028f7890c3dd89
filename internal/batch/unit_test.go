package batch

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/errs"
)

func TestParseCompletion(t *testing.T) {
	for _, c := range []struct {
		in     string
		reason string // "" for valid
		preds  int64
	}{
		{`{"player_lookup":"lebronjames","game_date":"2026-01-20","predictions_generated":5,"batch_id":"b"}`, "", 5},
		{`{"player_lookup":"a/b..","game_date":"2026-01-20","batch_id":"b"}`, "", 0},
		{`{"player_lookup":"x","game_date":"2026-01-20","batch_id":"b","predictions_generated":null}`, "", 0},
		{`{"player_lookup":"x","game_date":"2026-01-20","batch_id":"b","predictions_generated":3.0}`, "", 3},
		{`{"player_lookup":"x","game_date":"2026-01-20","batch_id":"b","unknown":1}`, "", 0},
		{``, "empty_message", 0},
		{`[1]`, "not_json_object", 0},
		{`{"player_lookup":`, "invalid_json", 0},
		{`{"game_date":"2026-01-20","batch_id":"b"}`, "missing_player_lookup", 0},
		{`{"player_lookup":"x","game_date":"2026-01-20"}`, "missing_batch_id", 0},
		{`{"player_lookup":"x","game_date":"2026-01-20","batch_id":"  "}`, "missing_batch_id", 0},
		{`{"player_lookup":"x","batch_id":"b"}`, "missing_game_date", 0},
		{`{"player_lookup":"x","batch_id":"b","game_date":"2026-02-30"}`, "invalid_game_date", 0},
		{`{"player_lookup":"x","batch_id":"b","game_date":"2026-01-20","predictions_generated":-1}`, "invalid_predictions_generated", 0},
		{`{"player_lookup":"x","batch_id":"b","game_date":"2026-01-20","predictions_generated":1.5}`, "invalid_predictions_generated", 0},
		{`{"player_lookup":"x","batch_id":"b","game_date":"2026-01-20","predictions_generated":"5"}`, "invalid_predictions_generated", 0},
		{`{"player_lookup":"` + strings.Repeat("x", MaxPlayerBytes+1) + `","batch_id":"b","game_date":"2026-01-20"}`, "player_lookup_too_long", 0},
	} {
		got, err := ParseCompletion([]byte(c.in))
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%.60s: %v", c.in, err)
		case c.reason == "" && got.PredictionsGenerated != c.preds:
			t.Errorf("%.60s: predictions %d, want %d", c.in, got.PredictionsGenerated, c.preds)
		case c.reason != "" && (!errs.Is(err, errs.Invalid) || errs.ReasonOf(err) != c.reason):
			t.Errorf("%.60s: error %v (reason %q), want invalid %q", c.in, err, errs.ReasonOf(err), c.reason)
		}
	}
}

// unitIn finds a batch id whose flag bucket is in [lo, hi).
func unitIn(lo, hi int) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("batch_%d", i)
		if b := config.Bucket(id); b >= lo && b < hi {
			return id
		}
	}
}

func TestModeFor(t *testing.T) {
	pct := func(n int) config.Flag { return config.Flag{Percent: n} }
	for _, c := range []struct {
		sub, dual, reads config.Flag
		unit             string
		want             Mode
	}{
		{config.Off, config.On, config.On, "b", ModeLegacy},
		{config.Off, config.Off, config.Off, "b", ModeLegacy},
		{config.On, config.On, config.Off, "b", ModeDualArrayReads},
		{config.On, config.On, config.On, "b", ModeDualSubReads},
		{config.On, config.Off, config.On, "b", ModeSubOnly},
		// 50 % subcollection, 50 % dual writes, 10 % subcollection reads: one
		// bucket per batch id, shared by the three flags.
		{pct(50), pct(50), pct(10), unitIn(0, 10), ModeDualSubReads},
		{pct(50), pct(50), pct(10), unitIn(10, 50), ModeDualArrayReads},
		{pct(50), pct(50), pct(10), unitIn(50, 100), ModeLegacy},
		{pct(50), pct(10), pct(50), unitIn(10, 50), ModeSubOnly},
	} {
		cfg := config.Batch{EnableSubcollection: c.sub, DualWrite: c.dual, UseSubcollectionReads: c.reads}
		if got := ModeFor(cfg, c.unit); got != c.want {
			t.Errorf("%v/%v/%v for %s (bucket %d): %v, want %v", c.sub, c.dual, c.reads, c.unit, config.Bucket(c.unit), got, c.want)
		}
	}
}

// The shard count follows the arrival rate, is bounded by what the batch
// could fill and by MaxShards, and never drops below the legacy count.
func TestShardsFor(t *testing.T) {
	for _, c := range []struct {
		expected int64
		rate     int
		want     int
	}{
		{10, 34, LegacyShards},
		{450, 34, 45},
		{10000, 34, 114},
		{100000, 34, 114},
		{10000, 1, LegacyShards},
		{10000, 100, 334},
		{1000000, 10000, MaxShards},
	} {
		if got := ShardsFor(c.expected, c.rate); got != c.want {
			t.Errorf("ShardsFor(%d, %d) = %d, want %d", c.expected, c.rate, got, c.want)
		}
	}
}

// lowerTail is an upper bound of the binomial lower tail, so skipping on it
// misses a completion with probability at most epsilon.
func TestLowerTailBoundsTheBinomial(t *testing.T) {
	const Shards = LegacyShards
	p := 1.0 / Shards
	for _, n := range []int64{50, 450, 1500, 10000} {
		cdf, pmf := 0.0, math.Pow(1-p, float64(n))
		for d := int64(0); d <= n/Shards; d++ {
			cdf += pmf
			if b := lowerTail(n, p, d); b < cdf*(1-1e-9) {
				t.Fatalf("n=%d d=%d: bound %g below P(X<=d)=%g", n, d, b, cdf)
			}
			pmf *= float64(n-d) / float64(d+1) * p / (1 - p)
		}
	}
	mean := int64(10000 / Shards)
	far, near := mean/4, mean-2*int64(math.Sqrt(float64(mean)))
	if lowerTail(10000, p, far) > epsilon || lowerTail(10000, p, near) < epsilon {
		t.Fatalf("bound does not separate far from near: %g %g", lowerTail(10000, p, far), lowerTail(10000, p, near))
	}
}

// canSkip never skips once the last full read shows the target reached,
// and skips a completion the last read already included.
func TestCanSkip(t *testing.T) {
	const Shards = LegacyShards
	m := &meta{expected: 10000, n: Shards}
	if m.canSkip(0, 1) {
		t.Fatal("skipped without any full read")
	}
	vals := make([]int64, Shards)
	for k := range vals {
		vals[k] = 100
	}
	m.setShards(vals) // 3,200 of 10,000
	if !m.canSkip(3, 101) {
		t.Fatal("one completion after a read at 32 % was not skipped")
	}
	if !m.canSkip(3, 90) {
		t.Fatal("a completion the read included was not skipped")
	}
	if m.canSkip(3, 100+6800/Shards) {
		t.Fatal("skipped although the shard grew as much as the rest of the batch would make it")
	}
	for k := range vals {
		vals[k] = 10000 / Shards
	}
	m.setShards(vals)
	m.base = 10000 - (10000/Shards)*Shards // the read reached the target
	if m.canSkip(1, 10000/Shards+1) {
		t.Fatal("skipped after the target was reached")
	}
}

// markComplete touches only the batch it names: a batch id that extends
// another with "\x00" (a valid document id) must not be marked complete with
// it, or its later completions would be acknowledged as late and lost.
func TestMarkCompleteExactBatch(t *testing.T) {
	c := newCache(16)
	ready := func(key string) *meta {
		m, _ := c.get(key)
		close(m.ready)
		return m
	}
	a := ready("b\x00" + ModeSubOnly.String())
	other := ready("b\x00x\x00" + ModeSubOnly.String())
	c.markComplete("b")
	if !a.isComplete() {
		t.Fatal("the named batch is not marked complete")
	}
	if other.isComplete() {
		t.Fatal(`marking batch "b" complete marked batch "b\x00x" complete too`)
	}
}

// A full cache evicts finished batches before open ones.
func TestCacheEvictsFinishedFirst(t *testing.T) {
	c := newCache(4)
	for i := range 4 {
		m, _ := c.get(fmt.Sprint("k", i))
		close(m.ready)
		if i%2 == 0 {
			m.setComplete()
		}
	}
	c.get("k4")
	for _, k := range []string{"k1", "k3", "k4"} {
		if _, ok := c.m[k]; !ok {
			t.Errorf("open entry %s was evicted", k)
		}
	}
	if len(c.m) > 4 {
		t.Fatalf("cache holds %d entries, max 4", len(c.m))
	}
}
