package status

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"

	"github.com/phasegate/phasegate/internal/gamedate"
)

// MaxSeasonDates bounds one range request (CONTRACT §13): two months, so a
// page stays a page and its reads stay a few hundred documents.
const MaxSeasonDates = 62

// seasonDefaultDays is the range without from: the date to and the 13
// before it, a fortnight.
const seasonDefaultDays = 14

// minTriggeredForMedian is how many triggered dates of a phase and mode a
// median needs before offsets from it mean anything.
const minTriggeredForMedian = 3

// Season is GET ?from=&to= as JSON (CONTRACT §13): one entry per date of
// the range, oldest first.
type Season struct {
	From   string      `json:"from"`
	To     string      `json:"to"`
	Season []SeasonDay `json:"season"`
}

// SeasonDay is one date of a range: each gate and each batch in the
// per-date answer's vocabulary.
type SeasonDay struct {
	GameDate string        `json:"game_date"`
	Phases   []SeasonPhase `json:"phases"`
	Batches  []SeasonBatch `json:"batches"`
	// open: something is still owed while the sweep looks at the date.
	open bool
}

// SeasonPhase is a gate's outcome. Mode and OffsetMinutes add to §13's
// keys: the median an offset is measured from is per phase and mode.
type SeasonPhase struct {
	Phase             string     `json:"phase"`
	State             string     `json:"state"`
	TriggerReason     string     `json:"trigger_reason"`
	TriggeredAt       *time.Time `json:"triggered_at"`
	FirstCompletionAt *time.Time `json:"first_completion_at"`
	CompletedCount    int64      `json:"completed_count"`
	Expected          []string   `json:"expected_processors"`
	Missing           []string   `json:"missing_processors"`
	Mode              string     `json:"mode,omitempty"`
	// OffsetMinutes is the first trigger's minutes after the game date's
	// New York midnight less the range's median for the phase and mode;
	// absent without a trigger or with fewer than three to take it over.
	OffsetMinutes *int `json:"offset_minutes,omitempty"`
}

// SeasonBatch is a prediction batch's outcome; CompletedAt and
// OffsetMinutes add to §13's keys, as a phase's trigger time does.
type SeasonBatch struct {
	BatchID       string     `json:"batch_id"`
	State         string     `json:"state"`
	Completed     int64      `json:"completed_players"`
	Expected      int64      `json:"expected_players"`
	StartTime     time.Time  `json:"start_time"`
	CompletedAt   *time.Time `json:"completion_time,omitempty"`
	OffsetMinutes *int       `json:"offset_minutes,omitempty"`
}

// BatchSummary is a batch as a range read returns it: the counts its
// document (and, while it is open, its counter shards) carry, never its
// completions.
type BatchSummary struct {
	BatchID, GameDate string
	Expected          int64
	Completed         int64
	Complete          bool
	Status            string // success | partial once complete
	StartTime         time.Time
	CompletedAt       *time.Time
}

// BatchesIn lists the batches of the game dates from through to.
type BatchesIn func(ctx context.Context, from, to string) ([]BatchSummary, error)

// ParseRange reads a range's bounds; "" takes the default (to: New York's
// today at now; from: 13 days before to). Every error says why, for a 400.
func ParseRange(from, to string, now time.Time) (gamedate.Date, gamedate.Date, error) {
	var lo, hi gamedate.Date
	hi = gamedate.Today(now)
	if to != "" {
		d, err := parseDay(to, now)
		if err != nil {
			return lo, hi, fmt.Errorf("to: %w", err)
		}
		hi = d
	}
	lo = hi.AddDays(1 - seasonDefaultDays)
	if from != "" {
		d, err := parseDay(from, now)
		if err != nil {
			return lo, hi, fmt.Errorf("from: %w", err)
		}
		lo = d
	}
	if lo.Compare(hi) > 0 {
		return lo, hi, fmt.Errorf("from %s is after to %s", lo, hi)
	}
	if n := days(lo, hi); n > MaxSeasonDates {
		return lo, hi, fmt.Errorf("%s to %s is %d dates; at most %d per request", lo, hi, n, MaxSeasonDates)
	}
	return lo, hi, nil
}

