package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/status"
)

// artifactDir is where browser tests leave their screenshots: $ARTIFACTS_DIR
// (CI sets it), else a folder in the temporary directory.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "phasegate-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chromium starts Debian's Chromium headless, as root can run it, with a
// fresh profile; the test is skipped, with one line, when it is absent.
func chromium(t *testing.T, ctx context.Context, width, height int) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the Status page is not checked in a browser")
	}
	actx, cancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(width, height))
	t.Cleanup(cancel)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(cancelB)
	return bctx
}

// phoneWidth is the screen the pages must fit: a common phone's, in CSS
// pixels.
const phoneWidth = 390

// phone is Chromium as a phone. Headless Chromium keeps a window at least
// 500 px wide whatever it is asked for, so the phone's viewport is
// emulated, and the pages measure it (innerWidth) to prove it.
func phone(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	bctx := chromium(t, ctx, phoneWidth, 844)
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(phoneWidth, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatalf("emulate a phone: %v", err)
	}
	return bctx
}

// drawn is what the page's script-free drawing looks like once Chromium has
// laid it out: centres in CSS pixels.
type drawn struct {
	Completions []struct {
		Label string  `json:"label"`
		X     float64 `json:"x"`
		W     float64 `json:"w"`
		Late  bool    `json:"late"`
	} `json:"completions"`
	Triggers []struct {
		Title string  `json:"title"`
		X     float64 `json:"x"`
		H     float64 `json:"h"`
	} `json:"triggers"`
	Failures   int     `json:"failures"`
	Unexpected int     `json:"unexpected"`
	Batch      int     `json:"batch"`
	Refresh    bool    `json:"refresh"`
	Unlabelled int     `json:"unlabelled"` // marks without a text alternative
	Overflow   bool    `json:"overflow"`   // the page wider than the screen (a phone)
	Width      float64 `json:"width"`      // the viewport's
}

const measure = `(() => {
  const c = e => { const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, w: r.width, h: r.height}; };
  const all = s => [...document.querySelectorAll(s)];
  return {
    completions: all('g.mark.completion').map(e => ({label: e.getAttribute('aria-label'), late: e.classList.contains('late'), ...c(e.querySelector('circle'))})),
    triggers: all('g.vline.trigger').map(e => ({title: e.querySelector('title').textContent, ...c(e.querySelector('line'))})),
    failures: all('g.mark.failure').length,
    unexpected: all('g.mark.unexpected').length,
    batch: all('g.mark.batch-complete').length,
    refresh: !!document.querySelector('meta[http-equiv=refresh]'),
    unlabelled: all('g.mark').filter(e => !e.getAttribute('aria-label') || !e.querySelector('title')).length,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
    width: window.innerWidth,
  };
})()`

