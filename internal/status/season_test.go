package status

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/gamedate"
)

func TestStateOf(t *testing.T) {
	first := at("01:00")
	tests := []struct {
		name string
		o    outcome
		now  string
		want string
	}{
		{"nothing recorded", outcome{}, "02:00", StateNotStarted},
		{"went on complete", outcome{started: true, triggered: true}, "02:00", StateTriggered},
		{"went on partial", outcome{started: true, triggered: true, partial: true}, "02:00", StatePartial},
		{"a trigger wins over a held check", outcome{started: true, triggered: true, held: true}, "02:00", StateTriggered},
		{"in, waiting", outcome{started: true, since: &first, limit: 4 * time.Hour}, "04:59", StateWaiting},
		{"overdue at the limit, inclusive", outcome{started: true, since: &first, limit: 4 * time.Hour}, "05:00", StateOverdue},
		{"blocked wins over overdue", outcome{started: true, held: true, since: &first, limit: 4 * time.Hour}, "06:00", StateBlocked},
		{"blocked wins over waiting", outcome{started: true, held: true, since: &first, limit: 4 * time.Hour}, "01:30", StateBlocked},
		{"only failures: no clock, waiting", outcome{started: true, limit: 4 * time.Hour}, "09:00", StateWaiting},
	}
	for _, tt := range tests {
		if got := stateOf(tt.o, at(tt.now)); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestPhaseAndBatchState(t *testing.T) {
	first := at("01:00")
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"a monitor-only check never holds", phaseState(Phase{Exists: true, FirstCompletionAt: &first,
			DataCheck: &DataCheck{Status: "blocked", Action: "monitor"}}, 4*time.Hour, at("01:30")), StateWaiting},
		{"a blocking check's error holds", phaseState(Phase{Exists: true, FirstCompletionAt: &first,
			DataCheck: &DataCheck{Status: "error", Action: "block"}}, 4*time.Hour, at("01:30")), StateBlocked},
		{"a passed check does not", phaseState(Phase{Exists: true, FirstCompletionAt: &first,
			DataCheck: &DataCheck{Status: "passed", Action: "block"}}, 4*time.Hour, at("05:00")), StateOverdue},
		{"no document", phaseState(Phase{}, 4*time.Hour, at("05:00")), StateNotStarted},
		{"a batch open past its age", batchState(false, "", first, 30*time.Minute, at("01:30")), StateOverdue},
		{"a batch open within it", batchState(false, "", first, 30*time.Minute, at("01:29")), StateWaiting},
		{"a stalled batch", batchState(true, "partial", first, 30*time.Minute, at("01:29")), StatePartial},
		{"the running coordinator's completed batch", batchState(true, "", first, 30*time.Minute, at("03:00")), StateTriggered},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	now := at("01:00") // New York's 2026-01-20
	tests := []struct {
		from, to         string
		wantFrom, wantTo string
		wantErr          string
	}{
		{"", "", "2026-01-07", "2026-01-20", ""},
		{"2026-01-01", "", "2026-01-01", "2026-01-20", ""},
		{"", "2026-01-10", "2025-12-28", "2026-01-10", ""},
		{"2026-01-19", "2026-01-19", "2026-01-19", "2026-01-19", ""},
		{"2025-11-20", "2026-01-20", "2025-11-20", "2026-01-20", ""}, // 62 dates
		{"2025-11-19", "2026-01-20", "", "", "is 63 dates; at most 62"},
		{"2026-01-20", "2026-01-19", "", "", "from 2026-01-20 is after to 2026-01-19"},
		{"2026-01-32", "", "", "", "from: "},
		{"", "19-01-2026", "", "", "to: "},
		{"2026-02-01", "", "", "", "from 2026-02-01 is after to 2026-01-20"},
	}
	for _, tt := range tests {
		from, to, err := ParseRange(tt.from, tt.to, now)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q..%q: err %v, want %q", tt.from, tt.to, err, tt.wantErr)
			}
			continue
		}
		if err != nil || from.String() != tt.wantFrom || to.String() != tt.wantTo {
			t.Errorf("%q..%q = %s..%s, %v; want %s..%s", tt.from, tt.to, from, to, err, tt.wantFrom, tt.wantTo)
		}
	}
}

