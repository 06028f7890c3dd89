package crashpoints

import (
	"context"
	"fmt"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/history"
)

// ─── STORAGE-DEPENDENT ─────────────────────────────────────────────────
//
// owedOrClaimed is the one place in the explorer that knows how phasegate
// stores what it still owes or has claimed; everything else is checked
// from outside (messages a consumer receives, Slack posts, BigQuery rows,
// the contract fields of CONTRACT §4). It lists each thing left owed or
// claimed, empty when phasegate is done. Today that is spread over five
// mechanisms: a gate's _trigger_state and _open, a batch's
// completion_state, the alert outbox (orchestrator_alerts) and the history
// outbox (orchestrator_history). With the effect log it becomes: every
// record of orchestrator_effects not performed, plus any claim.
//
// It reads whole collections: a run's project holds a handful of
// documents, and a plain scan needs no index.
func owedOrClaimed(ctx context.Context, fs *firestore.Client, cfg *config.Config) ([]string, error) {
	var out []string
	scan := func(coll string, f func(*firestore.DocumentSnapshot)) error {
		docs, err := fs.Collection(coll).Documents(ctx).GetAll()
		if err != nil {
			return fmt.Errorf("crashpoints: read %s: %w", coll, err)
		}
		for _, d := range docs {
			f(d)
		}
		return nil
	}
	for _, p := range cfg.Phases {
		err := scan(p.Collection, func(d *firestore.DocumentSnapshot) {
			m := d.Data()
			if s, _ := m["_trigger_state"].(string); s == "claimed" || s == "released" {
				out = append(out, fmt.Sprintf("%s/%s trigger %s", p.Collection, d.Ref.ID, s))
			}
			if m["_open"] == true {
				out = append(out, fmt.Sprintf("%s/%s open (a trigger owed)", p.Collection, d.Ref.ID))
			}
		})
		if err != nil {
			return nil, err
		}
	}
	steps := []struct {
		coll string
		f    func(*firestore.DocumentSnapshot)
	}{
		{batch.Collection, func(d *firestore.DocumentSnapshot) {
			if s, _ := d.Data()[batch.FieldState].(string); s == "claimed" || s == "released" {
				out = append(out, fmt.Sprintf("%s/%s completion %s", batch.Collection, d.Ref.ID, s))
			}
		}},
		{alert.Collection, func(d *firestore.DocumentSnapshot) {
			m := d.Data()
			if m["state"] == alert.StatePending {
				out = append(out, fmt.Sprintf("alert %v owed", m["key"]))
			}
			if m["resolve_state"] == alert.StatePending {
				out = append(out, fmt.Sprintf("alert %v: resolved owed", m["key"]))
			}
		}},
		{history.Collection, func(d *firestore.DocumentSnapshot) {
			if d.Data()["state"] == history.StatePending {
				out = append(out, fmt.Sprintf("history row %s owed", d.Ref.ID))
			}
		}},
	}
	for _, s := range steps {
		if err := scan(s.coll, s.f); err != nil {
			return nil, err
		}
	}
	return out, nil
}