// checkNightPage loads the demo night's Status page in Chromium and checks
// what it drew: one mark per completion, each trigger where its instant
// falls, and a screenshot as an artifact.
func checkNightPage(t *testing.T, ctx context.Context, pageURL string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute) // generous: the machine is shared
	defer cancel()
	bctx := chromium(t, ctx, 1100, 1400)
	if err := chromedp.Do(bctx, chromedp.Navigate(pageURL), chromedp.WaitVisible("div.scroll")); err != nil {
		t.Fatalf("load %s: %v", pageURL, err)
	}
	d, err := chromedp.Run(bctx, chromedp.Evaluate[drawn](measure))
	if err != nil {
		t.Fatal(err)
	}
	// Phases 2, 3 and 4 each completed 5 expected processors (br_roster
	// failed); the unexpected name has its own mark.
	if len(d.Completions) != 15 || d.Failures != 1 || d.Unexpected != 1 || d.Batch != 1 || d.Unlabelled != 0 {
		t.Fatalf("drawn: %d completions, %d failures, %d unexpected, %d batch, %d unlabelled marks",
			len(d.Completions), d.Failures, d.Unexpected, d.Batch, d.Unlabelled)
	}
	if d.Refresh {
		t.Error("a settled night refreshes itself")
	}
	x := map[string]float64{}
	late := 0
	for _, c := range d.Completions {
		if c.W < 5 {
			t.Errorf("mark %q is not drawn (%v px wide)", c.Label, c.W)
		}
		x[strings.Fields(c.Label)[0]] = c.X
		if c.Late {
			late++
		}
	}
	if late != 2 {
		t.Errorf("%d late marks, want 2", late)
	}
	if len(d.Triggers) != 3 {
		t.Fatalf("%d trigger markers, want 3", len(d.Triggers))
	}
	trig := map[string]float64{}
	for _, tr := range d.Triggers {
		if tr.H < 20 {
			t.Errorf("trigger %q is not drawn", tr.Title)
		}
		switch {
		case strings.Contains(tr.Title, "deadline_exceeded"):
			trig["p2"] = tr.X
		case strings.Contains(tr.Title, "critical_plus_majority_60pct"):
			trig["p3"] = tr.X
		case strings.Contains(tr.Title, "all_complete"):
			trig["p4"] = tr.X
		}
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1.5 }
	// Phase 3 went on with the completion that made 60 %, phase 4 with its
	// last one: each trigger lies on that mark, the late ones after it.
	if !near(trig["p3"], x["team_defense_game_summary"]) || !(x["team_offense_game_summary"] > trig["p3"]) {
		t.Errorf("phase 3 trigger at x=%v; completions %v", trig["p3"], x)
	}
	if !near(trig["p4"], x["ml_feature_store"]) {
		t.Errorf("phase 4 trigger at x=%v, ml_feature_store at %v", trig["p4"], x["ml_feature_store"])
	}
	// Phase 2 went on at its deadline, 00:31 + 30 min: on the axis that is
	// 30/44 of the way from the first completion (00:31) to phase 4's
	// trigger (01:45, 74 min later).
	want := x["bdl_player_boxscores"] + (x["ml_feature_store"]-x["bdl_player_boxscores"])*30/74
	if !near(trig["p2"], want) {
		t.Errorf("phase 2 trigger at x=%v, want %v (00:31 + 30 min)", trig["p2"], want)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "status-demo-night.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	// On a phone the page keeps its width: the drawing scrolls inside its
	// box, the text wraps.
	ph := phone(t, ctx)
	if err := chromedp.Do(ph, chromedp.Navigate(pageURL), chromedp.WaitVisible("div.scroll")); err != nil {
		t.Fatal(err)
	}
	p, err := chromedp.Run(ph, chromedp.Evaluate[drawn](measure))
	if err != nil {
		t.Fatal(err)
	}
	if p.Overflow || p.Width != phoneWidth {
		t.Errorf("on a %d px screen (viewport %v px) the page is wider than the screen: %v", phoneWidth, p.Width, p.Overflow)
	}
	if shot, err = chromedp.Run(ph, chromedp.FullScreenshot(100)); err == nil {
		err = os.WriteFile(filepath.Join(artifactDir(t), "status-demo-night-phone.png"), shot, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// season is what Chromium laid out of the season page.
type season struct {
	Rows []struct {
		Date  string `json:"date"`
		Cells []struct {
			State  string  `json:"state"`
			BG     string  `json:"bg"`
			Offset string  `json:"offset"`
			Title  string  `json:"title"`
			SR     string  `json:"sr"`
			W      float64 `json:"w"`
		} `json:"cells"`
	} `json:"rows"`
	Legend []struct {
		State string `json:"state"`
		BG    string `json:"bg"`
	} `json:"legend"`
	DateLinks int     `json:"dateLinks"`
	Overflow  bool    `json:"overflow"`
	Width     float64 `json:"width"`
}

const measureSeason = `(() => {
  const all = (s, e) => [...(e || document).querySelectorAll(s)];
  return {
    rows: all('table.season tbody tr').map(tr => ({date: tr.dataset.date, cells: all('td', tr).map(td => ({
      state: td.dataset.state, bg: getComputedStyle(td).backgroundColor, title: td.title,
      sr: (td.querySelector('.sr') || {}).textContent || '', offset: (td.querySelector('.o') || {}).textContent || '',
      w: td.getBoundingClientRect().width}))})),
    legend: all('.legend li').map(li => ({state: li.dataset.state, bg: getComputedStyle(li).backgroundColor})),
    dateLinks: all('table.season tbody th a[href^="?date="]').length,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
    width: window.innerWidth,
  };
})()`

// checkSeasonPage loads the demo's season page in Chromium and checks it
// against what the demo played and what the JSON says: one row per played
// date, each cell coloured as the legend colours the state the JSON gives,
// each trigger's offset from the median of the played times, and a page no
// wider than a phone; it saves screenshots as artifacts.
func checkSeasonPage(t *testing.T, ctx context.Context, p demoPages) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	body, err := get(ctx, p.Season)
	if err != nil {
		t.Fatal(err)
	}
	var js status.Season
	if err := json.Unmarshal([]byte(body), &js); err != nil {
		t.Fatalf("the season's JSON: %v", err)
	}
	jsState := map[string][]string{} // date → each column's state, phases then the batch
	for _, d := range js.Season {
		for _, ph := range d.Phases {
			jsState[d.GameDate] = append(jsState[d.GameDate], ph.State)
		}
		b := status.StateNotStarted
		if len(d.Batches) > 0 {
			b = d.Batches[len(d.Batches)-1].State
		}
		jsState[d.GameDate] = append(jsState[d.GameDate], b)
	}
	bctx := chromium(t, ctx, 1100, 1000)
	if err := chromedp.Do(bctx, chromedp.Navigate(p.Season), chromedp.WaitVisible(chromedp.CSS("table.season"))); err != nil {
		t.Fatalf("load %s: %v", p.Season, err)
	}
	s, err := chromedp.Run(bctx, chromedp.Evaluate[season](measureSeason))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rows) != len(p.Played) || s.DateLinks != len(p.Played) {
		t.Fatalf("%d rows, %d date links; the demo played %d dates", len(s.Rows), s.DateLinks, len(p.Played))
	}
	legend := map[string]string{}
	for _, l := range s.Legend {
		for st, bg := range legend {
			if bg == l.BG {
				t.Errorf("states %s and %s share the colour %s", st, l.State, bg)
			}
		}
		legend[l.State] = l.BG
	}
	if len(legend) != 6 {
		t.Errorf("legend %v: want the six states", s.Legend)
	}
	want := expectedOffsets(p.Played)
	columns := []column{"phase2_to_phase3", "phase3_to_phase4", "phase4_to_phase5", batchCol}
	for _, r := range s.Rows {
		if len(r.Cells) != len(columns) || len(jsState[r.Date]) != len(columns) {
			t.Fatalf("row %s: %d cells, JSON %v", r.Date, len(r.Cells), jsState[r.Date])
		}
		for i, c := range r.Cells {
			where := r.Date + " " + string(columns[i])
			if st := jsState[r.Date][i]; c.State != st || c.BG != legend[st] {
				t.Errorf("%s: cell %s coloured %s; the JSON says %s, which the legend colours %s", where, c.State, c.BG, st, legend[st])
			}
			if c.Title == "" || c.SR == "" || c.W < 20 {
				t.Errorf("%s: a cell without its words (title %q, text %q) or not drawn (%v px)", where, c.Title, c.SR, c.W)
			}
			if got, ok := want[r.Date][columns[i]]; ok != (c.Offset != "") || ok && parseOffset(t, c.Offset) != got {
				t.Errorf("%s: offset %q, want %+d (from the played times)", where, c.Offset, got)
			}
		}
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "status-demo-season.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	ph := phone(t, ctx)
	if err := chromedp.Do(ph, chromedp.Navigate(p.Season), chromedp.WaitVisible(chromedp.CSS("table.season"))); err != nil {
		t.Fatal(err)
	}
	ps, err := chromedp.Run(ph, chromedp.Evaluate[season](measureSeason))
	if err != nil {
		t.Fatal(err)
	}
	if ps.Overflow || ps.Width != phoneWidth {
		t.Errorf("on a %d px screen (viewport %v px) the season page is wider than the screen: %v", phoneWidth, ps.Width, ps.Overflow)
	}
	for _, r := range ps.Rows {
		for _, c := range r.Cells {
			if c.W < 20 {
				t.Errorf("on a phone a cell of %s is %v px wide", r.Date, c.W)
			}
		}
	}
	if shot, err = chromedp.Run(ph, chromedp.FullScreenshot(100)); err == nil {
		err = os.WriteFile(filepath.Join(artifactDir(t), "status-demo-season-phone.png"), shot, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// expectedOffsets works out, from the times the demo played, each
// trigger's offset from its column's median: minutes after the game date's
// New York midnight, the median over every date that went on (the mean of
// the middle two for an even count), rounded half away from zero. Phase
// 3's mode is overnight on every played date, so one median per column.
func expectedOffsets(played []playedNight) map[string]map[column]int {
	ny := gamedate.NewYork()
	minutes := func(date string, at time.Time) int {
		d, _ := time.ParseInLocation("2006-01-02", date, ny)
		return int(math.Floor(at.Sub(d).Minutes()))
	}
	samples := map[column][]int{}
	for _, n := range played {
		for col, o := range n.want {
			if !o.at.IsZero() {
				samples[col] = append(samples[col], minutes(n.date, o.at))
			}
		}
	}
	med := map[column]float64{}
	for col, v := range samples {
		sort.Ints(v)
		if k := len(v); k%2 == 1 {
			med[col] = float64(v[k/2])
		} else {
			med[col] = float64(v[k/2-1]+v[k/2]) / 2
		}
	}
	out := map[string]map[column]int{}
	for _, n := range played {
		out[n.date] = map[column]int{}
		for col, o := range n.want {
			if !o.at.IsZero() {
				out[n.date][col] = int(math.Round(float64(minutes(n.date, o.at)) - med[col]))
			}
		}
	}
	return out
}

// parseOffset reads "+40 min", "−3 min" or "±0 min".
func parseOffset(t *testing.T, s string) int {
	s = strings.NewReplacer("−", "-", "±", "", "+", "", " min", "").Replace(s)
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Errorf("offset %q: %v", s, err)
	}
	return n
}
