package legacytest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/completion"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/rules"
)

// Python stands in for the running orchestrators (RUNNING-SYSTEM §3–§6,
// §10): fed the same messages as phasegate, it writes the documents they
// write, the way they write them — a transaction that reads the whole
// document and sets it back, phase 4's ISO-string first completion, the
// deadline and tiers judged only when a message arrives, the 30-minute
// phase-4 timeout check, the coordinator's completed_players array. It
// publishes nothing. Names are normalised as phasegate does (the running
// system's later explicit maps), so that only behaviour differs.
type Python struct {
	FS    *firestore.Client
	Clock clock.Clock
	Cfg   *config.Config
	// Phase2Deadline is ENABLE_PHASE2_COMPLETION_DEADLINE (30 minutes).
	Phase2Deadline bool
}

// Completion handles a completion message for the phase with entryPoint.
func (py *Python) Completion(ctx context.Context, entryPoint string, msg map[string]any) error {
	p, ok := py.Cfg.Phase(entryPoint)
	if !ok {
		return fmt.Errorf("no phase %s", entryPoint)
	}
	proc, _ := msg["processor_name"].(string)
	table, _ := msg["output_table"].(string)
	date, _ := msg["game_date"].(string)
	status, _ := msg["status"].(string)
	if status != "success" && status != "partial" {
		return nil // failures are logged and ignored
	}
	name, _, err := completion.NewNormalizer(p).Normalize(proc, table)
	if err != nil {
		return err
	}
	now := py.Clock.Now()
	ref := py.FS.Collection(p.Collection).Doc(date)
	var triggered bool
	err = py.FS.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		triggered = false
		doc := map[string]any{}
		snap, err := tx.Get(ref)
		if err == nil {
			doc = snap.Data()
		} else if snap == nil || snap.Exists() {
			return err
		}
		if _, dup := doc[name]; dup {
			return nil
		}
		rec := map[string]any{"completed_at": now, "correlation_id": msg["correlation_id"], "status": status,
			"record_count": msg["record_count"], "execution_id": msg["execution_id"]}
		done, _ := doc["_triggered"].(bool)
		switch p.Number {
		case 2:
			doc[name] = rec
			doc["_completed_count"] = count(doc)
			if _, ok := doc["_first_completion_at"]; !ok && py.Phase2Deadline {
				doc["_first_completion_at"] = now
			}
			if count(doc) >= int64(len(p.Expected)) && !done {
				doc["_triggered"], doc["_triggered_at"] = true, now
				triggered = true
			}
		case 3:
			mode := rules.Mode(p, mustDate(date), now)
			rec["is_incremental"], rec["entities_changed"] = false, []string{}
			doc[name] = rec
			n := count(doc)
			doc["_completed_count"], doc["_mode"] = n, mode
			critical := true
			for _, c := range p.Critical {
				_, in := doc[c]
				critical = critical && in
			}
			pct := 100 * n / int64(len(p.Expected))
			reason := ""
			switch {
			case n >= int64(len(rules.Required(p, mode))): // same-day: any one processor (its bug, kept)
				reason = rules.ReasonAllComplete
			case critical && pct >= int64(p.MajorityPercent):
				reason = fmt.Sprintf("critical_plus_majority_%dpct", pct)
			}
			if reason != "" && !done {
				doc["_triggered"], doc["_triggered_at"], doc["_trigger_reason"] = true, now, reason
				triggered = true
			} else {
				doc["_last_update"] = now
			}
		case 4:
			if done {
				return nil // a late processor is not recorded at all
			}
			doc[name] = rec
			first, ok := doc["_first_completion_at"].(string)
			if !ok {
				first = now.UTC().Format("2006-01-02T15:04:05.000000+00:00")
				doc["_first_completion_at"] = first
			}
			n := count(doc)
			doc["_completed_count"] = n
			f, _ := time.Parse(time.RFC3339Nano, first)
			wait := now.Sub(f)
			reason, tier := "", ""
			switch {
			case n >= 5:
				reason = rules.ReasonAllComplete
			case n >= 4 && wait > time.Hour:
				reason, tier = "tier2_timeout", "Tier2"
			case n >= 3 && wait > 2*time.Hour:
				reason, tier = "tier3_timeout", "Tier3"
			case wait > 4*time.Hour:
				reason, tier = "max_timeout", "MaxTimeout"
			}
			if reason != "" {
				doc["_triggered"], doc["_triggered_at"], doc["_trigger_reason"] = true, now, reason
				triggered = true
				if tier != "" {
					var missing []string
					for _, e := range p.Expected {
						if _, in := doc[e]; !in {
							missing = append(missing, e)
						}
					}
					doc["_tier_name"], doc["_missing_processors"], doc["_wait_seconds"] = tier, missing, wait.Seconds()
				}
			}
		}
		return tx.Set(ref, doc) // the whole document, as the running system writes it
	})
	if err != nil || triggered || p.Number != 2 || !py.Phase2Deadline {
		return err
	}
	// check_completion_deadline: only when a message arrives, and without
	// looking at _triggered.
	snap, err := ref.Get(ctx)
	if err != nil {
		return err
	}
	first, ok := snap.Data()["_first_completion_at"].(time.Time)
	if !ok || now.Sub(first) <= 30*time.Minute {
		return nil
	}
	_, err = ref.Update(ctx, []firestore.Update{{Path: "_triggered", Value: true}, {Path: "_triggered_at", Value: now},
		{Path: "_triggered_reason", Value: "deadline_exceeded"}, {Path: "_partial_completion", Value: true}})
	return err
}

