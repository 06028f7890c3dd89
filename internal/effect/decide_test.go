package effect_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/emulator"
)

// replayer sends an armed Commit twice and answers with the second
// answer, as the client's own retry does when the first answer is lost:
// the first is applied, its replay fails its preconditions.
type replayer struct {
	armed   atomic.Bool
	between func() // runs between the applied commit and its replay
}

func (r *replayer) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == "/google.firestore.v1.Firestore/Commit" && r.armed.CompareAndSwap(true, false) {
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		if r.between != nil {
			r.between()
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (w *world) replaying(t *testing.T) *replayer {
	t.Helper()
	r := &replayer{}
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), grpc.WithUnaryInterceptor(r.intercept))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := firestore.NewClient(context.Background(), w.project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	w.eng.FS = fs
	return r
}

func (w *world) owner(id string) *firestore.DocumentRef {
	return w.fs.Collection(w.eng.Names.Coll("owners")).Doc(id)
}

// A decision whose commit was applied but answered as a conflict (the
// client replayed it) is recognised as made, with its effects, not decided
// again or refused; the deciding document's update time comes with it
// unless the document changed since, when the caller must read it again.
func TestDecideRecognisesItsReplayedCommit(t *testing.T) {
	for _, changed := range []bool{false, true} {
		t.Run(map[bool]string{false: "unchanged", true: "changed_since"}[changed], func(t *testing.T) {
			w := newWorld(t, false)
			ctx := context.Background()
			r := w.replaying(t)
			if changed {
				r.between = func() {
					if _, err := w.owner("o1").Update(ctx, []firestore.Update{{Path: "touched", Value: true}}); err != nil {
						t.Error(err)
					}
				}
			}
			r.armed.Store(true)
			ef := slackAlert("replayed", alert.Error)
			data := map[string]any{"decided": true, effect.FieldIncarnation: "inc1"}
			m, err := w.eng.Decide(ctx, []effect.Write{{Ref: w.owner("o1"), Create: data}}, []effect.Effect{ef}, data)
			if err != nil {
				t.Fatalf("decide: %v", err)
			}
			if len(m.Effects) != 1 || m.Effects[0].ID() != ef.ID() {
				t.Fatalf("effects %v, want the alert", m.Effects)
			}
			if got := w.metrics.Get("effects.decision_replayed"); got != 1 {
				t.Fatalf("decision_replayed %d, want 1", got)
			}
			snap, err := w.owner("o1").Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case changed && (!m.Decided.IsZero() || m.Owner != nil):
				t.Fatalf("decided %v owner %+v: the document changed since, want neither", m.Decided, m.Owner)
			case !changed && (!m.Decided.Equal(snap.UpdateTime) || m.Owner == nil || !m.Owner.Updated.Equal(snap.UpdateTime)):
				t.Fatalf("decided %v owner %+v, want the document's update time %v", m.Decided, m.Owner, snap.UpdateTime)
			}
			st := w.eng.Perform(ctx, m)
			if !st[ef.ID()].Done || w.slack.count(ef.Key) != 1 {
				t.Fatalf("perform %+v, slack tries %d", st, w.slack.count(ef.Key))
			}
		})
	}
}

// An effect another decision owed before (an alert raised once) is dropped
// from a later decision, which commits with the rest; a decision whose own
// write conflicts is refused and owes nothing.
func TestDecideDropsWhatWasOwedBefore(t *testing.T) {
	w := newWorld(t, false)
	ctx := context.Background()
	x, y, z := slackAlert("x", alert.Error), slackAlert("y", alert.Error), slackAlert("z", alert.Error)
	create := func(id string) []effect.Write {
		return []effect.Write{{Ref: w.owner(id), Create: map[string]any{effect.FieldIncarnation: "inc1"}}}
	}
	if _, err := w.eng.Decide(ctx, create("a"), []effect.Effect{x}, nil); err != nil {
		t.Fatal(err)
	}
	m, err := w.eng.Decide(ctx, create("b"), []effect.Effect{x, y}, nil)
	if err != nil {
		t.Fatalf("decide b: %v", err)
	}
	if len(m.Effects) != 1 || m.Effects[0].ID() != y.ID() || m.Decided.IsZero() {
		t.Fatalf("b owes %d effects (decided %v), want y alone", len(m.Effects), m.Decided)
	}
	if got := w.metrics.Get("effects.owed_before"); got != 1 {
		t.Fatalf("owed_before %d, want 1", got)
	}
	if _, err := w.eng.Decide(ctx, create("a"), []effect.Effect{z}, nil); !errors.Is(err, effect.ErrConflict) {
		t.Fatalf("deciding a again: %v, want a conflict", err)
	}
	if _, err := w.eng.Ref(z.ID()).Get(ctx); err == nil {
		t.Fatal("the refused decision owes z")
	}
}
