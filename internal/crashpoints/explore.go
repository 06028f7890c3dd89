package crashpoints

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune an exploration.
type Options struct {
	// Parallel bounds the runs at once (each its own project).
	Parallel int
	// BigQuery is the emulator's binary the BigQuery paths start (one
	// emulator per run); empty skips them.
	BigQuery string
	// RunTimeout bounds one run.
	RunTimeout time.Duration
}

// Outcome is one run's result.
type Outcome struct {
	Injection  *Injection // nil for the recording run
	Violations []string
	Notes      []string // what the run did that the invariants allow: a copy where the fault hit a publish or post
	Reached    bool     // the injected call happened (a run may take another path)
	Err        error    // the harness could not carry the run out
	Took       time.Duration
}

// Path is one scenario's exploration.
type Path struct {
	Scenario  *Scenario
	Skipped   string
	Calls     []Call    // the recording run's, in order
	Recording Outcome   // the recording run itself, checked on its own
	Outcomes  []Outcome // one per injection, in plan order
}

// Report is a whole exploration.
type Report struct {
	Paths []*Path
	Took  time.Duration
}

var runs atomic.Int64

// Explore records each scenario once, plans its injections and runs each,
// at most o.Parallel runs at a time.
func Explore(ctx context.Context, scenarios []*Scenario, o Options) *Report {
	start := time.Now()
	o.Parallel = max(o.Parallel, 1)
	o.RunTimeout = cmp.Or(o.RunTimeout, 2*time.Minute)
	rep := &Report{}
	bases := make([]*observation, len(scenarios))
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for i, sc := range scenarios {
		p := &Path{Scenario: sc}
		rep.Paths = append(rep.Paths, p)
		if sc.BigQuery && o.BigQuery == "" {
			p.Skipped = "no BigQuery emulator (make bigquery-emulator)"
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p.Recording, bases[i], p.Calls = play(ctx, sc, nil, nil, o)
		})
	}
	wg.Wait()
	for i, p := range rep.Paths {
		if p.Skipped != "" || p.Recording.Err != nil {
			continue
		}
		plan := Plan(p.Calls)
		p.Outcomes = make([]Outcome, len(plan))
		for j, inj := range plan {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				p.Outcomes[j], _, _ = play(ctx, p.Scenario, &inj, bases[i], o)
			})
		}
	}
	wg.Wait()
	rep.Took = time.Since(start)
	return rep
}

// Plan lists the injections of a recording: at each site its first, middle
// and last call; three faults for a call that can take effect, one (fail)
// for a read.
func Plan(calls []Call) []Injection {
	bySite := map[Site][]Call{}
	var sites []Site
	for _, c := range calls {
		if _, ok := bySite[c.Site]; !ok {
			sites = append(sites, c.Site)
		}
		bySite[c.Site] = append(bySite[c.Site], c)
	}
	var out []Injection
	for _, s := range sites {
		cs := bySite[s]
		ns := slices.Compact([]int{1, (len(cs) + 1) / 2, len(cs)})
		for _, n := range ns {
			faults := []Fault{Fail}
			if cs[n-1].Write {
				faults = append(faults, ErrAfter, Crash)
			}
			for _, f := range faults {
				out = append(out, Injection{Point: Point{Site: s, N: n}, Fault: f})
			}
		}
	}
	return out
}

// play runs a scenario once, with inj (nil: the recording run), drives it
// to convergence and judges it: against base when given, else on its own.
func play(ctx context.Context, sc *Scenario, inj *Injection, base *observation, o Options) (out Outcome, obs *observation, calls []Call) {
	start := time.Now()
	out.Injection = inj
	ctx, cancel := context.WithTimeout(ctx, o.RunTimeout)
	defer cancel()
	w, err := newWorld(ctx, sc, int(runs.Add(1)), inj, o.BigQuery)
	if err != nil {
		out.Err = err
		return out, nil, nil
	}
	defer w.close()
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(abort)
			if !ok {
				panic(r)
			}
			out.Err = a.err
		}
		out.Took = time.Since(start)
	}()
	if sc.Setup != nil {
		sc.Setup(w)
	}
	sc.Act(w)
	w.converge()
	obs = w.observe()
	calls = w.b.Calls()
	out.Reached = inj == nil || slices.ContainsFunc(calls, func(c Call) bool { return c.Fault != NoFault })
	if base == nil {
		out.Violations = alone(obs, calls)
	} else {
		out.Violations, out.Notes = verdict(base, obs, calls)
	}
	return out, obs, calls
}

