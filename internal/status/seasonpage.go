package status

import (
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/phasegate/phasegate/internal/gamedate"
)

// lateMinutes is the offset from the median that a cell calls out: half an
// hour late is what made operators look at a night's logs.
const lateMinutes = 30

// grid is a range laid out: what the season page draws and what
// `phasegate status --from --to` prints, so both show the same cells.
type grid struct {
	Columns   []gridColumn
	Rows      []gridRow // newest first: last night is what is asked about first
	Attention []string  // one line per date that needs a look
}

type gridColumn struct {
	Title      string // Phase 3 → 4
	Short      string // 3→4
	Phase      bool   // a gate, not the batches
	Usual      string // the median trigger time, HH:MM
	UsualTitle string
}

type gridRow struct {
	GameDate string
	Label    string // Mon 01-19
	Cells    []gridCell
}

// gridCell is a gate's or the batches' outcome on one date.
type gridCell struct {
	State  string
	Glyph  string
	Time   string // the trigger's New York time, or what is in so far
	Offset string // from the median: "+40 min"; empty without one
	Late   bool   // at least lateMinutes after the median
	Title  string // the cell in words: its text alternative
}

func newGrid(s *Season, loc *time.Location) grid {
	var g grid
	if len(s.Season) == 0 {
		return g
	}
	ms := medians(s.Season)
	for _, p := range s.Season[0].Phases {
		c := column(phaseTitle(p.Phase), shortTitle(p.Phase), p.Phase, ms, loc)
		c.Phase = true
		g.Columns = append(g.Columns, c)
	}
	g.Columns = append(g.Columns, column("Prediction batch", "batch", batchColumn, ms, loc))
	for i := len(s.Season) - 1; i >= 0; i-- {
		d := s.Season[i]
		r := gridRow{GameDate: d.GameDate, Label: d.GameDate}
		if gd, err := gamedate.Parse(d.GameDate); err == nil {
			r.Label = time.Date(gd.Year, gd.Month, gd.Day, 0, 0, 0, 0, time.UTC).Format("Mon 01-02")
		}
		var issues []string
		for _, p := range d.Phases {
			c, issue := phaseCell(d.GameDate, p, loc)
			r.Cells = append(r.Cells, c)
			issues = appendNonEmpty(issues, issue)
		}
		c, issue := batchCell(d.GameDate, d.Batches, loc)
		r.Cells = append(r.Cells, c)
		issues = appendNonEmpty(issues, issue)
		if len(issues) > 0 {
			g.Attention = append(g.Attention, d.GameDate+": "+strings.Join(issues, "; "))
		}
		g.Rows = append(g.Rows, r)
	}
	return g
}

func appendNonEmpty(list []string, s string) []string {
	if s == "" {
		return list
	}
	return append(list, s)
}

// column heads a phase's cells with its usual time: the median of the mode
// most of its dates triggered in.
func column(title, short, key string, ms map[medianKey]median, loc *time.Location) gridColumn {
	c := gridColumn{Title: title, Short: short}
	var best medianKey
	found := false
	for k, m := range ms {
		if k.column == key && (!found || m.N > ms[best].N || m.N == ms[best].N && k.mode < best.mode) {
			best, found = k, true
		}
	}
	if found {
		m := ms[best]
		c.Usual = minuteClock(int(m.Minutes))
		c.UsualTitle = fmt.Sprintf("%s usually goes on at %s New York time: the median of %d triggered dates", title, c.Usual, m.N)
		if best.mode != "" && best.mode != "default" {
			c.UsualTitle += " in " + best.mode + " mode"
		}
	}
	return c
}

// minuteClock writes minutes after a midnight as a wall-clock time.
func minuteClock(m int) string {
	m = ((m % 1440) + 1440) % 1440
	return fmt.Sprintf("%02d:%02d", m/60, m%60)
}

// shortTitle turns phase2_to_phase3 into "2→3".
func shortTitle(name string) string {
	var a, b int
	if n, _ := fmt.Sscanf(name, "phase%d_to_phase%d", &a, &b); n == 2 {
		return fmt.Sprintf("%d→%d", a, b)
	}
	return name
}

