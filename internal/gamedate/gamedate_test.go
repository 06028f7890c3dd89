package gamedate

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for in, ok := range map[string]bool{
		"2026-01-19": true, "2028-02-29": true, "2026-02-29": false, "2026-13-01": false,
		"2026-1-19": false, "20260119": false, "2026-01-19T00:00:00Z": false, "": false,
		"1999-12-31": false, "2101-01-01": false, "../../x": false, " 2026-01-19": false,
	} {
		d, err := Parse(in)
		if (err == nil) != ok {
			t.Errorf("Parse(%q) error = %v, want ok=%v", in, err, ok)
		}
		if ok && d.String() != in {
			t.Errorf("Parse(%q).String() = %q", in, d)
		}
	}
}

func TestTodayIsNewYorks(t *testing.T) {
	for instant, want := range map[string]string{
		"2026-01-20T04:59:59Z": "2026-01-19", // 23:59:59 EST
		"2026-01-20T05:00:00Z": "2026-01-20",
		"2026-07-02T03:59:59Z": "2026-07-01", // 23:59:59 EDT
		"2026-07-02T04:00:00Z": "2026-07-02",
	} {
		at, _ := time.Parse(time.RFC3339, instant)
		if got := Today(at).String(); got != want {
			t.Errorf("Today(%s) = %s, want %s", instant, got, want)
		}
	}
}

func TestCompareAndAddDays(t *testing.T) {
	a, _ := Parse("2026-02-28")
	if b := a.AddDays(1); b.String() != "2026-03-01" || a.Compare(b) != -1 || b.Compare(a) != 1 || a.Compare(a) != 0 {
		t.Fatalf("AddDays/Compare: %s", b)
	}
}
