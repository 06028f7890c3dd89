package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

var ny = gamedate.NewYork()

// at is a New York wall time on 2026-01-20.
func at(hhmm string) time.Time {
	t, err := time.ParseInLocation("2006-01-02 15:04", "2026-01-20 "+hhmm, ny)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func ptr(t time.Time) *time.Time { return &t }

func TestAxis(t *testing.T) {
	tests := []struct {
		name       string
		times      []string
		wantStep   time.Duration
		wantStart  string
		wantEnd    string
		firstLabel string
	}{
		{"a night's hour and a half", []string{"00:31", "02:07"}, 15 * time.Minute, "00:30", "02:15", "00:30"},
		{"minutes apart", []string{"01:02", "01:09"}, 5 * time.Minute, "01:00", "01:10", "01:00"},
		{"one instant still has a width", []string{"01:02"}, 5 * time.Minute, "01:00", "01:05", "01:00"},
		{"an instant on a boundary", []string{"01:00", "01:30"}, 5 * time.Minute, "01:00", "01:30", "01:00"},
		{"a long night", []string{"00:10", "05:40"}, time.Hour, "00:00", "06:00", "Jan 20 00:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ts []time.Time
			for _, s := range tt.times {
				ts = append(ts, at(s))
			}
			sc, ticks := axis(ts, ny)
			if got := sc.start.In(ny).Format("15:04"); got != tt.wantStart {
				t.Errorf("start %s, want %s", got, tt.wantStart)
			}
			if got := sc.end.In(ny).Format("15:04"); got != tt.wantEnd {
				t.Errorf("end %s, want %s", got, tt.wantEnd)
			}
			if len(ticks) > maxTicks || len(ticks) < 2 {
				t.Fatalf("%d ticks", len(ticks))
			}
			if step := sc.end.Sub(sc.start) / time.Duration(len(ticks)-1); step != tt.wantStep {
				t.Errorf("step %v, want %v", step, tt.wantStep)
			}
			if ticks[0].Label != tt.firstLabel || ticks[0].X != tlPlotLeft || ticks[len(ticks)-1].X != tlPlotRight {
				t.Errorf("ticks %+v", ticks)
			}
			for _, s := range ts {
				if !sc.contains(s) {
					t.Errorf("%v outside the axis", s)
				}
			}
		})
	}
}

// night is a date as the demo leaves it: phase 2 went on at its deadline
// without a failed processor, with an unexpected name; phase 3 went on with
// a majority, two arrived late; a batch completed.
func night() Date {
	done := func(name, hhmm string) Processor {
		return Processor{Name: name, Expected: true, Status: "success", CompletedAt: ptr(at(hhmm))}
	}
	late := done("team_offense_game_summary", "01:20")
	late.Late = true
	partial := done("team_defense_game_summary", "01:15")
	partial.Status = "partial"
	return Date{GameDate: "2026-01-19", Phases: []Phase{
		{Phase: "phase2_to_phase3", State: StatePartial, Exists: true, Triggered: true, TriggeredAt: ptr(at("01:01")),
			TriggerReason: "deadline_exceeded", TriggerGeneration: 1, TriggerPartial: true,
			FirstCompletionAt: ptr(at("00:31")), Completed: []string{"a", "b"}, Missing: []string{"br_roster"},
			Expected: []string{"a", "b", "br_roster"}, Failed: []string{"br_roster"}, Unexpected: []string{"nbac_injury_report"},
			Processors: []Processor{done("bdl_player_boxscores", "00:31"), done("nbac_schedule", "00:35"),
				{Name: "br_roster", Expected: true, FailedStatus: "failed", FailedAt: ptr(at("00:47"))},
				{Name: "nbac_injury_report", Status: "success", CompletedAt: ptr(at("00:40"))}},
			TimedRules: []Limit{{Reason: "deadline_exceeded", MinCompleted: 1, AfterSeconds: 1800, At: ptr(at("01:01"))}},
		},
		{Phase: "phase3_to_phase4", State: StatePartial, Exists: true, Triggered: true, TriggeredAt: ptr(at("01:15")),
			TriggerReason: "critical_plus_majority_60pct", TriggerGeneration: 1, TriggerPartial: true,
			FirstCompletionAt: ptr(at("01:10")), Late: []string{"team_offense_game_summary"},
			Processors: []Processor{done("player_game_summary", "01:10"), partial, late},
			DataCheck:  &DataCheck{Status: "blocked", Missing: []string{"nba_analytics.x"}, CheckedAt: ptr(at("01:14"))},
		},
		{Phase: "phase4_to_phase5", State: StateNotStarted, Processors: []Processor{{Name: "ml_feature_store", Expected: true}},
			// a rule far beyond the night is not drawn, and does not stretch the axis
			TimedRules: []Limit{{Reason: "max_timeout", MinCompleted: 1, AfterSeconds: 4 * 3600}}},
	}, Batches: []Batch{{BatchID: "batch_1", State: StateTriggered, Expected: 10, Completed: 10, Predictions: 50, Complete: true,
		Status: "success", Reason: "all_players", StartTime: at("02:00"), ProgressAt: at("02:07"),
		CompletedAt: ptr(at("02:07")), StallMinPercent: 95, StallAt: at("02:17"), MaxAgeAt: at("02:30")}}}
}

