package compare

import (
	"context"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Collections of the running coordinator's batches and their counters.
const (
	batches  = "prediction_batches"
	shards   = "counter_shards"
	shardFld = "count"
)

// Report is a comparison of some dates.
type Report struct {
	Dates    []gamedate.Date
	Phases   int // phase gates compared (either side has a document)
	Batches  int
	Differ   int // of those, how many differ
	Lines    []Difference
	Improved int // lines labelled improvement
}

// Unexplained counts the lines that are not improvements.
func (r Report) Unexplained() int { return len(r.Lines) - r.Improved }

// Summary is the closing line.
func (r Report) Summary() string {
	span := ""
	if n := len(r.Dates); n > 0 {
		span = r.Dates[0].String()
		if n > 1 {
			span += " … " + r.Dates[n-1].String()
		}
	}
	return fmt.Sprintf("compared %d date(s) %s: %d phase gate(s), %d batch(es); %d agree, %d differ; %d difference(s): %d improvement(s), %d unexplained",
		len(r.Dates), span, r.Phases, r.Batches, r.Phases+r.Batches-r.Differ, r.Differ, len(r.Lines), r.Improved, r.Unexplained())
}

// Reader reads both sides from Firestore: the running system's collections,
// and the shadow collections whatever PHASEGATE_MODE says.
type Reader struct {
	FS  *firestore.Client
	Cfg *config.Config
}

// Run compares each date. An error means something could not be read.
func (c *Reader) Run(ctx context.Context, dates []gamedate.Date, tolerance time.Duration) (Report, error) {
	rep := Report{Dates: dates}
	shadow := c.Cfg.ShadowNames()
	for _, d := range dates {
		var refs []*firestore.DocumentRef
		for _, p := range c.Cfg.Phases {
			refs = append(refs, c.FS.Collection(p.Collection).Doc(d.String()),
				c.FS.Collection(shadow.Coll(p.Collection)).Doc(d.String()))
		}
		snaps, err := c.FS.GetAll(ctx, refs)
		if err != nil {
			return rep, fmt.Errorf("compare: read gates of %s: %w", d, err)
		}
		for i := range c.Cfg.Phases {
			p := &c.Cfg.Phases[i]
			r, s := RunningGate(p, d, data(snaps[2*i])), ShadowGate(p, data(snaps[2*i+1]))
			if r.Exists || s.Exists {
				rep.add(&rep.Phases, Gates(p, d.String(), r, s, tolerance))
			}
		}
		running, err := c.batches(ctx, batches, d, false)
		if err != nil {
			return rep, err
		}
		shadowed, err := c.batches(ctx, shadow.Coll(batches), d, true)
		if err != nil {
			return rep, err
		}
		ids := make([]string, 0, len(running)+len(shadowed))
		for id := range running {
			ids = append(ids, id)
		}
		for id := range shadowed {
			if _, ok := running[id]; !ok {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		for _, id := range ids {
			rep.add(&rep.Batches, Batches(d.String(), id, running[id], shadowed[id], tolerance))
		}
	}
	return rep, nil
}

func (r *Report) add(count *int, lines []Difference) {
	*count++
	if len(lines) > 0 {
		r.Differ++
	}
	for _, l := range lines {
		if l.Improvement != "" {
			r.Improved++
		}
	}
	r.Lines = append(r.Lines, lines...)
}

func data(s *firestore.DocumentSnapshot) map[string]any {
	if s == nil || !s.Exists() {
		return nil
	}
	return s.Data()
}

// batches reads the batches of date in coll by batch id.
func (c *Reader) batches(ctx context.Context, coll string, d gamedate.Date, shadow bool) (map[string]Batch, error) {
	snaps, err := c.FS.Collection(coll).Where("game_date", "==", d.String()).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("compare: read %s of %s: %w", coll, d, err)
	}
	out := make(map[string]Batch, len(snaps))
	for _, s := range snaps {
		m := s.Data()
		id, _ := m["batch_id"].(string)
		if id == "" {
			id = s.Ref.ID
		}
		b := Batch{Exists: true, Expected: takeover.Int(m["expected_players"])}
		b.Complete, _ = m["is_complete"].(bool)
		b.At = takeover.Time(m["completion_time"])
		switch {
		case shadow && b.Complete:
			b.Status, _ = m["completion_status"].(string)
			b.Completed = takeover.Int(m["completed_count"])
		case shadow:
			if b.Completed, err = c.shardSum(ctx, s.Ref); err != nil {
				return nil, err
			}
		default:
			if b.Complete {
				b.Status = "success" // the running coordinator announces every batch so
			}
			b.Completed = int64(len(distinct(m["completed_players"])))
			if n := takeover.Int(m["completed_count"]); n > b.Completed {
				b.Completed = n // subcollection-only writes
			}
		}
		out[id] = b
	}
	return out, nil
}

func (c *Reader) shardSum(ctx context.Context, ref *firestore.DocumentRef) (int64, error) {
	snaps, err := ref.Collection(shards).Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("compare: read %s: %w", ref.Path, err)
	}
	var n int64
	for _, s := range snaps {
		n += takeover.Int(s.Data()[shardFld])
	}
	return n, nil
}

func distinct(v any) map[string]bool {
	out := map[string]bool{}
	for _, s := range strs(v) {
		out[s] = true
	}
	return out
}