// TimeoutCheck is phase4_timeout_check (every 30 minutes): UTC today and
// yesterday, untriggered, first completion more than 4 h ago.
func (py *Python) TimeoutCheck(ctx context.Context) error {
	now := py.Clock.Now().UTC()
	for _, d := range []time.Time{now, now.AddDate(0, 0, -1)} {
		ref := py.FS.Collection("phase4_completion").Doc(d.Format("2006-01-02"))
		snap, err := ref.Get(ctx)
		if err != nil {
			if snap != nil && !snap.Exists() {
				continue
			}
			return err
		}
		data := snap.Data()
		first, _ := data["_first_completion_at"].(string)
		f, perr := time.Parse(time.RFC3339Nano, first)
		if t, _ := data["_triggered"].(bool); t || perr != nil || now.Sub(f) <= 4*time.Hour {
			continue
		}
		if _, err := ref.Update(ctx, []firestore.Update{{Path: "_triggered", Value: true}, {Path: "_triggered_at", Value: now},
			{Path: "_trigger_reason", Value: "scheduled_timeout_check"}, {Path: "_triggered_by", Value: "phase4_timeout_check"}}); err != nil {
			return err
		}
	}
	return nil
}

// StartBatch is the coordinator's /start: it creates the batch document.
func (py *Python) StartBatch(ctx context.Context, batchID, date string, expected int) error {
	now := py.Clock.Now()
	_, err := py.FS.Collection("prediction_batches").Doc(batchID).Set(ctx, map[string]any{
		"batch_id": batchID, "game_date": date, "expected_players": expected, "completed_players": []string{},
		"failed_players": []string{}, "total_predictions": 0, "is_complete": false, "start_time": now,
		"created_at": now, "updated_at": now, "correlation_id": "corr-" + batchID, "dataset_prefix": "",
	})
	return err
}

// Worker is the coordinator's /complete at dc6: ArrayUnion, Increment, a
// separate read, and is_complete once the array reaches expected_players.
func (py *Python) Worker(ctx context.Context, msg map[string]any) error {
	id, _ := msg["batch_id"].(string)
	player, _ := msg["player_lookup"].(string)
	ref := py.FS.Collection("prediction_batches").Doc(id)
	now := py.Clock.Now()
	if _, err := ref.Update(ctx, []firestore.Update{{Path: "completed_players", Value: firestore.ArrayUnion(player)},
		{Path: "total_predictions", Value: firestore.Increment(msg["predictions_generated"])}, {Path: "updated_at", Value: now}}); err != nil {
		return err
	}
	snap, err := ref.Get(ctx)
	if err != nil {
		return err
	}
	players, _ := snap.Data()["completed_players"].([]any)
	expected, _ := snap.Data()["expected_players"].(int64)
	if int64(len(players)) < expected {
		return nil
	}
	_, err = ref.Update(ctx, []firestore.Update{{Path: "is_complete", Value: true}, {Path: "completion_time", Value: now}})
	return err
}

// count is the running system's count: every field that is not metadata.
func count(doc map[string]any) int64 {
	var n int64
	for k := range doc {
		if !strings.HasPrefix(k, "_") {
			n++
		}
	}
	return n
}

func mustDate(s string) gamedate.Date {
	d, err := gamedate.Parse(s)
	if err != nil {
		panic(err)
	}
	return d
}