// phaseCell lays out a gate's outcome, and says what needs a look.
func phaseCell(gameDate string, p SeasonPhase, loc *time.Location) (gridCell, string) {
	st := styleOf(p.State)
	title := phaseTitle(p.Phase)
	c := gridCell{State: st.State, Glyph: st.Glyph}
	words := []string{fmt.Sprintf("%s %s: %s", gameDate, title, st.Words)}
	issue := ""
	switch p.State {
	case StateTriggered, StatePartial:
		if p.TriggeredAt != nil {
			c.Time = p.TriggeredAt.In(loc).Format("15:04")
			words = append(words, "at "+p.TriggeredAt.In(loc).Format("Jan 2 15:04 MST"))
		}
		if p.TriggerReason != "" {
			words = append(words, p.TriggerReason)
		}
		if p.State == StatePartial {
			words = append(words, "missing "+strings.Join(p.Missing, ", "))
			issue = fmt.Sprintf("%s partial (%s)", title, p.TriggerReason)
		}
		if p.OffsetMinutes != nil {
			c.Offset, c.Late = offsetText(*p.OffsetMinutes), *p.OffsetMinutes >= lateMinutes
			words = append(words, offsetWords(*p.OffsetMinutes))
			if c.Late {
				issue = joinIssue(issue, fmt.Sprintf("%s %d min later than usual", title, *p.OffsetMinutes))
			}
		}
	case StateNotStarted:
		words = append(words, "nothing recorded")
	default:
		c.Time = fmt.Sprintf("%d/%d", p.CompletedCount, len(p.Expected))
		words = append(words, fmt.Sprintf("%d of %d in", p.CompletedCount, len(p.Expected)))
		if p.FirstCompletionAt != nil {
			words = append(words, "since "+p.FirstCompletionAt.In(loc).Format("Jan 2 15:04 MST"))
		}
		if len(p.Missing) > 0 {
			words = append(words, "missing "+strings.Join(p.Missing, ", "))
		}
		if p.State != StateWaiting {
			issue = fmt.Sprintf("%s %s (%d/%d in)", title, st.Words, p.CompletedCount, len(p.Expected))
		}
	}
	c.Title = strings.Join(words, ", ")
	return c, issue
}

func joinIssue(a, b string) string {
	if a == "" {
		return b
	}
	return a + ", " + b
}

// batchCell lays out a date's newest batch (a rerun replaces the one
// before), and says what needs a look.
func batchCell(gameDate string, batches []SeasonBatch, loc *time.Location) (gridCell, string) {
	if len(batches) == 0 {
		st := styleOf(StateNotStarted)
		return gridCell{State: st.State, Glyph: st.Glyph, Title: gameDate + " prediction batch: not started, no batch"}, ""
	}
	b := batches[0]
	for _, o := range batches[1:] {
		if o.StartTime.After(b.StartTime) {
			b = o
		}
	}
	st := styleOf(b.State)
	c := gridCell{State: st.State, Glyph: st.Glyph}
	words := []string{fmt.Sprintf("%s prediction batch %s: %s", gameDate, b.BatchID, batchWords[b.State]),
		fmt.Sprintf("%d of %d players", b.Completed, b.Expected)}
	issue := ""
	if b.CompletedAt != nil {
		c.Time = b.CompletedAt.In(loc).Format("15:04")
		words = append(words, "completed "+b.CompletedAt.In(loc).Format("Jan 2 15:04 MST"))
	} else {
		c.Time = fmt.Sprintf("%d/%d", b.Completed, b.Expected)
		words = append(words, "started "+b.StartTime.In(loc).Format("Jan 2 15:04 MST"))
	}
	if b.State != StateTriggered {
		issue = fmt.Sprintf("batch %s (%d/%d players)", batchWords[b.State], b.Completed, b.Expected)
	}
	if b.OffsetMinutes != nil {
		c.Offset, c.Late = offsetText(*b.OffsetMinutes), *b.OffsetMinutes >= lateMinutes
		words = append(words, offsetWords(*b.OffsetMinutes))
		if c.Late {
			issue = joinIssue(issue, fmt.Sprintf("batch %d min later than usual", *b.OffsetMinutes))
		}
	}
	if n := len(batches) - 1; n > 0 {
		words = append(words, fmt.Sprintf("%d earlier batch(es) that date", n))
	}
	c.Title = strings.Join(words, ", ")
	return c, issue
}

// batchWords say a batch's state as its own outcome: a batch completes
// rather than triggers.
var batchWords = map[string]string{
	StateTriggered: "complete", StatePartial: "completed partial", StateWaiting: "open",
	StateOverdue: "open past its age limit", StateBlocked: "blocked", StateNotStarted: "not started",
}

// offsetText is an offset as a cell shows it.
func offsetText(m int) string {
	switch {
	case m > 0:
		return fmt.Sprintf("+%d min", m)
	case m < 0:
		return fmt.Sprintf("−%d min", -m)
	}
	return "±0 min"
}

