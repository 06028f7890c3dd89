// Package status answers "where is this game date?" for operators: the
// Status and Health entry points and the `phasegate status` command read
// through it. The Status page draws each date as a timeline (timeline.go,
// pure) from the same values its JSON carries.
package status

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Phase is one gate's state for a date.
type Phase struct {
	Phase             string     `json:"phase"`
	EntryPoint        string     `json:"entry_point"`
	State             string     `json:"state"` // CONTRACT §13: triggered | partial | waiting | overdue | blocked | not_started
	Exists            bool       `json:"exists"`
	Expected          []string   `json:"expected_processors"`
	Completed         []string   `json:"completed_processors"`
	Missing           []string   `json:"missing_processors"`
	CompletedCount    int64      `json:"completed_count"`
	FirstCompletionAt *time.Time `json:"first_completion_at,omitempty"`
	Triggered         bool       `json:"triggered"`
	TriggeredAt       *time.Time `json:"triggered_at,omitempty"`
	TriggerID         string     `json:"trigger_id,omitempty"`
	TriggerReason     string     `json:"trigger_reason,omitempty"`
	TriggerState      string     `json:"trigger_state,omitempty"`
	TriggerGeneration int64      `json:"trigger_generation,omitempty"`
	TriggerPartial    bool       `json:"trigger_partial,omitempty"`
	Mode              string     `json:"mode,omitempty"`
	Late              []string   `json:"late_processors,omitempty"`
	Unexpected        []string   `json:"unexpected,omitempty"`
	Failed            []string   `json:"failed,omitempty"`
	SweepActions      []string   `json:"sweep_actions,omitempty"`
	// Processors is one row per expected processor, in configured order,
	// then one per unexpected name: what the timeline draws.
	Processors []Processor `json:"processors"`
	// TimedRules are the deadlines and timeout tiers enabled for this date,
	// with the instant each falls at once the first completion is known.
	TimedRules []Limit    `json:"timed_rules,omitempty"`
	DataCheck  *DataCheck `json:"data_check,omitempty"`
}

// Processor is what one processor reported for the date.
type Processor struct {
	Name        string     `json:"name"`
	Expected    bool       `json:"expected"`
	Status      string     `json:"status,omitempty"` // success | partial once completed
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	Late        bool       `json:"late,omitempty"` // completed after the trigger
	// The last failure recorded (failed, no_data); a later success keeps it.
	FailedStatus string     `json:"failed_status,omitempty"`
	FailedAt     *time.Time `json:"failed_at,omitempty"`
	RecordCount  *int64     `json:"record_count,omitempty"`
}

// Limit is a timed rule: with at least MinCompleted in, the gate goes on at
// At (the first completion + After).
type Limit struct {
	Reason       string     `json:"reason"`
	MinCompleted int        `json:"min_completed"`
	AfterSeconds int64      `json:"after_seconds"`
	At           *time.Time `json:"at,omitempty"`
}

// DataCheck is the gate's upstream-table check (`_data_check`), once one ran.
type DataCheck struct {
	Status         string           `json:"status"` // passed | blocked | error
	Check          string           `json:"check,omitempty"`
	Action         string           `json:"action,omitempty"` // block | monitor
	Counts         map[string]int64 `json:"counts,omitempty"`
	Missing        []string         `json:"missing,omitempty"`
	CheckedAt      *time.Time       `json:"checked_at,omitempty"`
	Tables         int64            `json:"tables,omitempty"`
	BytesProcessed int64            `json:"bytes_processed,omitempty"`
	Error          string           `json:"error,omitempty"`
}

// Batch is one prediction batch of the date with its limits. The fields up
// to CompletedAt come from the batch tracker; the limits and the state from
// the configuration.
type Batch struct {
	BatchID     string     `json:"batch_id"`
	State       string     `json:"state"` // as a phase's, from the same classification
	Expected    int64      `json:"expected_players"`
	Completed   int64      `json:"completed_players"`
	Predictions int64      `json:"total_predictions"`
	Complete    bool       `json:"is_complete"`
	Status      string     `json:"completion_status,omitempty"` // success | partial
	Reason      string     `json:"completion_reason,omitempty"` // all_players | stalled | max_age
	StartTime   time.Time  `json:"start_time"`
	ProgressAt  time.Time  `json:"progress_time"` // newest completion; the start if none
	CompletedAt *time.Time `json:"completion_time,omitempty"`
	// A batch at StallMinPercent or more without progress until StallAt, or
	// still open at MaxAgeAt, completes as partial.
	StallMinPercent int       `json:"stall_min_percent"`
	StallAt         time.Time `json:"stall_at"`
	MaxAgeAt        time.Time `json:"max_age_at"`
}