func classes(tl *timeline) map[string]int {
	n := map[string]int{}
	for _, s := range tl.Sections {
		for _, r := range s.Rows {
			for _, m := range r.Marks {
				n[m.Class]++
			}
		}
		for _, l := range s.Lines {
			n["line "+l.Class]++
		}
	}
	return n
}

func TestLayoutNight(t *testing.T) {
	d := night()
	tl := layout(d, at("02:30"), ny)
	got := classes(tl)
	want := map[string]int{
		"mark completion": 3, "mark completion partial": 1, "mark completion late": 1,
		"mark failure": 1, "mark unexpected": 1, "mark batch-complete": 1,
		"line first": 2, "line limit": 1, "line trigger": 2, "line check-blocked": 1,
		"line age": 0, "line stall": 0, // a complete batch's limits lie past its completion, outside the axis
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if tl.Now != nil {
		t.Error("a settled date has no now line")
	}
	for i, tone := range []string{StatePartial, StatePartial, StateNotStarted, StateTriggered} {
		if got := tl.Sections[i].Tone; got != tone {
			t.Errorf("section %d (%s): tone %s, want %s", i, tl.Sections[i].Heading, got, tone)
		}
	}
	// The trigger falls where the completion that fired it is drawn, and
	// before the late ones.
	p3 := tl.Sections[1]
	trigger := findLine(t, p3, "trigger")
	if x := p3.Rows[1].Marks[0].X; trigger.X != x {
		t.Errorf("trigger at x=%v, the completion that fired it at x=%v", trigger.X, x)
	}
	if late := p3.Rows[2].Marks[0]; late.X <= trigger.X || late.Text != "late" {
		t.Errorf("late mark %+v vs trigger x=%v", late, trigger.X)
	}
	// Phase 2's deadline and trigger coincide: their labels share no lane.
	p2 := tl.Sections[0]
	if lim, tr := findLine(t, p2, "limit"), findLine(t, p2, "trigger"); lim.X != tr.X || lim.LabelY == tr.LabelY {
		t.Errorf("deadline %+v, trigger %+v", lim, tr)
	}
	if r := p2.Rows[2]; r.Class != "missing" || r.Note != "missing: went on without it" || r.Marks[0].Class != "mark failure" {
		t.Errorf("br_roster row %+v", r)
	}
	if r := p2.Rows[3]; r.Class != "unexpected" || !strings.HasSuffix(r.Label, "?") {
		t.Errorf("unexpected row %+v", r)
	}
	if r := tl.Sections[2].Rows[0]; r.Note != "missing" {
		t.Errorf("an untriggered gate's missing processor: %+v", r)
	}
	// Sections do not overlap, and the drawing ends after the last.
	bottom := 0.0
	for _, s := range tl.Sections {
		if s.Y < bottom {
			t.Errorf("section %q starts at %v, inside the one above (ends %v)", s.Heading, s.Y, bottom)
		}
		bottom = s.Bottom
	}
	if tl.Height < bottom {
		t.Errorf("height %v < %v", tl.Height, bottom)
	}
	if b := tl.Sections[3].Bars[0]; b.FillX != tlPlotRight || b.Text != "10/10 players" {
		t.Errorf("progress %+v", b)
	}
	if !strings.Contains(tl.Desc, "Phase 2 → 3: triggered 01:01 EST, deadline_exceeded, generation 1, partial") {
		t.Errorf("desc %q", tl.Desc)
	}
}

func findLine(t *testing.T, s section, class string) vline {
	t.Helper()
	for _, l := range s.Lines {
		if l.Class == class {
			return l
		}
	}
	t.Fatalf("no %s line in %q", class, s.Heading)
	return vline{}
}

func TestLayoutOpenDate(t *testing.T) {
	tests := []struct {
		name      string
		date      Date
		now       string
		wantNil   bool
		wantNow   bool
		wantLines map[string]int
	}{
		{name: "nothing recorded", date: Date{GameDate: "2026-01-20", Open: true,
			Phases: []Phase{{Phase: "phase2_to_phase3", Processors: []Processor{{Name: "x", Expected: true}}}}},
			now: "01:00", wantNil: true},
		{name: "a waiting gate shows its pending deadline and now", date: Date{GameDate: "2026-01-19", Open: true,
			Phases: []Phase{{Phase: "phase2_to_phase3", Exists: true, FirstCompletionAt: ptr(at("00:31")),
				Processors: []Processor{{Name: "x", Expected: true, Status: "success", CompletedAt: ptr(at("00:31"))}},
				TimedRules: []Limit{{Reason: "deadline_exceeded", MinCompleted: 1, AfterSeconds: 1800, At: ptr(at("01:01"))}}}}},
			now: "00:50", wantNow: true, wantLines: map[string]int{"line first": 1, "line limit": 1}},
		{name: "an open batch near its end shows stall and age limits", date: Date{GameDate: "2026-01-19", Open: true,
			Batches: []Batch{{BatchID: "b", Expected: 100, Completed: 96, StartTime: at("02:00"), ProgressAt: at("02:10"),
				StallMinPercent: 95, StallAt: at("02:20"), MaxAgeAt: at("02:30")}}},
			now: "02:12", wantNow: true, wantLines: map[string]int{"line stall": 1, "line age": 1}},
		{name: "an open batch far from the end has no stall line", date: Date{GameDate: "2026-01-19", Open: true,
			Batches: []Batch{{BatchID: "b", Expected: 100, Completed: 50, StartTime: at("02:00"), ProgressAt: at("02:10"),
				StallMinPercent: 95, StallAt: at("02:20"), MaxAgeAt: at("02:30")}}},
			now: "02:12", wantNow: true, wantLines: map[string]int{"line stall": 0, "line age": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := layout(tt.date, at(tt.now), ny)
			if (tl == nil) != tt.wantNil {
				t.Fatalf("timeline %v, want nil %v", tl, tt.wantNil)
			}
			if tl == nil {
				return
			}
			if (tl.Now != nil) != tt.wantNow {
				t.Errorf("now line %+v", tl.Now)
			}
			got := classes(tl)
			for k, v := range tt.wantLines {
				if got[k] != v {
					t.Errorf("%s: %d, want %d", k, got[k], v)
				}
			}
		})
	}
}

func TestPlaceLabels(t *testing.T) {
	tests := []struct {
		name       string
		xs         []float64
		labels     []string
		wantLanes  int
		wantAnchor []string
		wantShort  []bool // the line stops under the rows: reaching its label would strike one out
	}{
		{"apart", []float64{200, 500}, []string{"first", "gen 1"}, 1, []string{"start", "start"}, []bool{false, false}},
		{"same instant", []float64{300, 300}, []string{"deadline", "gen 1"}, 2, []string{"start", "start"}, []bool{false, false}},
		{"close", []float64{300, 320}, []string{"a long label here", "b"}, 2, []string{"start", "start"}, []bool{false, true}},
		{"at the right edge", []float64{740}, []string{"trigger"}, 1, []string{"end"}, []bool{false}},
		{"none", nil, nil, 0, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ls []vline
			for i, x := range tt.xs {
				ls = append(ls, vline{X: x, Label: tt.labels[i]})
			}
			got, n := placeLabels(ls, 100, 200)
			if n != tt.wantLanes {
				t.Errorf("%d lanes, want %d", n, tt.wantLanes)
			}
			for i, l := range got {
				if l.Anchor != tt.wantAnchor[i] || l.Y1 != 100 || l.LabelY <= 200 || l.Y2 >= l.LabelY {
					t.Errorf("line %d: %+v", i, l)
				}
				if short := l.Y2 == 202; short != tt.wantShort[i] {
					t.Errorf("line %d stops under the rows: %v, want %v", i, short, tt.wantShort[i])
				}
			}
		})
	}
}