func offsetWords(m int) string {
	switch {
	case m > 0:
		return fmt.Sprintf("%d min later than usual", m)
	case m < 0:
		return fmt.Sprintf("%d min earlier than usual", -m)
	}
	return "at the usual time"
}

// seasonPage is what the season template renders.
type seasonPage struct {
	grid
	Title      string
	From, To   string
	Dates      int
	Refresh    int
	Prev, Next string // the adjacent ranges of the same length, as queries
	Latest     string // the default range
	Legend     []stateStyle
	Generated  string
}

func newSeasonPage(s *Season, now time.Time) seasonPage {
	loc := gamedate.NewYork()
	sp := seasonPage{grid: newGrid(s, loc), From: s.From, To: s.To, Legend: stateStyles,
		Title:     "phasegate · " + s.From + " to " + s.To,
		Generated: now.In(loc).Format("2006-01-02 15:04:05 MST")}
	for _, d := range s.Season {
		if d.open {
			sp.Refresh = RefreshSeconds
		}
	}
	from, errF := gamedate.Parse(s.From)
	to, errT := gamedate.Parse(s.To)
	if errF != nil || errT != nil {
		return sp
	}
	n := days(from, to)
	sp.Dates = n
	sp.Prev = rangeQuery(from.AddDays(-n), from.AddDays(-1))
	today := gamedate.Today(now)
	if to.Compare(today) < 0 {
		sp.Next = rangeQuery(to.AddDays(1), to.AddDays(n))
	}
	sp.Latest = rangeQuery(today.AddDays(1-seasonDefaultDays), today)
	return sp
}

func rangeQuery(from, to gamedate.Date) string {
	return "?from=" + from.String() + "&to=" + to.String()
}

// rangeAround is the fortnight a date's page links back to: ending a week
// after the latest date shown, but not past New York's today unless the
// date itself is.
func rangeAround(dates []gamedate.Date, now time.Time) string {
	if len(dates) == 0 {
		return ""
	}
	hi := slices.MaxFunc(dates, gamedate.Date.Compare)
	to := hi.AddDays(7)
	if today := gamedate.Today(now); to.Compare(today) > 0 {
		to = today
	}
	if to.Compare(hi) < 0 {
		to = hi
	}
	return rangeQuery(to.AddDays(1-seasonDefaultDays), to)
}

func renderSeason(w io.Writer, sp seasonPage) error { return seasonTmpl.Execute(w, sp) }

// stateCSS is every state's look, for both pages' stylesheets.
func stateCSS() template.CSS {
	var b strings.Builder
	for _, s := range stateStyles {
		fmt.Fprintf(&b, ".st-%s{background:%s;color:%s}\n", s.State, s.Background, s.Color)
		fmt.Fprintf(&b, "svg .tone-%s{fill:%s}\n", s.State, inkOf(s))
	}
	return template.CSS(b.String())
}

// inkOf is a state's colour for words on the white page: its cell colour
// unless that is white on a dark cell, then the cell's.
func inkOf(s stateStyle) string {
	if s.Color == "#ffffff" {
		return s.Background
	}
	return s.Color
}

var seasonTmpl = template.Must(template.New("season").Funcs(template.FuncMap{"stateCSS": stateCSS}).Parse(seasonHTML))

const seasonHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<title>{{.Title}}</title>
<style>
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:900px;padding:12px;color:#1f2328}
nav{display:flex;gap:1em;flex-wrap:wrap;align-items:baseline}
h1{font-size:1.1em;margin:0 1em 0 0}
h2{font-size:1em;margin:1em 0 .3em}
.range{margin:.4em 0;color:#57606a;font-size:.9em}
a{color:#0b5cad}
.legend{margin:.5em 0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:4px}
.legend li{padding:1px 8px;border-radius:10px;font-size:.85em;white-space:nowrap}
.attention{margin:.3em 0 .8em;padding-left:1.2em}
.attention li{margin:.15em 0}
.calm{color:#1a7f37;margin:.3em 0 .8em}
table.season{width:100%;table-layout:fixed;border-collapse:separate;border-spacing:3px}
table.season th{font-weight:600;text-align:left;vertical-align:bottom;font-size:.85em;padding:0 4px}
table.season th.date{width:5.6em}
table.season abbr{text-decoration:none}
table.season tbody th{font-weight:normal;white-space:nowrap;vertical-align:middle}
table.season td{border-radius:6px;padding:3px 6px;vertical-align:top;white-space:nowrap;overflow:hidden;font-variant-numeric:tabular-nums}
table.season .g{font-weight:700;display:inline-block;width:1.1em}
table.season .o{display:block;font-size:.8em}
table.season .o.late{font-weight:700;text-decoration:underline}
table.season tfoot th{color:#57606a;font-weight:normal}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
footer{color:#6e7781;font-size:.85em;margin-top:2em}
@media (max-width:480px){.wide{display:none}body{padding:8px;font-size:14px}table.season{border-spacing:2px;font-size:12px}table.season td{padding:2px 3px}table.season th.date{width:4.6em}}
{{stateCSS}}</style>
</head>
<body>
<nav aria-label="ranges">
<h1>phasegate · the season</h1>
{{with .Prev}}<a href="{{.}}" rel="prev">← earlier {{$.Dates}} days</a>{{end}}
<a href="{{.Latest}}">last 14 days</a>
{{with .Next}}<a href="{{.}}" rel="next">later {{$.Dates}} days →</a>{{end}}
<a href="?">tonight</a>
</nav>
<p class="range">{{.From}} to {{.To}}, newest first. Each cell: the first trigger's New York time, and how far it fell from the usual — the median of the range's triggered dates. A date opens its timeline.</p>
<ul class="legend" aria-label="legend">{{range .Legend}}<li class="st-{{.State}}" data-state="{{.State}}"><span aria-hidden="true">{{.Glyph}}</span> {{.Words}}</li>{{end}}</ul>
<table class="season">
<caption class="sr">Outcome of each phase gate and prediction batch per game date, {{.From}} to {{.To}}</caption>
<thead><tr><th scope="col" class="date">date</th>{{range .Columns}}<th scope="col"><abbr title="{{.Title}}">{{if .Phase}}<span class="wide">Phase </span>{{end}}{{.Short}}</abbr></th>{{end}}</tr></thead>
<tbody>
{{range .Rows}}<tr data-date="{{.GameDate}}"><th scope="row"><a href="?date={{.GameDate}}" title="timeline of {{.GameDate}}">{{.Label}}</a></th>{{range .Cells}}<td class="cell st-{{.State}}" data-state="{{.State}}" title="{{.Title}}"><span class="sr">{{.Title}}</span><span aria-hidden="true"><span class="g">{{.Glyph}}</span>{{.Time}}{{if .Offset}}<span class="o{{if .Late}} late{{end}}">{{.Offset}}</span>{{end}}</span></td>{{end}}</tr>
{{end}}</tbody>
<tfoot><tr><th scope="row">usual</th>{{range .Columns}}<th title="{{.UsualTitle}}">{{or .Usual "–"}}</th>{{end}}</tr></tfoot>
</table>
{{if .Attention}}<h2>Needs a look</h2>
<ul class="attention">{{range .Attention}}<li>{{.}}</li>{{end}}</ul>{{else}}<p class="calm">Every date went through complete, at its usual time.</p>{{end}}
<footer>Times in New York. Drawn {{.Generated}}. The same facts as JSON: this URL without <code>Accept: text/html</code>.</footer>
</body>
</html>`

// WriteSeason prints a range as the season page draws it, as text: one
// line per date, newest first, each cell its glyph, trigger time and
// offset from the usual.
func WriteSeason(w io.Writer, s *Season) error {
	g := newGrid(s, gamedate.NewYork())
	fmt.Fprintf(w, "game dates %s to %s, newest first; New York times; offsets from the median of the range's triggered dates\n", s.From, s.To)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	head := []string{"date"}
	usual := []string{"usual"}
	for _, c := range g.Columns {
		head = append(head, c.Title)
		usual = append(usual, dash(c.Usual))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range g.Rows {
		line := []string{r.Label}
		for _, c := range r.Cells {
			line = append(line, cellText(c))
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	fmt.Fprintln(tw, strings.Join(usual, "\t"))
	if err := tw.Flush(); err != nil {
		return err
	}
	var legend []string
	for _, st := range stateStyles {
		legend = append(legend, st.Glyph+" "+st.State)
	}
	fmt.Fprintln(w, strings.Join(legend, "  "))
	for _, a := range g.Attention {
		fmt.Fprintln(w, "needs a look: "+a)
	}
	return nil
}

// cellText is a cell in a terminal: the glyph, the state's name unless it
// went through complete, then the time (or what is in) and the offset.
func cellText(c gridCell) string {
	parts := []string{c.Glyph}
	if c.State != StateTriggered {
		parts = append(parts, c.State)
	}
	parts = append(parts, c.Time, c.Offset)
	if c.Late {
		parts = append(parts, "late")
	}
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), " ")
}

func dash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
