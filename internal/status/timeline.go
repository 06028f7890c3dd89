package status

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// The timeline's geometry, in SVG user units. The page scales the drawing
// to its width but never below minWidth CSS pixels (a phone scrolls it
// sideways), so these sizes stay legible.
const (
	tlWidth      = 760.0
	tlPlotLeft   = 196.0 // processor names to the left
	tlPlotRight  = 744.0
	tlAxis       = 30.0 // tick labels above the first section
	tlHeading    = 26.0
	tlRow        = 20.0
	tlLane       = 15.0 // one line of vertical-line labels
	tlGap        = 12.0 // between sections
	tlCharWidth  = 6.2  // estimated width of a character at the labels' font size
	tlLabelChars = 30   // longer processor names are cut (the full name is in the title)
	tlMaxExtra   = 8    // unexpected names drawn per phase; the rest are counted
)

// timeline is one date drawn: everything the template needs, positions
// computed. It is pure data so that the layout is unit-tested.
type timeline struct {
	Width, Height float64
	PlotLeft      float64
	PlotRight     float64
	Title, Desc   string // the drawing's text alternative
	Ticks         []tick
	Sections      []section
	Now           *vline // while the date is open
}

type tick struct {
	X     float64
	Label string
}

// section is a phase gate or a batch: a heading, rows, and vertical lines
// whose labels sit in lanes under the rows.
type section struct {
	Y       float64 // top
	Heading string
	State   string // where it stands, in words
	Tone    string // the gate's or batch's state (stateOf), which colours it
	Rows    []row
	Lines   []vline
	Spans   []span // a batch's life
	Bars    []progress
	Bottom  float64
}

type row struct {
	Y     float64 // centre line
	Label string  // cut to tlLabelChars
	Name  string  // full, for the title
	Class string  // "" | missing | unexpected
	Note  string  // right-aligned text at the row's end ("missing")
	Marks []mark
}

// mark is one thing that happened to a processor. Class names what for
// the stylesheet and for tests: "mark completion", "mark completion late",
// "mark completion partial", "mark failure", "mark unexpected",
// "mark batch-complete".
type mark struct {
	X, Y  float64
	Shape string // circle | cross | diamond
	Class string
	Title string // the text alternative
	Text  string // a word beside the mark ("late")
}

// vline is an instant that concerns a whole section: first completion,
// a timed rule, the trigger, a data check, a batch limit, now.
type vline struct {
	X, Y1, Y2 float64
	Class     string // first | limit | trigger | check-<status> | age | stall | now
	Label     string
	LabelX    float64
	LabelY    float64
	Anchor    string // start | end
	Title     string
}

type span struct {
	X1, X2, Y float64
	Class     string
	Title     string
}

// progress is a batch's count as a bar over the plot's width (0–100 %).
type progress struct {
	Y, FillX   float64
	StallX     float64 // the stall threshold's share
	StallLabel string
	Text       string
	Title      string
}

// timeScale maps instants onto the plot.
type timeScale struct {
	start, end  time.Time
	left, right float64
}

func (s timeScale) x(t time.Time) float64 {
	total := s.end.Sub(s.start)
	if total <= 0 {
		return s.left
	}
	x := s.left + float64(t.Sub(s.start))/float64(total)*(s.right-s.left)
	return math.Round(x*10) / 10
}

func (s timeScale) contains(t time.Time) bool { return !t.Before(s.start) && !t.After(s.end) }

// tickSteps are the axis spacings tried, smallest first.
var tickSteps = []time.Duration{5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour}

// maxTicks bounds the axis labels so that they never overlap.
const maxTicks = 9