func parseDay(s string, now time.Time) (gamedate.Date, error) {
	if s == "today" {
		return gamedate.Today(now), nil
	}
	return gamedate.Parse(s)
}

// days counts the dates from lo through hi.
func days(lo, hi gamedate.Date) int {
	a := time.Date(lo.Year, lo.Month, lo.Day, 0, 0, 0, 0, time.UTC)
	b := time.Date(hi.Year, hi.Month, hi.Day, 0, 0, 0, 0, time.UTC)
	return int(b.Sub(a)/(24*time.Hour)) + 1
}

// Season reads the dates from through to with one range query per gate
// collection and one for the batches, whatever the completions or players
// in them: gate documents are named by their date, so a key range is
// served by the automatic index. Dates without documents are not_started.
func (r *Reader) Season(ctx context.Context, from, to gamedate.Date) (*Season, error) {
	gates := make([]map[string]map[string]any, len(r.Phases))
	var batches []BatchSummary
	g, gctx := errgroup.WithContext(ctx)
	for i := range r.Phases {
		g.Go(func() (err error) {
			gates[i], err = r.gatesIn(gctx, r.Names.Coll(r.Phases[i].Collection), from, to)
			return err
		})
	}
	if r.BatchRange != nil {
		g.Go(func() (err error) {
			if batches, err = r.BatchRange(gctx, from.String(), to.String()); err != nil {
				return fmt.Errorf("status: batches from %s to %s: %w", from, to, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	byDate := map[string][]BatchSummary{}
	for _, b := range batches {
		byDate[b.GameDate] = append(byDate[b.GameDate], b)
	}
	now := r.Clock.Now()
	s := &Season{From: from.String(), To: to.String(), Season: []SeasonDay{}}
	for d := from; d.Compare(to) <= 0; d = d.AddDays(1) {
		day := Date{GameDate: d.String()}
		for j := range r.Phases {
			day.Phases = append(day.Phases, phase(&r.Phases[j], d, gates[j][d.String()], now))
		}
		for _, b := range byDate[d.String()] {
			day.Batches = append(day.Batches, r.summaryBatch(b, now))
		}
		day.Open = open(day, d, now, r.LookBack)
		s.Season = append(s.Season, seasonDay(day))
	}
	withOffsets(s.Season)
	return s, nil
}

// gatesIn reads a gate collection's documents named from through to, by
// date.
func (r *Reader) gatesIn(ctx context.Context, coll string, from, to gamedate.Date) (map[string]map[string]any, error) {
	c := r.FS.Collection(coll)
	snaps, err := c.Where(firestore.DocumentID, ">=", c.Doc(from.String())).
		Where(firestore.DocumentID, "<=", c.Doc(to.String())).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("status: %s from %s to %s: %w", coll, from, to, err)
	}
	out := make(map[string]map[string]any, len(snaps))
	for _, s := range snaps {
		out[s.Ref.ID] = s.Data()
	}
	return out, nil
}

// summaryBatch is a range's batch with its limits and state, as Dates gives
// a date's.
func (r *Reader) summaryBatch(b BatchSummary, now time.Time) Batch {
	out := Batch{BatchID: b.BatchID, Expected: b.Expected, Completed: b.Completed, Complete: b.Complete,
		Status: b.Status, StartTime: b.StartTime, ProgressAt: b.StartTime, CompletedAt: b.CompletedAt}
	withLimits(&out, r.Batch, now)
	return out
}

// seasonDay keeps of a date what the range answer carries.
func seasonDay(d Date) SeasonDay {
	out := SeasonDay{GameDate: d.GameDate, Phases: []SeasonPhase{}, Batches: []SeasonBatch{}, open: d.Open}
	for _, p := range d.Phases {
		out.Phases = append(out.Phases, SeasonPhase{Phase: p.Phase, State: p.State, TriggerReason: p.TriggerReason,
			TriggeredAt: p.TriggeredAt, FirstCompletionAt: p.FirstCompletionAt, CompletedCount: p.CompletedCount,
			Expected: orEmpty(p.Expected), Missing: orEmpty(p.Missing), Mode: p.Mode})
	}
	for _, b := range d.Batches {
		out.Batches = append(out.Batches, SeasonBatch{BatchID: b.BatchID, State: b.State, Completed: b.Completed,
			Expected: b.Expected, StartTime: b.StartTime, CompletedAt: b.CompletedAt})
	}
	return out
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// batchColumn names the batches' column among the phases' for medians.
const batchColumn = "prediction_batch"

// medianKey is what a median is taken over: one phase (or the batches) in
// one mode.
type medianKey struct{ column, mode string }

// triggerMinutes is when a cell's trigger (a batch's completion) fell, in
// whole minutes after its game date's New York midnight; false without one.
func (p SeasonPhase) triggerMinutes(gameDate string) (int, bool) {
	if p.TriggeredAt == nil || (p.State != StateTriggered && p.State != StatePartial) {
		return 0, false
	}
	return minutesAfterMidnight(gameDate, *p.TriggeredAt), true
}

func (b SeasonBatch) triggerMinutes(gameDate string) (int, bool) {
	if b.CompletedAt == nil {
		return 0, false
	}
	return minutesAfterMidnight(gameDate, *b.CompletedAt), true
}

// minutesAfterMidnight measures t from the start of the game date in New
// York, so a trigger after midnight counts on from the evening before and
// 01:15 the next morning is 1,515.
func minutesAfterMidnight(gameDate string, t time.Time) int {
	d, err := gamedate.Parse(gameDate)
	if err != nil {
		return 0
	}
	midnight := time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, gamedate.NewYork())
	return int(math.Floor(t.Sub(midnight).Minutes()))
}

// medians takes, per phase and mode, the median trigger minute over the
// dates that triggered; a key with fewer than minTriggeredForMedian has
// none.
func medians(season []SeasonDay) map[medianKey]median {
	samples := map[medianKey][]int{}
	for _, d := range season {
		for _, p := range d.Phases {
			if m, ok := p.triggerMinutes(d.GameDate); ok {
				k := medianKey{p.Phase, p.Mode}
				samples[k] = append(samples[k], m)
			}
		}
		for _, b := range d.Batches {
			if m, ok := b.triggerMinutes(d.GameDate); ok {
				k := medianKey{column: batchColumn}
				samples[k] = append(samples[k], m)
			}
		}
	}
	out := map[medianKey]median{}
	for k, v := range samples {
		if len(v) >= minTriggeredForMedian {
			out[k] = median{Minutes: medianOf(v), N: len(v)}
		}
	}
	return out
}

// median is a median trigger minute and how many dates it was taken over.
type median struct {
	Minutes float64
	N       int
}

func medianOf(v []int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return float64(s[n/2])
	}
	return float64(s[n/2-1]+s[n/2]) / 2
}

// offset is minutes less the median, rounded half away from zero.
func offset(minutes int, m median) int {
	return int(math.Round(float64(minutes) - m.Minutes))
}

// withOffsets sets each triggered cell's offset from its median.
func withOffsets(season []SeasonDay) {
	ms := medians(season)
	for i := range season {
		d := &season[i]
		for j := range d.Phases {
			p := &d.Phases[j]
			if v, ok := p.triggerMinutes(d.GameDate); ok {
				if m, ok := ms[medianKey{p.Phase, p.Mode}]; ok {
					o := offset(v, m)
					p.OffsetMinutes = &o
				}
			}
		}
		for j := range d.Batches {
			b := &d.Batches[j]
			if v, ok := b.triggerMinutes(d.GameDate); ok {
				if m, ok := ms[medianKey{column: batchColumn}]; ok {
					o := offset(v, m)
					b.OffsetMinutes = &o
				}
			}
		}
	}
}