func TestDecodePhase(t *testing.T) {
	p := config.Default().Phases[0]
	p.Timed[0].Enabled = config.On
	date, _ := gamedate.Parse("2026-01-19")
	first := at("00:31")
	doc := map[string]any{
		"bdl_player_boxscores": map[string]any{"status": "success", "completed_at": first, "record_count": int64(420)},
		"nbac_schedule":        map[string]any{"status": "partial", "completed_at": at("00:35")},
		"br_roster":            map[string]any{"status": "success", "completed_at": at("01:20")},
		"_failed_attempts": map[string]any{
			"br_roster":           map[string]any{"status": "failed", "at": at("00:47")},
			"odds_api_game_lines": map[string]any{"status": "no_data", "at": at("00:40")}},
		"_unexpected":          map[string]any{"nbac_injury_report": map[string]any{"status": "success", "at": at("00:40")}},
		"_late_processors":     []any{"br_roster"},
		"_first_completion_at": first, "_triggered": true, "_triggered_at": at("01:01"),
		"_trigger_generation": int64(1), "_trigger_partial": true, "_trigger_reason": "deadline_exceeded",
		"_data_check": map[string]any{"check": "R-007", "action": "monitor", "status": "passed",
			"counts": map[string]any{"nba_raw.nbac_schedule": int64(12)}, "missing": []any{}, "checked_at": at("01:00"),
			"tables": int64(5), "bytes_processed": int64(1024)},
	}
	ps := phase(&p, date, doc, at("02:00"))
	byName := map[string]Processor{}
	for _, pr := range ps.Processors {
		byName[pr.Name] = pr
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"a completion with its count", byName["bdl_player_boxscores"].CompletedAt.Equal(first) && *byName["bdl_player_boxscores"].RecordCount == 420},
		{"partial counts as completed", byName["nbac_schedule"].Status == "partial"},
		{"a failure healed by a late success keeps both", byName["br_roster"].Late && byName["br_roster"].FailedStatus == "failed" && byName["br_roster"].CompletedAt != nil},
		{"a failure alone is missing", byName["odds_api_game_lines"].CompletedAt == nil && byName["odds_api_game_lines"].FailedStatus == "no_data"},
		{"unexpected names come last", !ps.Processors[len(ps.Processors)-1].Expected && ps.Processors[len(ps.Processors)-1].CompletedAt != nil},
		{"completed and missing", len(ps.Completed) == 3 && len(ps.Missing) == 3},
		{"the deadline falls 30 min after the first completion", len(ps.TimedRules) == 1 && ps.TimedRules[0].At.Equal(first.Add(30*time.Minute))},
		{"the trigger", ps.Triggered && ps.TriggerGeneration == 1 && ps.TriggerPartial},
		{"the data check", ps.DataCheck != nil && ps.DataCheck.Status == "passed" && ps.DataCheck.Counts["nba_raw.nbac_schedule"] == 12 &&
			ps.DataCheck.Check == "R-007" && ps.DataCheck.Action == "monitor" && ps.DataCheck.Tables == 5},
		{"the data check in words", dataCheckText(ps.DataCheck, ny) == "data check R-007 passed (monitor only) at 01:00 EST"},
		{"its state", ps.State == StatePartial},
	}
	for _, tt := range tests {
		if !tt.ok {
			t.Errorf("%s: %+v", tt.name, ps)
		}
	}
	if none := phase(&p, date, nil, at("02:00")); none.Exists || len(none.Processors) != 6 || none.TimedRules[0].At != nil || none.DataCheck != nil {
		t.Errorf("no document: %+v", none)
	}
	p.Timed[0].Enabled = config.Off
	if off := phase(&p, date, doc, at("02:00")); len(off.TimedRules) != 0 {
		t.Errorf("a disabled rule is drawn: %+v", off.TimedRules)
	}
}

