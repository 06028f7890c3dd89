package takeover

import (
	"testing"
	"time"
)

func TestTime(t *testing.T) {
	want := time.Date(2026, 1, 20, 6, 12, 3, 123456000, time.UTC)
	for _, tc := range []struct {
		name string
		in   any
		want time.Time
	}{
		{"timestamp", want, want},
		{"timestamp in another zone", want.In(time.FixedZone("PT", -8*3600)), want},
		{"python isoformat utc", "2026-01-20T06:12:03.123456+00:00", want},
		{"zulu", "2026-01-20T06:12:03.123456Z", want},
		{"offset", "2026-01-20T01:12:03.123456-05:00", want},
		{"naive is utc", "2026-01-20T06:12:03.123456", want},
		{"naive without fraction", "2026-01-20T06:12:03", want.Truncate(time.Second)},
		{"space separator", "2026-01-20 06:12:03.123456+00:00", want},
		{"garbage", "yesterday", time.Time{}},
		{"empty", "", time.Time{}},
		{"absent", nil, time.Time{}},
		{"wrong type", int64(12), time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Time(tc.in); !got.Equal(tc.want) {
				t.Fatalf("Time(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestLegacy(t *testing.T) {
	for _, tc := range []struct {
		name string
		data map[string]any
		want bool
	}{
		{"python triggered", map[string]any{"_triggered": true, "_triggered_at": time.Now()}, true},
		{"python untriggered", map[string]any{"_triggered": false}, false},
		{"no flag", map[string]any{"x": 1}, false},
		{"phasegate published", map[string]any{"_triggered": true, "_trigger_generation": int64(1), "_trigger_state": "published"}, false},
		{"phasegate id only", map[string]any{"_triggered": true, "_trigger_id": "p:d:1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Legacy(tc.data); got != tc.want {
				t.Fatalf("Legacy = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		data map[string]any
		want string
	}{
		{map[string]any{"_trigger_reason": "tier2_timeout"}, "tier2_timeout"},
		{map[string]any{"_triggered_reason": "deadline_exceeded"}, "deadline_exceeded"},
		{map[string]any{"_trigger_reason": "manual", "_triggered_reason": "deadline_exceeded"}, "manual"},
		{map[string]any{}, ""},
	} {
		if got := Reason(tc.data); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.data, got, tc.want)
		}
	}
}
