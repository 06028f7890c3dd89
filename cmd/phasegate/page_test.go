package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
	Failures   int  `json:"failures"`
	Unexpected int  `json:"unexpected"`
	Batch      int  `json:"batch"`
	Refresh    bool `json:"refresh"`
	Unlabelled int  `json:"unlabelled"` // marks without a text alternative
	Overflow   bool `json:"overflow"`   // the page wider than the screen (a phone)
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
	phone := chromium(t, ctx, 390, 844)
	if err := chromedp.Do(phone, chromedp.Navigate(pageURL), chromedp.WaitVisible("div.scroll")); err != nil {
		t.Fatal(err)
	}
	p, err := chromedp.Run(phone, chromedp.Evaluate[drawn](measure))
	if err != nil {
		t.Fatal(err)
	}
	if p.Overflow {
		t.Error("on a 390 px screen the page is wider than the screen")
	}
	if shot, err = chromedp.Run(phone, chromedp.FullScreenshot(100)); err == nil {
		err = os.WriteFile(filepath.Join(artifactDir(t), "status-demo-night-phone.png"), shot, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}