// axis picks the range and its ticks: from the earliest to the latest
// instant, widened to whole steps of the finest spacing that needs at most
// maxTicks labels. Steps align to New York's clock.
func axis(times []time.Time, loc *time.Location) (timeScale, []tick) {
	lo, hi := times[0], times[0]
	for _, t := range times[1:] {
		if t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	step := tickSteps[len(tickSteps)-1]
	var start, end time.Time
	for _, s := range tickSteps {
		start, end = floorStep(lo, s, loc), floorStep(hi, s, loc)
		if end.Before(hi) || end.Equal(start) {
			end = end.Add(s)
		}
		if int(end.Sub(start)/s)+1 <= maxTicks {
			step = s
			break
		}
	}
	sc := timeScale{start: start, end: end, left: tlPlotLeft, right: tlPlotRight}
	var ticks []tick
	prevDay := ""
	for t := start; !t.After(end); t = t.Add(step) {
		l := t.In(loc)
		label := l.Format("15:04")
		if day := l.Format("Jan 2"); day != prevDay && (prevDay != "" || l.Hour() == 0 && l.Minute() == 0) {
			label = day + " " + label
			prevDay = day
		} else if prevDay == "" {
			prevDay = day
		}
		ticks = append(ticks, tick{X: sc.x(t), Label: label})
	}
	return sc, ticks
}

// floorStep rounds t down to a multiple of step since local midnight.
func floorStep(t time.Time, step time.Duration, loc *time.Location) time.Time {
	l := t.In(loc)
	midnight := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
	return midnight.Add(l.Sub(midnight) / step * step)
}

// instants are the times the drawing must show: everything recorded, the
// limits still ahead of an open gate or batch, and now while the date is
// open.
func instants(d Date, now time.Time) []time.Time {
	var ts []time.Time
	add := func(t *time.Time) {
		if t != nil && !t.IsZero() {
			ts = append(ts, *t)
		}
	}
	for _, p := range d.Phases {
		for _, pr := range p.Processors {
			add(pr.CompletedAt)
			add(pr.FailedAt)
		}
		add(p.FirstCompletionAt)
		add(p.TriggeredAt)
		if p.DataCheck != nil {
			add(p.DataCheck.CheckedAt)
		}
		if !p.Triggered {
			for _, l := range p.TimedRules {
				add(l.At)
			}
		}
	}
	for _, b := range d.Batches {
		add(&b.StartTime)
		add(&b.ProgressAt)
		add(b.CompletedAt)
		if !b.Complete {
			add(&b.MaxAgeAt)
			if stalls(b) {
				add(&b.StallAt)
			}
		}
	}
	if d.Open && len(ts) > 0 {
		ts = append(ts, now)
	}
	return ts
}

// layout draws a date; nil when nothing has happened on it yet.
func layout(d Date, now time.Time, loc *time.Location) *timeline {
	ts := instants(d, now)
	if len(ts) == 0 {
		return nil
	}
	sc, ticks := axis(ts, loc)
	tl := &timeline{Width: tlWidth, PlotLeft: tlPlotLeft, PlotRight: tlPlotRight, Ticks: ticks,
		Title: "Timeline of game date " + d.GameDate + ", times in New York"}
	y := tlAxis
	var desc []string
	for _, p := range d.Phases {
		s := phaseSection(p, sc, y, loc)
		tl.Sections = append(tl.Sections, s)
		y = s.Bottom + tlGap
		desc = append(desc, phaseSummary(p, loc))
	}
	for _, b := range d.Batches {
		s := batchSection(b, sc, y, loc)
		tl.Sections = append(tl.Sections, s)
		y = s.Bottom + tlGap
		desc = append(desc, batchSummary(b, loc))
	}
	tl.Height = y
	if d.Open && sc.contains(now) {
		x := sc.x(now)
		tl.Now = &vline{X: x, Y1: tlAxis - 6, Y2: y - tlGap, Class: "now", Label: "now " + clockTime(now, loc),
			LabelX: x + 3, LabelY: tlAxis - 8, Anchor: "start", Title: "now: " + clockTime(now, loc)}
		if x+tlCharWidth*float64(len(tl.Now.Label)) > tlPlotRight {
			tl.Now.LabelX, tl.Now.Anchor = x-3, "end"
		}
	}
	tl.Desc = strings.Join(desc, ". ")
	return tl
}

func phaseSection(p Phase, sc timeScale, top float64, loc *time.Location) section {
	s := section{Y: top, Heading: phaseTitle(p.Phase), State: triggerText(p, loc), Tone: p.State}
	y := top + tlHeading + tlRow/2
	extra := 0
	for _, pr := range p.Processors {
		if !pr.Expected {
			if extra++; extra > tlMaxExtra {
				continue
			}
		}
		s.Rows = append(s.Rows, processorRow(pr, p.Triggered, sc, y, loc))
		y += tlRow
	}
	if extra > tlMaxExtra {
		s.Rows = append(s.Rows, row{Y: y, Label: fmt.Sprintf("+%d more unexpected", extra-tlMaxExtra), Class: "unexpected"})
		y += tlRow
	}
	rowsTop, rowsBottom := top+tlHeading, y
	var lines []vline
	if p.FirstCompletionAt != nil {
		lines = append(lines, vline{X: sc.x(*p.FirstCompletionAt), Class: "first",
			Label: "first " + clockTime(*p.FirstCompletionAt, loc), Title: "first completion at " + clockTime(*p.FirstCompletionAt, loc)})
	}
	for _, l := range p.TimedRules {
		if l.At == nil || !sc.contains(*l.At) {
			continue
		}
		after := shortDuration(time.Duration(l.AfterSeconds) * time.Second)
		lines = append(lines, vline{X: sc.x(*l.At), Class: "limit",
			Label: fmt.Sprintf("%s %s (≥%d)", l.Reason, after, l.MinCompleted),
			Title: fmt.Sprintf("timed rule %s: with at least %d in, goes on at %s (%s after the first completion)",
				l.Reason, l.MinCompleted, clockTime(*l.At, loc), after)})
	}
	if dc := p.DataCheck; dc != nil && dc.CheckedAt != nil {
		lines = append(lines, vline{X: sc.x(*dc.CheckedAt), Class: "check-" + dc.Status,
			Label: "data check " + dc.Status, Title: dataCheckText(dc, loc)})
	}
	if p.TriggeredAt != nil {
		lines = append(lines, vline{X: sc.x(*p.TriggeredAt), Class: "trigger",
			Label: triggerLabel(p), Title: "trigger " + triggerText(p, loc)})
	}
	var n int
	s.Lines, n = placeLabels(lines, rowsTop, rowsBottom)
	s.Bottom = rowsBottom + float64(n)*tlLane + 4
	return s
}

func processorRow(pr Processor, triggered bool, sc timeScale, y float64, loc *time.Location) row {
	r := row{Y: y, Label: cut(pr.Name, tlLabelChars), Name: pr.Name}
	if !pr.Expected {
		r.Class = "unexpected"
		r.Label = cut(pr.Name, tlLabelChars-2) + " ?"
	}
	if pr.FailedAt != nil {
		r.Marks = append(r.Marks, mark{X: sc.x(*pr.FailedAt), Y: y, Shape: "cross", Class: "mark failure",
			Title: fmt.Sprintf("%s reported %s at %s", pr.Name, pr.FailedStatus, clockTime(*pr.FailedAt, loc))})
	}
	switch {
	case pr.CompletedAt != nil && !pr.Expected:
		r.Marks = append(r.Marks, mark{X: sc.x(*pr.CompletedAt), Y: y, Shape: "diamond", Class: "mark unexpected",
			Title: fmt.Sprintf("%s (not expected; does not count): %s at %s", pr.Name, pr.Status, clockTime(*pr.CompletedAt, loc))})
	case pr.CompletedAt != nil:
		m := mark{X: sc.x(*pr.CompletedAt), Y: y, Shape: "circle", Class: "mark completion",
			Title: fmt.Sprintf("%s completed (%s) at %s", pr.Name, pr.Status, clockTime(*pr.CompletedAt, loc))}
		if pr.RecordCount != nil {
			m.Title += fmt.Sprintf(", %d records", *pr.RecordCount)
		}
		if pr.Status == "partial" {
			m.Class += " partial"
		}
		if pr.Late {
			m.Class += " late"
			m.Text = "late"
			m.Title += ", after the trigger (late)"
		}
		r.Marks = append(r.Marks, m)
	case pr.Expected:
		r.Class = "missing"
		r.Note = "missing"
		if triggered {
			r.Note = "missing: went on without it"
		}
	}
	return r
}

func batchSection(b Batch, sc timeScale, top float64, loc *time.Location) section {
	s := section{Y: top, Heading: "Prediction batch " + cut(b.BatchID, 48),
		State: fmt.Sprintf("%s · %d predictions", batchText(b, loc), b.Predictions), Tone: b.State}
	y := top + tlHeading + tlRow/2
	end := b.ProgressAt
	if b.CompletedAt != nil {
		end = *b.CompletedAt
	}
	sp := span{X1: sc.x(b.StartTime), X2: sc.x(end), Y: y, Class: "batch",
		Title: fmt.Sprintf("batch started %s, last progress %s", clockTime(b.StartTime, loc), clockTime(b.ProgressAt, loc))}
	if b.Complete {
		sp.Class += " complete"
	}
	s.Spans = append(s.Spans, sp)
	r := row{Y: y, Label: "batch", Name: b.BatchID}
	if b.CompletedAt != nil {
		r.Marks = append(r.Marks, mark{X: sc.x(*b.CompletedAt), Y: y, Shape: "circle", Class: "mark batch-complete",
			Title: fmt.Sprintf("batch completed (%s, %s) at %s with %d of %d players", b.Status, b.Reason,
				clockTime(*b.CompletedAt, loc), b.Completed, b.Expected)})
	}
	s.Rows = append(s.Rows, r)
	var lines []vline
	if sc.contains(b.MaxAgeAt) {
		lines = append(lines, vline{X: sc.x(b.MaxAgeAt), Class: "age", Label: "age limit " + clockTime(b.MaxAgeAt, loc),
			Title: "still open at " + clockTime(b.MaxAgeAt, loc) + ", the batch completes as partial (max_age)"})
	}
	if !b.Complete && stalls(b) && sc.contains(b.StallAt) {
		lines = append(lines, vline{X: sc.x(b.StallAt), Class: "stall", Label: fmt.Sprintf("stall ≥%d%%", b.StallMinPercent),
			Title: fmt.Sprintf("at %d%% or more and no progress until %s, the batch completes as partial (stalled)",
				b.StallMinPercent, clockTime(b.StallAt, loc))})
	}
	// The lines cross the batch's time row only; the count, on its own
	// scale, is drawn under their labels.
	var n int
	s.Lines, n = placeLabels(lines, top+tlHeading, y+tlRow/2)
	py := y + tlRow/2 + float64(n)*tlLane + tlRow/2
	pct := percent(b.Completed, b.Expected)
	s.Bars = append(s.Bars, progress{Y: py,
		FillX:      tlPlotLeft + (tlPlotRight-tlPlotLeft)*math.Min(pct, 100)/100,
		StallX:     tlPlotLeft + (tlPlotRight-tlPlotLeft)*float64(b.StallMinPercent)/100,
		StallLabel: fmt.Sprintf("stall ≥%d%%", b.StallMinPercent),
		Text:       fmt.Sprintf("%d/%d players", b.Completed, b.Expected),
		Title:      fmt.Sprintf("%d of %d players (%.0f%%), %d predictions", b.Completed, b.Expected, pct, b.Predictions),
	})
	s.Bottom = py + tlRow/2 + 14 // the threshold's caption
	return s
}

// stalls reports whether the stall rule can end the batch: it is far
// enough along.
func stalls(b Batch) bool {
	return b.Expected > 0 && b.Completed*100 >= int64(b.StallMinPercent)*b.Expected
}

func percent(n, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// placeLabels puts each line's label in the first lane under the rows where
// it overlaps no label before it, left to right; a label that would cross
// the plot's right edge ends at its line instead. Each line then reaches
// down to its label, unless that would strike through a label above it: then
// it stops under the rows, and its label is found by its x alone.
func placeLabels(lines []vline, top, bottom float64) ([]vline, int) {
	order := make([]int, len(lines))
	for i := range order {
		order[i] = i
	}
	// Stable by x: equal instants keep their given order (the trigger last).
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && lines[order[j]].X < lines[order[j-1]].X; j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	var laneEnds []float64 // right end of the last label in each lane
	type extent struct {
		lane        int
		left, right float64
	}
	placed := make([]extent, len(lines))
	for _, i := range order {
		l := &lines[i]
		w := tlCharWidth * float64(utf8.RuneCountInString(l.Label))
		left, right := l.X+3, l.X+3+w
		l.Anchor, l.LabelX = "start", l.X+3
		if right > tlPlotRight {
			left, right = l.X-3-w, l.X-3
			l.Anchor, l.LabelX = "end", l.X-3
		}
		lane := 0
		for lane < len(laneEnds) && laneEnds[lane] > left-4 {
			lane++
		}
		if lane == len(laneEnds) {
			laneEnds = append(laneEnds, 0)
		}
		laneEnds[lane] = right
		placed[i] = extent{lane, left, right}
		l.Y1, l.LabelY = top, bottom+float64(lane+1)*tlLane-3
		l.Y2 = l.LabelY - 9
	}
	for i := range lines {
		for j, e := range placed {
			if j != i && e.lane < placed[i].lane && e.left-1 <= lines[i].X && lines[i].X <= e.right+1 {
				lines[i].Y2 = bottom + 2
				break
			}
		}
	}
	return lines, len(laneEnds)
}

// phaseTitle turns phase2_to_phase3 into "Phase 2 → 3".
func phaseTitle(name string) string {
	var a, b int
	if n, _ := fmt.Sscanf(name, "phase%d_to_phase%d", &a, &b); n == 2 {
		return fmt.Sprintf("Phase %d → %d", a, b)
	}
	return name
}

// triggerLabel is the trigger line's short label.
func triggerLabel(p Phase) string {
	parts := []string{fmt.Sprintf("⚑ gen %d", max(p.TriggerGeneration, 1)), p.TriggerReason}
	if p.TriggerPartial {
		parts = append(parts, "partial")
	}
	return strings.Join(parts, " · ")
}

// triggerText says where a gate stands, in words.
func triggerText(p Phase, loc *time.Location) string {
	switch {
	case !p.Exists:
		return "nothing recorded yet"
	case p.Triggered:
		s := fmt.Sprintf("triggered %s, %s, generation %d", clockTime(*orZero(p.TriggeredAt), loc), p.TriggerReason, max(p.TriggerGeneration, 1))
		if p.TriggerPartial {
			s += ", partial"
		}
		return s
	case p.TriggerState == "claimed" || p.TriggerState == "released":
		return fmt.Sprintf("trigger %s (%s), not yet confirmed", p.TriggerState, p.TriggerReason)
	case p.State == StateBlocked:
		return "held by the data check (" + p.DataCheck.Status + ")"
	case p.State == StateOverdue:
		return fmt.Sprintf("overdue, %d of %d in", len(p.Completed), len(p.Expected))
	}
	return fmt.Sprintf("waiting, %d of %d in", len(p.Completed), len(p.Expected))
}

func orZero(t *time.Time) *time.Time {
	if t == nil {
		return &time.Time{}
	}
	return t
}

// phaseSummary is one line of text per gate: the page's list and the
// drawing's description.
func phaseSummary(p Phase, loc *time.Location) string {
	parts := []string{phaseTitle(p.Phase) + ": " + triggerText(p, loc),
		fmt.Sprintf("%d/%d completed", len(p.Completed), len(p.Expected))}
	if len(p.Missing) > 0 && p.Exists {
		parts = append(parts, "missing "+strings.Join(p.Missing, ", "))
	}
	if len(p.Late) > 0 {
		parts = append(parts, "late "+strings.Join(p.Late, ", "))
	}
	if len(p.Failed) > 0 {
		parts = append(parts, "failed "+strings.Join(p.Failed, ", "))
	}
	if len(p.Unexpected) > 0 {
		parts = append(parts, "unexpected "+strings.Join(p.Unexpected, ", "))
	}
	if p.DataCheck != nil {
		parts = append(parts, dataCheckText(p.DataCheck, loc))
	}
	return strings.Join(parts, "; ")
}

func dataCheckText(dc *DataCheck, loc *time.Location) string {
	s := "data check"
	if dc.Check != "" {
		s += " " + dc.Check
	}
	s += " " + dc.Status
	if dc.Action == "monitor" {
		s += " (monitor only)"
	}
	if dc.CheckedAt != nil {
		s += " at " + clockTime(*dc.CheckedAt, loc)
	}
	if len(dc.Missing) > 0 {
		s += ", no rows in " + strings.Join(dc.Missing, ", ")
	}
	if dc.Error != "" {
		s += ": " + dc.Error
	}
	return s
}

func batchText(b Batch, loc *time.Location) string {
	if b.Complete && b.CompletedAt != nil {
		return fmt.Sprintf("completed %s, %s (%s)", clockTime(*b.CompletedAt, loc), b.Status, b.Reason)
	}
	if b.Complete {
		return "completed"
	}
	return fmt.Sprintf("open since %s, last progress %s", clockTime(b.StartTime, loc), clockTime(b.ProgressAt, loc))
}

func batchSummary(b Batch, loc *time.Location) string {
	return fmt.Sprintf("Prediction batch %s: %s; %d/%d players, %d predictions; stalls at ≥%d%% without progress until %s, age limit %s",
		b.BatchID, batchText(b, loc), b.Completed, b.Expected, b.Predictions, b.StallMinPercent,
		clockTime(b.StallAt, loc), clockTime(b.MaxAgeAt, loc))
}

// clockTime is an instant as New York's wall clock, with the zone.
func clockTime(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("15:04 MST")
}

// shortDuration writes 30m, 1h, 1h30m, 90s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// cut shortens s to n runes with an ellipsis.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
