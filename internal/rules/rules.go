// Package rules decides, from a gate's state and the time, whether the next
// phase may start and why. It is pure: the gate and the sweep both call it,
// so a timed rule fires the same way whether a message or the scheduler
// asked.
package rules

import (
	"slices"
	"strconv"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// Modes of a game date relative to today in New York.
const (
	ModeDefault   = "default"
	ModeOvernight = "overnight"
	ModeSameDay   = "same_day"
	ModeTomorrow  = "tomorrow"
)

// Reasons with fixed names; timed rules bring their own.
const (
	ReasonAllComplete = "all_complete"
	ReasonManual      = "manual"
	ReasonLateArrival = "late_arrival"
	majorityPrefix    = "critical_plus_majority_"
)

// State is what the rules look at.
type State struct {
	Completed       map[string]bool // normalised names of expected processors that completed
	FirstCompletion time.Time       // zero until the first completion
}

// Decision is the outcome, with the manifest a trigger carries.
type Decision struct {
	Fire      bool
	Reason    string
	Mode      string
	Expected  []string
	Completed []string // in configured order
	Missing   []string // expected processors not completed, in configured order
	IsPartial bool     // a processor the mode requires is missing
}

// Mode returns the phase's mode for date at instant now.
func Mode(p *config.Phase, date gamedate.Date, now time.Time) string {
	if !p.ModeAware {
		return ModeDefault
	}
	switch date.Compare(gamedate.Today(now)) {
	case -1:
		return ModeOvernight
	case 0:
		return ModeSameDay
	}
	return ModeTomorrow
}

// Required returns the processors mode waits for.
func Required(p *config.Phase, mode string) []string {
	if mode == ModeSameDay || mode == ModeTomorrow {
		return p.SameDayRequired
	}
	return p.Expected
}

// Decide applies p's rules, first match wins: every processor the mode
// requires; (overnight) the critical processors plus a majority; then the
// timed rules in configured order, measured from the first completion with
// inclusive bounds.
func Decide(p *config.Phase, date gamedate.Date, st State, now time.Time) Decision {
	d := Decision{Mode: Mode(p, date, now), Expected: slices.Clone(p.Expected)}
	for _, e := range p.Expected {
		if st.Completed[e] {
			d.Completed = append(d.Completed, e)
		} else {
			d.Missing = append(d.Missing, e)
		}
	}
	required := Required(p, d.Mode)
	d.IsPartial = !all(st.Completed, required)
	switch {
	case !d.IsPartial:
		d.Fire, d.Reason = true, ReasonAllComplete
	case d.Mode != ModeSameDay && d.Mode != ModeTomorrow && len(p.Critical) > 0 && all(st.Completed, p.Critical):
		pct := 100 * len(d.Completed) / len(p.Expected) // rounded down, as the reason names it
		if pct >= p.MajorityPercent {
			d.Fire, d.Reason = true, majorityPrefix+strconv.Itoa(pct)+"pct"
		}
	}
	// Timed rules act only on a phase phasegate owns: until its cut-over the
	// running system decides when to stop waiting (CONTRACT §9).
	if d.Fire || st.FirstCompletion.IsZero() || p.Unowned {
		return d
	}
	elapsed := now.Sub(st.FirstCompletion)
	for _, r := range p.Timed {
		if r.Enabled.Enabled(date.String()) && len(d.Completed) >= r.MinCompleted && elapsed >= r.After {
			d.Fire, d.Reason = true, r.Reason
			return d
		}
	}
	return d
}

func all(done map[string]bool, names []string) bool {
	for _, n := range names {
		if !done[n] {
			return false
		}
	}
	return true
}