// alone judges the recording run: its own problems, and nothing sent twice.
func alone(o *observation, calls []Call) []string {
	out := slices.Clone(o.problems)
	for _, k := range union(o.triggers, nil) {
		if n := o.triggers[k]; n > 1 {
			out = append(out, fmt.Sprintf("trigger %s published %d times without a fault", k, n))
		}
	}
	for _, k := range union(o.alerts, nil) {
		if n := o.alerts[k]; n > 1 {
			out = append(out, fmt.Sprintf("alert %q sent %d times without a fault", k, n))
		}
	}
	for _, k := range union(o.history, nil) {
		if o.history[k] > 1 && insertBursts(calls, k) > 1 {
			out = append(out, fmt.Sprintf("history row %s written %d times without a fault", k, o.history[k]))
		}
	}
	return out
}

// Totals are a path's (or the whole report's) counts.
type Totals struct {
	Paths, Calls, Injections, Violations, Unreached, Errors int
}

// Totals counts a path: the recording's calls, the injected runs, and the
// runs (the recording included) that broke an invariant.
func (p *Path) Totals() Totals {
	t := Totals{Paths: 1, Calls: len(p.Calls), Injections: len(p.Outcomes)}
	for _, o := range append([]Outcome{p.Recording}, p.Outcomes...) {
		switch {
		case o.Err != nil:
			t.Errors++
		case len(o.Violations) > 0:
			t.Violations++
		case !o.Reached:
			t.Unreached++
		}
	}
	return t
}

// Totals adds up every path explored.
func (r *Report) Totals() Totals {
	var t Totals
	for _, p := range r.Paths {
		if p.Skipped != "" {
			continue
		}
		pt := p.Totals()
		t.Paths++
		t.Calls += pt.Calls
		t.Injections += pt.Injections
		t.Violations += pt.Violations
		t.Unreached += pt.Unreached
		t.Errors += pt.Errors
	}
	return t
}

// Write prints the table (path × call × fault → outcome), each path's
// totals, and the closing line.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "%-26s %-62s %-9s %s\n", "path", "call", "fault", "outcome")
	for _, p := range r.Paths {
		name := p.Scenario.Name
		if p.Skipped != "" {
			fmt.Fprintf(w, "%-26s skipped: %s\n", name, p.Skipped)
			continue
		}
		row := func(call, fault string, o Outcome) {
			fmt.Fprintf(w, "%-26s %-62s %-9s %s\n", name, call, fault, describe(o))
		}
		row(fmt.Sprintf("(recording: %d calls)", len(p.Calls)), "none", p.Recording)
		for _, o := range p.Outcomes {
			row(o.Injection.Point.String(), o.Injection.Fault.String(), o)
		}
	}
	fmt.Fprintln(w)
	for _, p := range r.Paths {
		if p.Skipped != "" {
			continue
		}
		t := p.Totals()
		fmt.Fprintf(w, "%-26s %4d calls %4d injections %4d violations", p.Scenario.Name, t.Calls, t.Injections, t.Violations)
		if t.Unreached > 0 {
			fmt.Fprintf(w, " (%d injections not reached: the run took another path)", t.Unreached)
		}
		if t.Errors > 0 {
			fmt.Fprintf(w, " (%d runs failed to run)", t.Errors)
		}
		fmt.Fprintln(w)
	}
	t := r.Totals()
	fmt.Fprintf(w, "crashpoints: %d paths, %d calls, %d injections, %d violations\n", t.Paths, t.Calls, t.Injections, t.Violations)
}

func describe(o Outcome) string {
	switch {
	case o.Err != nil:
		return "error: " + o.Err.Error()
	case len(o.Violations) > 0:
		return "VIOLATION: " + strings.Join(o.Violations, "; ")
	case !o.Reached:
		return "converged (injection not reached)"
	case len(o.Notes) > 0:
		return "converged (" + strings.Join(o.Notes, "; ") + ")"
	}
	return "converged"
}
