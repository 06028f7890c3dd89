// Package compare sets the running system's outcome of each phase and
// batch of a game date beside a shadow phasegate's decision (CONTRACT §9):
// triggered or not, when, why, partial, missing processors, batch counts.
// Each difference is one line; one that phasegate makes on purpose — a
// timed rule fired on time where the running system waited for a message,
// a late processor recorded where it dropped it, a stalled batch completed
// or called partial — is labelled an improvement.
package compare

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/rules"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Gate is one side's outcome for a phase and date.
type Gate struct {
	Exists    bool
	Triggered bool
	At        time.Time
	Reason    string
	Partial   bool
	Missing   []string // expected processors missing when it triggered
	Recorded  []string // expected processors recorded, in configured order
	Late      []string // recorded after the trigger (phasegate's _late_processors)
}

// Batch is one side's outcome for a prediction batch.
type Batch struct {
	Exists    bool
	Complete  bool
	At        time.Time
	Status    string // success | partial ("" while open)
	Completed int64  // distinct players
	Expected  int64
}

// Difference is one line of compare's output.
type Difference struct {
	Date        string
	Subject     string // a phase name, or "batch <id>"
	What        string
	Running     string
	Phasegate   string
	Improvement string // why phasegate differs on purpose; "" when unexplained
}

func (d Difference) String() string {
	s := fmt.Sprintf("%s %s %s: running %s, phasegate %s", d.Date, d.Subject, d.What, d.Running, d.Phasegate)
	if d.Improvement != "" {
		s += " improvement: " + d.Improvement
	}
	return s
}

// timed reports whether reason is a timed rule's: one phasegate fires from
// its clock where the running system fired, if at all, only when a message
// happened to arrive.
func timed(p *config.Phase, reason string) bool {
	for _, r := range p.Timed {
		if r.Reason == reason {
			return true
		}
	}
	return false
}

// equivalent maps the running system's reasons to phasegate's: its
// phase4_timeout_check is the max_timeout rule.
var equivalent = map[string]string{"scheduled_timeout_check": "max_timeout"}

// RunningGate reads a gate document the running system wrote.
func RunningGate(p *config.Phase, date gamedate.Date, data map[string]any) Gate {
	if data == nil {
		return Gate{}
	}
	g := Gate{Exists: true, Triggered: takeover.Triggered(data), At: takeover.Time(data["_triggered_at"]), Reason: takeover.Reason(data)}
	if r, ok := equivalent[g.Reason]; ok {
		g.Reason = r
	}
	g.Recorded = recorded(p, data, time.Time{})
	if !g.Triggered {
		return g
	}
	// The processors it had when it triggered: its own list when it kept one
	// (phase 4's tiers), else those recorded by then.
	if m, ok := data["_missing_processors"].([]any); ok {
		g.Missing = strs(m)
	} else {
		at := recorded(p, data, g.At)
		for _, e := range p.Expected {
			if !slices.Contains(at, e) {
				g.Missing = append(g.Missing, e)
			}
		}
	}
	if g.Reason == "" && len(g.Missing) == 0 {
		g.Reason = rules.ReasonAllComplete // phase 2 names no reason when every processor is in
	}
	mode, _ := data["_mode"].(string)
	if mode == "" {
		mode = rules.Mode(p, date, g.At)
	}
	for _, r := range rules.Required(p, mode) {
		g.Partial = g.Partial || slices.Contains(g.Missing, r)
	}
	return g
}

// ShadowGate reads a shadow phasegate's gate document.
func ShadowGate(p *config.Phase, data map[string]any) Gate {
	if data == nil {
		return Gate{}
	}
	g := Gate{Exists: true, Triggered: takeover.Triggered(data), At: takeover.Time(data["_triggered_at"]), Reason: takeover.Reason(data)}
	g.Recorded = recorded(p, data, time.Time{})
	g.Late = strs(data["_late_processors"])
	if g.Triggered {
		g.Partial, _ = data["_trigger_partial"].(bool)
		g.Missing = strs(data["_missing_processors"])
	}
	return g
}