// Date is every phase's state for one game date.
type Date struct {
	GameDate string  `json:"game_date"`
	Phases   []Phase `json:"phases"`
	Batches  []Batch `json:"batches"`
	// Open: something is still owed (a trigger, a batch completion) while the
	// sweep still looks at the date; the page refreshes itself while so.
	Open bool `json:"open"`
}

// BatchesOf lists a game date's prediction batches (limits left zero).
type BatchesOf func(ctx context.Context, gameDate string) ([]Batch, error)

// Reader reads gate documents and batches.
type Reader struct {
	FS       *firestore.Client
	Phases   []config.Phase
	Batch    config.Batch  // stall and age limits
	LookBack time.Duration // how long the sweep acts on a date: a date is open no longer
	Batches  BatchesOf     // nil: batches are not shown
	// BatchRange lists a range's batches in O(1) reads per batch, for
	// Season; nil: the range shows no batches.
	BatchRange BatchesIn
	Clock      clock.Clock  // "today"
	Names      config.Names // the running system's collections live, shadow_ ones in shadow mode
}

// Dates reads every phase of each date in one batched read, and each date's
// batches.
func (r *Reader) Dates(ctx context.Context, dates []gamedate.Date) ([]Date, error) {
	var refs []*firestore.DocumentRef
	for _, d := range dates {
		for _, p := range r.Phases {
			refs = append(refs, r.FS.Collection(r.Names.Coll(p.Collection)).Doc(d.String()))
		}
	}
	snaps, err := r.FS.GetAll(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("status: read gates: %w", err)
	}
	now := r.Clock.Now()
	out := make([]Date, 0, len(dates))
	for i, d := range dates {
		day := Date{GameDate: d.String()}
		for j := range r.Phases {
			data := map[string]any(nil)
			if s := snaps[i*len(r.Phases)+j]; s.Exists() {
				data = s.Data()
			}
			day.Phases = append(day.Phases, phase(&r.Phases[j], d, data, now))
		}
		if r.Batches != nil {
			if day.Batches, err = r.Batches(ctx, d.String()); err != nil {
				return nil, fmt.Errorf("status: batches of %s: %w", d, err)
			}
			for k := range day.Batches {
				withLimits(&day.Batches[k], r.Batch, now)
			}
		}
		day.Open = open(day, d, now, r.LookBack)
		out = append(out, day)
	}
	return out, nil
}

// open reports whether a date may still change by itself: the sweep still
// visits it (New York's today counts from its first hour) and a trigger or
// a batch completion is owed.
func open(day Date, d gamedate.Date, now time.Time, lookBack time.Duration) bool {
	days := int(lookBack / (24 * time.Hour))
	if d.Compare(gamedate.Today(now).AddDays(-days)) < 0 {
		return false
	}
	for _, p := range day.Phases {
		if !p.Triggered {
			return true
		}
	}
	for _, b := range day.Batches {
		if !b.Complete {
			return true
		}
	}
	return false
}

func withLimits(b *Batch, c config.Batch, now time.Time) {
	b.StallMinPercent = c.StallMinPercent
	b.StallAt = b.ProgressAt.Add(c.StallAfter)
	b.MaxAgeAt = b.StartTime.Add(c.MaxAge)
	b.State = batchState(b.Complete, b.Status, b.StartTime, c.MaxAge, now)
}

