package status

import (
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/phasegate/phasegate/internal/gamedate"
)

// RefreshSeconds is how often the page reloads itself while a date it
// shows is open.
const RefreshSeconds = 30

// pageData is what the template renders.
type pageData struct {
	Title      string
	Refresh    int // seconds; 0: the page stays as it is
	Prev, Next string
	Season     string // the range around the dates shown, as a query
	Days       []dayView
	Generated  string
}

type dayView struct {
	Date
	Summaries []string
	Timeline  *timeline
}

// newPage lays out the dates read at now.
func newPage(days []Date, dates []gamedate.Date, now time.Time) pageData {
	loc := gamedate.NewYork()
	pd := pageData{Generated: now.In(loc).Format("2006-01-02 15:04:05 MST")}
	var names []string
	for _, d := range days {
		v := dayView{Date: d, Timeline: layout(d, now, loc)}
		for _, p := range d.Phases {
			v.Summaries = append(v.Summaries, phaseSummary(p, loc))
		}
		for _, b := range d.Batches {
			v.Summaries = append(v.Summaries, batchSummary(b, loc))
		}
		if d.Open {
			pd.Refresh = RefreshSeconds
		}
		pd.Days = append(pd.Days, v)
		names = append(names, d.GameDate)
	}
	pd.Title = "phasegate · " + strings.Join(names, ", ")
	if len(dates) > 0 {
		lo, hi := dates[0], dates[0]
		for _, d := range dates[1:] {
			if d.Compare(lo) < 0 {
				lo = d
			}
			if d.Compare(hi) > 0 {
				hi = d
			}
		}
		pd.Prev, pd.Next = lo.AddDays(-1).String(), hi.AddDays(1).String()
	}
	pd.Season = rangeAround(dates, now)
	return pd
}

func renderPage(w io.Writer, pd pageData) error { return page.Execute(w, pd) }

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"f":        func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"add":      func(a, b float64) float64 { return a + b },
	"sub":      func(a, b float64) float64 { return a - b },
	"title":    phaseTitle,
	"join":     func(s []string) string { return strings.Join(s, ", ") },
	"id":       func(s string) string { return "d" + strings.ReplaceAll(s, "-", "") },
	"n":        func(i int) string { return fmt.Sprint(i) },
	"stateCSS": stateCSS,
}).Parse(pageHTML))

const pageHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<title>{{.Title}}</title>
<style>
:root{--ok:#1a7f37;--late:#d9730d;--bad:#cf222e;--muted:#6e7781;--trigger:#0b5cad;--line:#d0d7de;color-scheme:light}
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#1f2328}
nav{display:flex;gap:1em;flex-wrap:wrap;align-items:baseline}
h1{font-size:1.1em;margin:0 1em 0 0}
h2{font-size:1.25em;margin:1.2em 0 .3em}
.state{font-size:.75em;font-weight:normal;padding:2px 8px;border-radius:10px;background:#ddf4ff;margin-left:.5em}
.state.settled{background:#eaeef2}
ul.summary{margin:.3em 0 .6em;padding-left:1.2em}
ul.summary li{margin:.15em 0}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
svg.timeline{width:100%;min-width:680px;height:auto;display:block;font:11px system-ui,sans-serif}
svg .tick line{stroke:#eaeef2}
svg .tick text,svg .rowlabel.missing ~ .note{fill:var(--muted)}
svg .heading{font-weight:600;font-size:12px;fill:#1f2328}
svg .rowlabel{fill:#1f2328}
svg .rowlabel.missing{fill:var(--bad)}
svg .rowlabel.unexpected{fill:var(--muted);font-style:italic}
svg .rowline{stroke:#f0f2f4}
svg .note{fill:var(--bad);font-size:10px}
svg .completion circle{fill:var(--ok)}
svg .completion.partial circle{fill:#fff;stroke:var(--ok);stroke-width:2.5}
svg .completion.late circle{fill:var(--late)}
svg .completion.late text{fill:var(--late);font-weight:600}
svg .failure path{stroke:var(--bad);stroke-width:2.5}
svg .unexpected path{fill:var(--muted)}
svg .batch-complete circle{fill:var(--ok);stroke:#fff;stroke-width:1.5}
svg .vline line{stroke-width:1.2}
svg .vline.first line{stroke:var(--muted)}
svg .vline.first text{fill:var(--muted)}
svg .vline.limit line,svg .vline.age line,svg .vline.stall line{stroke:var(--late);stroke-dasharray:4 3}
svg .vline.limit text,svg .vline.age text,svg .vline.stall text{fill:var(--late)}
svg .vline.trigger line{stroke:var(--trigger);stroke-width:2.5}
svg .vline.trigger text{fill:var(--trigger);font-weight:600}
svg .vline.check-passed line{stroke:var(--ok);stroke-dasharray:1 2}
svg .vline.check-passed text{fill:var(--ok)}
svg .vline.check-blocked line,svg .vline.check-error line{stroke:var(--bad);stroke-dasharray:1 2}
svg .vline.check-blocked text,svg .vline.check-error text{fill:var(--bad)}
svg .vline.now line{stroke:#8250df;stroke-dasharray:2 2}
svg .vline.now text{fill:#8250df}
svg .span{stroke:#9ec5fe;stroke-width:8;stroke-linecap:round}
svg .span.complete{stroke:#aceebb}
svg .track{fill:#eaeef2}
svg .fill{fill:var(--ok)}
svg .threshold{stroke:var(--late);stroke-width:1.5}
svg .threshold-label{fill:var(--late);font-size:10px}
.legend{color:var(--muted);font-size:.85em;margin:.3em 0}
.legend span{white-space:nowrap;margin-right:1em}
.k-ok{color:var(--ok)}.k-late{color:var(--late)}.k-bad{color:var(--bad)}.k-tr{color:var(--trigger)}
details{margin:.5em 0 1em}
table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
footer{color:var(--muted);font-size:.85em;margin-top:2em}
{{stateCSS}}</style>
</head>
<body>
<nav aria-label="dates">
<h1>phasegate status</h1>
{{with .Prev}}<a href="?date={{.}}" rel="prev">← {{.}}</a>{{end}}
<a href="?">today and yesterday</a>
{{with .Next}}<a href="?date={{.}}" rel="next">{{.}} →</a>{{end}}
{{with .Season}}<a href="{{.}}" class="season">the season around it</a>{{end}}
</nav>
<p class="legend" aria-hidden="true"><span class="k-ok">● completed</span> <span>○ partial</span> <span class="k-late">● late</span> <span class="k-bad">✕ failed</span> <span>◆ unexpected</span> <span>│ first completion</span> <span class="k-late">┆ deadline / tier / batch limit</span> <span class="k-tr">┃ trigger</span></p>
{{range .Days}}
<section aria-labelledby="{{id .GameDate}}">
<h2 id="{{id .GameDate}}">{{.GameDate}}{{if .Open}}<span class="state">open · refreshes every 30 s</span>{{else}}<span class="state settled">settled</span>{{end}}</h2>
<ul class="summary">{{range .Summaries}}<li>{{.}}</li>{{end}}</ul>
{{with .Timeline}}{{template "timeline" .}}{{else}}<p>Nothing recorded for this date yet.</p>{{end}}
<details><summary>As a table</summary>
<table><tr><th>phase</th><th>completed</th><th>missing</th><th>trigger</th><th>reason</th><th>mode</th><th>late</th><th>unexpected</th><th>failed</th></tr>
{{range .Phases}}<tr><td>{{.Phase}}</td><td>{{len .Completed}}/{{len .Expected}}</td><td>{{join .Missing}}</td>
<td>{{if .Triggered}}{{.TriggerID}}{{else}}{{or .TriggerState "waiting"}}{{end}}</td>
<td>{{.TriggerReason}}</td><td>{{.Mode}}</td><td>{{join .Late}}</td><td>{{join .Unexpected}}</td><td>{{join .Failed}}</td></tr>
{{end}}</table>
</details>
</section>
{{end}}
<footer>Times in New York. Drawn {{.Generated}}. The same facts as JSON: this URL without <code>Accept: text/html</code>.</footer>
</body>
</html>
{{define "timeline"}}<div class="scroll">
<svg class="timeline" viewBox="0 0 {{f .Width}} {{f .Height}}" role="img" aria-labelledby="tl-title tl-desc" xmlns="http://www.w3.org/2000/svg">
<title id="tl-title">{{.Title}}</title>
<desc id="tl-desc">{{.Desc}}</desc>
{{range .Ticks}}<g class="tick"><line x1="{{f .X}}" x2="{{f .X}}" y1="18" y2="{{f $.Height}}"/><text x="{{f .X}}" y="12" text-anchor="middle">{{.Label}}</text></g>
{{end}}
{{range .Sections}}<g class="section">
<text class="heading" x="4" y="{{f (add .Y 16)}}">{{.Heading}} — <tspan class="tone-{{.Tone}}">{{.State}}</tspan></text>
{{range .Rows}}<line class="rowline" x1="{{f $.PlotLeft}}" x2="{{f $.PlotRight}}" y1="{{f .Y}}" y2="{{f .Y}}"/>
<text class="rowlabel {{.Class}}" x="{{f (sub $.PlotLeft 8)}}" y="{{f (add .Y 4)}}" text-anchor="end"><title>{{.Name}}</title>{{.Label}}</text>
{{if .Note}}<text class="note" x="{{f $.PlotRight}}" y="{{f (add .Y 4)}}" text-anchor="end">{{.Note}}</text>{{end}}
{{end}}
{{range .Spans}}<line class="{{.Class}} span" x1="{{f .X1}}" x2="{{f .X2}}" y1="{{f .Y}}" y2="{{f .Y}}"><title>{{.Title}}</title></line>
{{end}}
{{range .Lines}}<g class="vline {{.Class}}"><title>{{.Title}}</title><line x1="{{f .X}}" x2="{{f .X}}" y1="{{f .Y1}}" y2="{{f .Y2}}"/><text x="{{f .LabelX}}" y="{{f .LabelY}}" text-anchor="{{.Anchor}}">{{.Label}}</text></g>
{{end}}
{{range .Rows}}{{range .Marks}}<g class="{{.Class}}" role="img" aria-label="{{.Title}}"><title>{{.Title}}</title>{{if eq .Shape "cross"}}<path d="M{{f (sub .X 4.5)}} {{f (sub .Y 4.5)}}l9 9m0-9l-9 9"/>{{else if eq .Shape "diamond"}}<path d="M{{f .X}} {{f (sub .Y 6)}}l6 6-6 6-6-6z"/>{{else}}<circle cx="{{f .X}}" cy="{{f .Y}}" r="5.5"/>{{end}}{{if .Text}}<text x="{{f (add .X 8)}}" y="{{f (add .Y 4)}}">{{.Text}}</text>{{end}}</g>
{{end}}{{end}}
{{range .Bars}}<g class="progress" role="img" aria-label="{{.Title}}"><title>{{.Title}}</title><rect class="track" x="{{f $.PlotLeft}}" y="{{f (sub .Y 6)}}" width="{{f (sub $.PlotRight $.PlotLeft)}}" height="12" rx="6"/><rect class="fill" x="{{f $.PlotLeft}}" y="{{f (sub .Y 6)}}" width="{{f (sub .FillX $.PlotLeft)}}" height="12" rx="6"/><line class="threshold" x1="{{f .StallX}}" x2="{{f .StallX}}" y1="{{f (sub .Y 9)}}" y2="{{f (add .Y 9)}}"/><text class="count" x="{{f (sub $.PlotLeft 8)}}" y="{{f (add .Y 4)}}" text-anchor="end">{{.Text}}</text><text class="threshold-label" x="{{f .StallX}}" y="{{f (add .Y 19)}}" text-anchor="middle">{{.StallLabel}}</text></g>
{{end}}
</g>
{{end}}
{{with .Now}}<g class="vline now"><title>{{.Title}}</title><line x1="{{f .X}}" x2="{{f .X}}" y1="{{f .Y1}}" y2="{{f .Y2}}"/><text x="{{f .LabelX}}" y="{{f .LabelY}}" text-anchor="{{.Anchor}}">{{.Label}}</text></g>{{end}}
</svg>
</div>{{end}}`