// recorded lists the expected processors that completed (success or
// partial), by before when before is set.
func recorded(p *config.Phase, data map[string]any, before time.Time) []string {
	var out []string
	for _, e := range p.Expected {
		rec, _ := data[e].(map[string]any)
		if s, _ := rec["status"].(string); s != "success" && s != "partial" {
			continue
		}
		if at := takeover.Time(rec["completed_at"]); !before.IsZero() && at.After(before) {
			continue
		}
		out = append(out, e)
	}
	return out
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := []string{}
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// Gates returns the differences between the running system's outcome r and
// phasegate's s for phase p on date.
func Gates(p *config.Phase, date string, r, s Gate, tolerance time.Duration) []Difference {
	diff := func(what, running, pg, why string) Difference {
		return Difference{Date: date, Subject: p.Name, What: what, Running: running, Phasegate: pg, Improvement: why}
	}
	if r.Exists != s.Exists || !r.Exists {
		return existence(diff, r.Exists, s.Exists)
	}
	var out []Difference
	if !slices.Equal(r.Recorded, s.Recorded) {
		why := ""
		if extra := minus(s.Recorded, r.Recorded); len(minus(r.Recorded, s.Recorded)) == 0 && len(minus(extra, s.Late)) == 0 {
			why = "recorded late processors the running system dropped"
		}
		out = append(out, diff("processors", list(r.Recorded), list(s.Recorded), why))
	}
	switch {
	case !r.Triggered && !s.Triggered:
		return out
	case r.Triggered != s.Triggered:
		why := ""
		if s.Triggered && timed(p, s.Reason) {
			why = s.Reason + " fired on time; the running system waits for a message"
		}
		return append(out, diff("triggered", yesNo(r), yesNo(s), why))
	}
	// Both triggered. When phasegate fired earlier on a timed rule, every
	// other difference follows from that.
	why := ""
	if s.At.Before(r.At.Add(-tolerance)) && timed(p, s.Reason) {
		why = s.Reason + " fired on time; the running system waited for the next message"
	}
	if d := s.At.Sub(r.At); d > tolerance || d < -tolerance {
		out = append(out, diff("triggered_at", stamp(r.At), stamp(s.At)+" ("+signed(d)+")", why))
	}
	if r.Reason != s.Reason {
		out = append(out, diff("reason", r.Reason, s.Reason, why))
	}
	if r.Partial != s.Partial {
		out = append(out, diff("partial", fmt.Sprint(r.Partial), fmt.Sprint(s.Partial), why))
	}
	if !slices.Equal(r.Missing, s.Missing) {
		out = append(out, diff("missing", list(r.Missing), list(s.Missing), why))
	}
	return out
}

// Batches returns the differences for one batch.
func Batches(date, id string, r, s Batch, tolerance time.Duration) []Difference {
	diff := func(what, running, pg, why string) Difference {
		return Difference{Date: date, Subject: "batch " + id, What: what, Running: running, Phasegate: pg, Improvement: why}
	}
	if r.Exists != s.Exists || !r.Exists {
		return existence(diff, r.Exists, s.Exists)
	}
	var out []Difference
	if r.Expected != s.Expected {
		out = append(out, diff("expected_players", fmt.Sprint(r.Expected), fmt.Sprint(s.Expected), ""))
	}
	if r.Complete != s.Complete {
		why := ""
		if s.Complete && s.Status == "partial" {
			why = "completed a stalled or over-age batch the running coordinator left open"
		}
		return append(out, diff("complete", fmt.Sprint(r.Complete), fmt.Sprint(s.Complete), why))
	}
	if r.Completed != s.Completed {
		out = append(out, diff("completed_players", fmt.Sprint(r.Completed), fmt.Sprint(s.Completed), ""))
	}
	if !r.Complete {
		return out
	}
	if d := s.At.Sub(r.At); d > tolerance || d < -tolerance {
		out = append(out, diff("completed_at", stamp(r.At), stamp(s.At)+" ("+signed(d)+")", ""))
	}
	if r.Status != s.Status {
		why := ""
		if s.Status == "partial" && s.Completed < s.Expected {
			why = "a batch short of players is reported partial (the running coordinator always says success)"
		}
		out = append(out, diff("status", r.Status, s.Status, why))
	}
	return out
}

// existence is the one line for a subject only one side has a document for.
func existence(diff func(what, running, pg, why string) Difference, running, shadow bool) []Difference {
	has := map[bool]string{true: "has one", false: "has none"}
	if running == shadow {
		return nil
	}
	return []Difference{diff("document", has[running], has[shadow], "")}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func list(l []string) string { return "[" + strings.Join(l, " ") + "]" }

func yesNo(g Gate) string {
	if g.Triggered {
		return "triggered (" + g.Reason + ")"
	}
	return "not triggered"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func signed(d time.Duration) string {
	if d < 0 {
		return (-d).String() + " earlier"
	}
	return d.String() + " later"
}