// phase decodes a gate document (nil: none yet) as it stands at now.
func phase(p *config.Phase, d gamedate.Date, data map[string]any, now time.Time) Phase {
	ps := Phase{Phase: p.Name, EntryPoint: p.EntryPoint, Expected: p.Expected, Exists: data != nil}
	late := map[string]bool{}
	ps.Late = strs(data["_late_processors"])
	for _, n := range ps.Late {
		late[n] = true
	}
	failures, _ := data["_failed_attempts"].(map[string]any)
	for _, name := range p.Expected {
		pr := processor(name, true, data[name], failures[name])
		pr.Late = late[name]
		if pr.CompletedAt != nil {
			ps.Completed = append(ps.Completed, name)
		} else {
			ps.Missing = append(ps.Missing, name)
		}
		ps.Processors = append(ps.Processors, pr)
	}
	ps.Unexpected = keys(data["_unexpected"])
	unexpected, _ := data["_unexpected"].(map[string]any)
	for _, name := range ps.Unexpected {
		ps.Processors = append(ps.Processors, processor(name, false, unexpected[name], nil))
	}
	ps.CompletedCount, _ = data["_completed_count"].(int64)
	ps.FirstCompletionAt = timePtr(data["_first_completion_at"])
	ps.Triggered, _ = data["_triggered"].(bool)
	ps.TriggeredAt = timePtr(data["_triggered_at"])
	ps.TriggerID, _ = data["_trigger_id"].(string)
	ps.TriggerReason = takeover.Reason(data)
	ps.TriggerState, _ = data["_trigger_state"].(string)
	ps.TriggerGeneration, _ = data["_trigger_generation"].(int64)
	ps.TriggerPartial, _ = data["_trigger_partial"].(bool)
	ps.Mode, _ = data["_mode"].(string)
	ps.SweepActions = strs(data["_sweep_actions"])
	ps.Failed = keys(data["_failed_attempts"])
	for _, r := range p.Timed {
		if !r.Enabled.Enabled(d.String()) {
			continue
		}
		l := Limit{Reason: r.Reason, MinCompleted: r.MinCompleted, AfterSeconds: int64(r.After / time.Second)}
		if ps.FirstCompletionAt != nil {
			at := ps.FirstCompletionAt.Add(r.After)
			l.At = &at
		}
		ps.TimedRules = append(ps.TimedRules, l)
	}
	ps.DataCheck = dataCheck(data["_data_check"])
	ps.State = phaseState(ps, p.StuckAfter, now)
	return ps
}

// processor decodes a processor's record and its recorded failure. An
// unexpected name's record has the failure's shape: {status, at, …}.
func processor(name string, expected bool, rec, failure any) Processor {
	pr := Processor{Name: name, Expected: expected}
	m, _ := rec.(map[string]any)
	status, _ := m["status"].(string)
	at := timePtr(m["completed_at"])
	if at == nil {
		at = timePtr(m["at"])
	}
	if status == "success" || status == "partial" {
		pr.Status, pr.CompletedAt = status, at
	} else if status != "" {
		pr.FailedStatus, pr.FailedAt = status, at
	}
	if n, ok := m["record_count"].(int64); ok {
		pr.RecordCount = &n
	}
	if f, ok := failure.(map[string]any); ok {
		pr.FailedStatus, _ = f["status"].(string)
		pr.FailedAt = timePtr(f["at"])
	}
	return pr
}

func dataCheck(v any) *DataCheck {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	dc := &DataCheck{Missing: strs(m["missing"]), CheckedAt: timePtr(m["checked_at"])}
	dc.Status, _ = m["status"].(string)
	dc.Check, _ = m["check"].(string)
	dc.Action, _ = m["action"].(string)
	dc.Tables, _ = m["tables"].(int64)
	dc.BytesProcessed, _ = m["bytes_processed"].(int64)
	dc.Error, _ = m["error"].(string)
	if counts, ok := m["counts"].(map[string]any); ok {
		dc.Counts = map[string]int64{}
		for k, n := range counts {
			switch n := n.(type) {
			case int64:
				dc.Counts[k] = n
			case float64:
				dc.Counts[k] = int64(n)
			}
		}
	}
	return dc
}

// timePtr reads a timestamp as takeover does: the running system writes
// some as ISO-8601 strings.
func timePtr(v any) *time.Time {
	if t := takeover.Time(v); !t.IsZero() {
		return &t
	}
	return nil
}

func strs(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func keys(v any) []string {
	m, _ := v.(map[string]any)
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return slices.Clip(out)
}
