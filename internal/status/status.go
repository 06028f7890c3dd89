// Package status answers "where is this game date?" for operators: the
// Status and Health entry points and the `phasegate status` command read
// through it.
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
)

// Phase is one gate's state for a date.
type Phase struct {
	Phase             string     `json:"phase"`
	EntryPoint        string     `json:"entry_point"`
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
	Mode              string     `json:"mode,omitempty"`
	Late              []string   `json:"late_processors,omitempty"`
	Unexpected        []string   `json:"unexpected,omitempty"`
	Failed            []string   `json:"failed,omitempty"`
	SweepActions      []string   `json:"sweep_actions,omitempty"`
	// DataCheck is the gate's _data_check: status, counts, missing, checked_at.
	DataCheck map[string]any `json:"data_check,omitempty"`
}

// Date is every phase's state for one game date.
type Date struct {
	GameDate string  `json:"game_date"`
	Phases   []Phase `json:"phases"`
}

// Reader reads gate documents.
type Reader struct {
	FS     *firestore.Client
	Phases []config.Phase
	Clock  clock.Clock // "today"
}

// Dates reads every phase of each date in one batched read.
func (r *Reader) Dates(ctx context.Context, dates []gamedate.Date) ([]Date, error) {
	var refs []*firestore.DocumentRef
	for _, d := range dates {
		for _, p := range r.Phases {
			refs = append(refs, r.FS.Collection(p.Collection).Doc(d.String()))
		}
	}
	snaps, err := r.FS.GetAll(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("status: read gates: %w", err)
	}
	out := make([]Date, 0, len(dates))
	for i, d := range dates {
		day := Date{GameDate: d.String()}
		for j := range r.Phases {
			day.Phases = append(day.Phases, phase(&r.Phases[j], snaps[i*len(r.Phases)+j]))
		}
		out = append(out, day)
	}
	return out, nil
}

func phase(p *config.Phase, snap *firestore.DocumentSnapshot) Phase {
	ps := Phase{Phase: p.Name, EntryPoint: p.EntryPoint, Expected: p.Expected, Exists: snap.Exists()}
	data := map[string]any{}
	if ps.Exists {
		data = snap.Data()
	}
	for _, name := range p.Expected {
		rec, _ := data[name].(map[string]any)
		if s, _ := rec["status"].(string); s == "success" || s == "partial" {
			ps.Completed = append(ps.Completed, name)
		} else {
			ps.Missing = append(ps.Missing, name)
		}
	}
	ps.CompletedCount, _ = data["_completed_count"].(int64)
	ps.FirstCompletionAt = timePtr(data["_first_completion_at"])
	ps.Triggered, _ = data["_triggered"].(bool)
	ps.TriggeredAt = timePtr(data["_triggered_at"])
	ps.TriggerID, _ = data["_trigger_id"].(string)
	ps.TriggerReason, _ = data["_trigger_reason"].(string)
	ps.TriggerState, _ = data["_trigger_state"].(string)
	ps.Mode, _ = data["_mode"].(string)
	ps.Late = strs(data["_late_processors"])
	ps.SweepActions = strs(data["_sweep_actions"])
	ps.DataCheck, _ = data["_data_check"].(map[string]any)
	ps.Unexpected = keys(data["_unexpected"])
	ps.Failed = keys(data["_failed_attempts"])
	return ps
}

func timePtr(v any) *time.Time {
	if t, ok := v.(time.Time); ok {
		t = t.UTC()
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
