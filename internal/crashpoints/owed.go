package crashpoints

import (
	"context"
	"fmt"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
)

// ─── STORAGE-DEPENDENT ─────────────────────────────────────────────────
//
// This file is the only part of the explorer that knows how phasegate
// keeps its own bookkeeping: what it still owes (owedOrClaimed) and which
// commit records that a publish or post was delivered (recordsDelivery,
// where a fault may leave one copy).

// Settles is a commit's Key when it records an effect done: the record of
// a Slack post or a row.
const Settles = "settles"

// settles reports whether c records an effect done (its state). An
// instance performs its effects concurrently, so only such a commit — not
// another lane's take of an effect, or a wait on a prerequisite — can be
// the record of a delivery.
func settles(c *firestorepb.CommitRequest) bool {
	for _, w := range c.GetWrites() {
		if collectionOf(w.GetUpdate().GetName()) == effect.Collection &&
			w.GetUpdate().GetFields()["state"].GetStringValue() == string(effect.Done) {
			return true
		}
	}
	return false
}

// recordsDelivery reports whether commit c is where phasegate records that
// sent was delivered. A publish's record is the commit that confirms its
// gate or batch (known from outside, by the contract fields it sets); a
// Slack post's is a commit of its effect record alone, recording it done.
func recordsDelivery(c, sent Call) bool {
	if c.Method != "Commit" {
		return false
	}
	if sent.Method == "Publish" {
		return c.Key == Confirmed
	}
	return c.Resource == effect.Collection && c.Key == Settles
}

// owedOrClaimed is the one place in the explorer that knows how phasegate
// stores what it still owes or has claimed; everything else is checked
// from outside (messages a consumer receives, Slack posts, BigQuery rows,
// the contract fields of CONTRACT §4). It lists each thing left owed,
// failed or claimed, empty when phasegate is done: every effect of
// orchestrator_effects not done (owed, or failed: no destination here
// refuses anything), and every gate or batch whose trigger or completion
// is claimed and not confirmed (_trigger_state, _open, completion_state).
//
// The gate and batch documents are read whole: a run's project holds a
// handful of documents, and a plain scan needs no index.
func owedOrClaimed(ctx context.Context, fs *firestore.Client, cfg *config.Config) ([]string, error) {
	var out []string
	for _, state := range []effect.State{effect.Owed, effect.Failed} {
		recs, err := effect.List(ctx, fs, cfg.Names(), state, 1000)
		if err != nil {
			return nil, fmt.Errorf("crashpoints: %w", err)
		}
		for _, r := range recs {
			out = append(out, fmt.Sprintf("effect %s %s (%s)", r.Key, state, r.LastError))
		}
	}
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
	err := scan(batch.Collection, func(d *firestore.DocumentSnapshot) {
		if s, _ := d.Data()[batch.FieldState].(string); s == "claimed" || s == "released" {
			out = append(out, fmt.Sprintf("%s/%s completion %s", batch.Collection, d.Ref.ID, s))
		}
	})
	return out, err
}