func TestMinutesAfterMidnight(t *testing.T) {
	tests := []struct {
		date string
		at   time.Time
		want int
	}{
		{"2026-01-19", at("01:15"), 24*60 + 75},
		{"2026-01-20", at("01:15"), 75},
		{"2026-01-19", at("01:15").Add(59 * time.Second), 24*60 + 75}, // whole minutes, as the time is shown
		// Across the change to summer time New York's midnight is still
		// the start: 2026-03-08 02:00 EST is 03:00 EDT.
		{"2026-03-07", time.Date(2026, 3, 8, 3, 30, 0, 0, ny), 24*60 + 150},
	}
	for _, tt := range tests {
		if got := minutesAfterMidnight(tt.date, tt.at); got != tt.want {
			t.Errorf("%s %v: %d, want %d", tt.date, tt.at, got, tt.want)
		}
	}
}

func TestMedianAndOffset(t *testing.T) {
	tests := []struct {
		name       string
		v          []int
		wantMedian float64
		x          int
		wantOffset int
	}{
		{"odd", []int{10, 50, 30}, 30, 70, 40},
		{"even: the mean of the middle two", []int{10, 20, 30, 40}, 25, 25, 0},
		{"a half rounds away from zero, later", []int{10, 11}, 10.5, 11, 1},
		{"a half rounds away from zero, earlier", []int{10, 11}, 10.5, 10, -1},
		{"one late date does not move it", []int{100, 101, 99, 100, 150}, 100, 150, 50},
	}
	for _, tt := range tests {
		m := medianOf(tt.v)
		if m != tt.wantMedian {
			t.Errorf("%s: median %v, want %v", tt.name, m, tt.wantMedian)
		}
		if got := offset(tt.x, median{Minutes: m}); got != tt.wantOffset {
			t.Errorf("%s: offset of %d %d, want %d", tt.name, tt.x, got, tt.wantOffset)
		}
	}
}

// fortnight is a range as phasegate leaves it: phase 3 went on at 01:15
// (+ the date's delay) on every date but two, once in another mode; one
// date is late.
func fortnight() *Season {
	s := &Season{From: "2026-01-14", To: "2026-01-19"}
	delays := []int{0, 2, -1, 50, 1, 0}
	for i, delay := range delays {
		date := gamedate.Date{Year: 2026, Month: 1, Day: 14 + i}
		trig := time.Date(2026, 1, 15+i, 1, 15+delay, 0, 0, ny)
		p := SeasonPhase{Phase: "phase3_to_phase4", State: StateTriggered, TriggerReason: "all_complete",
			TriggeredAt: &trig, Mode: "overnight", Expected: []string{"a", "b"}, Missing: []string{}}
		done := trig.Add(50 * time.Minute)
		b := SeasonBatch{BatchID: "b" + date.String(), State: StateTriggered, Completed: 10, Expected: 10,
			StartTime: trig.Add(40 * time.Minute), CompletedAt: &done}
		day := SeasonDay{GameDate: date.String(), Phases: []SeasonPhase{p}, Batches: []SeasonBatch{b}}
		switch i {
		case 4: // same-day mode: its own median, which two dates cannot give
			day.Phases[0].Mode = "same_day"
		case 5:
			day.Phases[0] = SeasonPhase{Phase: "phase3_to_phase4", State: StateOverdue, CompletedCount: 1,
				Expected: []string{"a", "b"}, Missing: []string{"b"}, FirstCompletionAt: &trig}
			day.Batches = nil
		}
		s.Season = append(s.Season, day)
	}
	withOffsets(s.Season)
	return s
}

func TestWithOffsets(t *testing.T) {
	s := fortnight()
	var got []string
	for _, d := range s.Season {
		p := d.Phases[0]
		o := "-"
		if p.OffsetMinutes != nil {
			o = offsetText(*p.OffsetMinutes)
		}
		got = append(got, o)
	}
	// Overnight: 01:15, 01:17, 01:14, 02:05 → median 01:16 (the mean of
	// 01:15 and 01:17 is 01:16); same-day and overdue have none.
	want := []string{"−1 min", "+1 min", "−2 min", "+49 min", "-", "-"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("offsets %v, want %v", got, want)
	}
	if b := s.Season[3].Batches[0]; b.OffsetMinutes == nil || *b.OffsetMinutes != 49 { // 02:55 against 02:06
		t.Errorf("the late date's batch offset: %+v", b)
	}
}