func TestOpen(t *testing.T) {
	d19, _ := gamedate.Parse("2026-01-19")
	d10, _ := gamedate.Parse("2026-01-10")
	done := Phase{Triggered: true}
	tests := []struct {
		name string
		day  Date
		date gamedate.Date
		want bool
	}{
		{"a gate waits", Date{Phases: []Phase{done, {}}}, d19, true},
		{"every gate triggered, no batch", Date{Phases: []Phase{done}}, d19, false},
		{"a batch is open", Date{Phases: []Phase{done}, Batches: []Batch{{Complete: false}}}, d19, true},
		{"past the sweep's look-back", Date{Phases: []Phase{{}}}, d10, false},
	}
	for _, tt := range tests {
		if got := open(tt.day, tt.date, at("02:00"), 72*time.Hour); got != tt.want {
			t.Errorf("%s: open %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPage(t *testing.T) {
	d := night()
	d.Batches[0].BatchID = `batch_<script>alert(1)</script>`
	open := night()
	open.GameDate, open.Open = "2026-01-20", true
	d19, _ := gamedate.Parse("2026-01-19")
	d20, _ := gamedate.Parse("2026-01-20")
	tests := []struct {
		name        string
		days        []Date
		dates       []gamedate.Date
		wantRefresh bool
		want        []string
	}{
		{"a settled date", []Date{d}, []gamedate.Date{d19}, false,
			[]string{`href="?date=2026-01-18" rel="prev"`, `href="?date=2026-01-20" rel="next"`, `class="mark completion late"`,
				`role="img" aria-label="team_offense_game_summary completed (success) at 01:20 EST, after the trigger (late)"`,
				`&lt;script&gt;`, `<desc id="tl-desc">`}},
		{"an open date refreshes", []Date{open, d}, []gamedate.Date{d20, d19}, true,
			[]string{`http-equiv="refresh" content="30"`, `href="?date=2026-01-21" rel="next"`, `href="?date=2026-01-18" rel="prev"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pd := newPage(tt.days, tt.dates, at("02:30"))
			var buf bytes.Buffer
			if err := renderPage(&buf, pd); err != nil {
				t.Fatal(err)
			}
			html := buf.String()
			if got := strings.Contains(html, "http-equiv"); got != tt.wantRefresh {
				t.Errorf("refresh %v, want %v", got, tt.wantRefresh)
			}
			for _, w := range tt.want {
				if !strings.Contains(html, w) {
					t.Errorf("page lacks %s", w)
				}
			}
			if strings.Contains(html, "<script>") {
				t.Error("a batch id reached the page unescaped")
			}
			if n := strings.Count(html, `class="mark completion`); n != 5*len(tt.days) {
				t.Errorf("%d completion marks, want %d", n, 5*len(tt.days))
			}
		})
	}
}