func TestGrid(t *testing.T) {
	g := newGrid(fortnight(), ny)
	if len(g.Rows) != 6 || g.Rows[0].GameDate != "2026-01-19" || g.Rows[5].GameDate != "2026-01-14" {
		t.Fatalf("rows %+v", g.Rows)
	}
	if len(g.Columns) != 2 || g.Columns[0].Short != "3→4" || g.Columns[0].Usual != "01:16" || g.Columns[1].Usual != "02:06" {
		t.Errorf("columns %+v", g.Columns)
	}
	late := g.Rows[2].Cells[0] // 2026-01-17
	if late.State != StateTriggered || late.Glyph != "✓" || late.Time != "02:05" || late.Offset != "+49 min" || !late.Late ||
		!strings.Contains(late.Title, "49 min later than usual") {
		t.Errorf("late cell %+v", late)
	}
	overdue := g.Rows[0].Cells[0]
	if overdue.State != StateOverdue || overdue.Time != "1/2" || overdue.Offset != "" || !strings.Contains(overdue.Title, "missing b") {
		t.Errorf("overdue cell %+v", overdue)
	}
	if none := g.Rows[0].Cells[1]; none.State != StateNotStarted || none.Title == "" {
		t.Errorf("no batch: %+v", none)
	}
	want := []string{"2026-01-19: Phase 3 → 4 overdue (1/2 in)",
		"2026-01-17: Phase 3 → 4 49 min later than usual; batch 49 min later than usual"}
	if strings.Join(g.Attention, "\n") != strings.Join(want, "\n") {
		t.Errorf("attention %q, want %q", g.Attention, want)
	}
}

func TestSeasonPage(t *testing.T) {
	s := fortnight()
	s.Season[5].open = true
	s.Season[2].Batches[0].BatchID = `<script>alert(1)</script>`
	var buf bytes.Buffer
	if err := renderSeason(&buf, newSeasonPage(s, at("02:30"))); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	// html/template writes + as &#43;.
	for _, want := range []string{
		`http-equiv="refresh"`, `href="?date=2026-01-19"`, `href="?from=2026-01-08&amp;to=2026-01-13" rel="prev"`,
		`href="?from=2026-01-07&amp;to=2026-01-20"`, `rel="next"`, `data-state="overdue"`, `.st-blocked{background:#cf222e;color:#ffffff}`,
		`<span class="o late">&#43;49 min</span>`, `&lt;script&gt;`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(html, "<script") {
		t.Error("a batch id reached the page unescaped")
	}
	// Every cell carries its words twice: a title, and text a screen
	// reader reads in place of the glyph.
	cells := regexp.MustCompile(`<td class="cell st-[a-z_]+" data-state="[a-z_]+" title="[^"]+"><span class="sr">[^<]+</span><span aria-hidden="true">`).FindAllString(html, -1)
	if len(cells) != 12 {
		t.Errorf("%d described cells, want 12", len(cells))
	}
}

func TestWriteSeason(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSeason(&buf, fortnight()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Mon 01-19  ⚠ overdue 1/2", "✓ 02:05 +49 min late", "usual", "01:16", "needs a look: 2026-01-19"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

func TestRangeAround(t *testing.T) {
	d := func(s string) gamedate.Date { x, _ := gamedate.Parse(s); return x }
	now := at("01:00") // New York's 2026-01-20
	tests := []struct {
		dates []gamedate.Date
		want  string
	}{
		{[]gamedate.Date{d("2026-01-19")}, "?from=2026-01-07&to=2026-01-20"},
		{[]gamedate.Date{d("2025-12-01")}, "?from=2025-11-25&to=2025-12-08"},
		{[]gamedate.Date{d("2026-01-10"), d("2026-01-02")}, "?from=2026-01-04&to=2026-01-17"},
		{[]gamedate.Date{d("2026-01-22")}, "?from=2026-01-09&to=2026-01-22"},
	}
	for _, tt := range tests {
		if got := rangeAround(tt.dates, now); got != tt.want {
			t.Errorf("%v: %s, want %s", tt.dates, got, tt.want)
		}
	}
}
