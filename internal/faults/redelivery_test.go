package faults

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/emulator"
)

// commitFault fails Commit RPCs that write a document under one collection,
// as many times as it is armed. With applied set, the commit reaches
// Firestore and only its answer is lost (a timeout after the write).
type commitFault struct {
	collection string
	armed      atomic.Int32
	applied    bool
	hits       atomic.Int32
}

func (f *commitFault) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c, ok := req.(*firestorepb.CommitRequest)
	if !ok || !f.touches(c) || f.armed.Add(-1) < 0 {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	f.hits.Add(1)
	if f.applied {
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
	}
	// DeadlineExceeded: the client library does not retry a Commit on it,
	// so the failure reaches the gate as a transient error.
	return status.Error(codes.DeadlineExceeded, "injected: commit timed out")
}

func (f *commitFault) touches(c *firestorepb.CommitRequest) bool {
	for _, w := range c.Writes {
		name := w.GetUpdate().GetName() + w.GetDelete() + w.GetTransform().GetDocument()
		if strings.Contains(name, "/documents/"+f.collection+"/") {
			return true
		}
	}
	return false
}

// through returns the option that routes the App's Firestore client through
// f: its own connection to the emulator (the library ignores dial options
// there).
func (f *commitFault) through(t *testing.T) apptest.Option {
	t.Helper()
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), grpc.WithUnaryInterceptor(f.intercept))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return apptest.WithFirestoreOptions(option.WithGRPCConn(conn))
}

// A redelivery of a message whose first attempt failed after the
// idempotency-key check must be processed, not dropped as a duplicate. The
// running system wrote the key first, so a commit that failed after it lost
// the completion for good. Here the gate's Firestore client fails the commit
// that records the trigger-making completion.
func TestRedeliveryAfterFailedCommitIsProcessed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		applied bool // the commit was applied and only its answer lost
	}{
		{"commit_not_applied", false},
		{"commit_applied_answer_lost", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fault := &commitFault{collection: "phase4_completion", applied: tc.applied}
			r := newRig(t, "Phase4To5", rigOpt{extra: []apptest.Option{fault.through(t)}})
			for _, p := range phase4[:4] {
				if c := r.once("m-"+p, completion(p, "success")); c != 204 {
					t.Fatalf("%s: status %d", p, c)
				}
			}
			last := completion(phase4[4], "success")
			fault.armed.Store(1)
			if c := r.once("m-last", last); c != 500 {
				t.Fatalf("attempt whose commit failed: status %d, want 500", c)
			}
			if fault.hits.Load() != 1 {
				t.Fatalf("the commit fault was hit %d times", fault.hits.Load())
			}
			keys := len(r.keys())
			if !tc.applied {
				// Nothing of the failed attempt may remain: no key, no record.
				if keys != 4 {
					t.Errorf("%d idempotency keys after the failed commit, want 4: the key must not outlive its record", keys)
				}
				if doc := r.gateDoc(date); doc["ml_feature_store"] != nil || doc["_completed_count"] != int64(4) {
					t.Errorf("the failed commit left a record: %v", doc["ml_feature_store"])
				}
				if c := r.once("m-last", last); c != 204 {
					t.Fatalf("redelivery: status %d, want 204 (processed, not a duplicate)", c)
				}
			} else {
				// The record, its key and the claim are in: the redelivery is a
				// duplicate of the record, but the trigger is still owed, so it
				// is refused until the claim's lease ends and then finishes it.
				if keys != 5 {
					t.Fatalf("%d idempotency keys after the applied commit, want 5", keys)
				}
				if c := r.once("m-last", last); c != 500 {
					t.Fatalf("redelivery inside the claim's lease: status %d, want 500 (not acknowledged as a duplicate)", c)
				}
				r.Clock.Advance(r.Cfg.Gate.ClaimLease)
				if c := r.once("m-last", last); c != 200 {
					t.Fatalf("redelivery after the lease: status %d, want 200 (duplicate record, trigger finished)", c)
				}
			}
			msgs, _ := r.drain()
			got := byTrigger(t, msgs)
			if len(msgs) != 1 || len(got[id1("phase4_to_phase5")]) != 1 {
				t.Fatalf("consumer saw %d messages (%v), want the one trigger", len(msgs), sortedKeys(got))
			}
			doc := r.gateDoc(date)
			if doc["_completed_count"] != int64(5) || doc["_triggered"] != true || doc["ml_feature_store"] == nil {
				t.Fatalf("gate: count %v triggered %v ml_feature_store %v", doc["_completed_count"], doc["_triggered"], doc["ml_feature_store"])
			}
		})
	}
}

// The same completion re-published under a new message id counts once and
// leaves one pubsub_deduplication key, naming the first message, with
// expires_at = processed_at + 7 days (DEDUP_TTL_DAYS' default).
func TestRepublishedCompletionCountsOnce(t *testing.T) {
	t.Parallel()
	e := apptest.New(t)
	if e.Cfg.Idempotency.TTL != 7*24*time.Hour {
		t.Fatalf("default TTL %v, want 7 days", e.Cfg.Idempotency.TTL)
	}
	m := apptest.Completion("PlayerDailyCacheProcessor", date, "success")
	if c := e.PushOnce("Phase4To5", "first-id", m); c != 204 {
		t.Fatalf("first delivery: status %d, want 204", c)
	}
	e.Clock.Advance(time.Minute)
	if c := e.PushOnce("Phase4To5", "second-id", m); c != 200 {
		t.Fatalf("re-published under a new id: status %d, want 200 (duplicate)", c)
	}
	doc := e.Doc("phase4_completion/" + date)
	if doc["_completed_count"] != int64(1) {
		t.Fatalf("_completed_count = %v, want 1", doc["_completed_count"])
	}
	snaps, err := e.App.FS.Collection(dedup.Collection).Documents(context.Background()).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 {
		t.Fatalf("%d idempotency keys, want 1", len(snaps))
	}
	k := snaps[0].Data()
	processed, _ := k["processed_at"].(time.Time)
	expires, _ := k["expires_at"].(time.Time)
	if k["message_id"] != "first-id" || !processed.Equal(apptest.Start) || !expires.Equal(processed.Add(7*24*time.Hour)) {
		t.Fatalf("key %s = %v; want message_id first-id, processed_at %v, expires_at 7 days later", snaps[0].Ref.ID, k, apptest.Start)
	}
	if len(k) != 3 {
		t.Fatalf("key has fields %v, want exactly message_id, processed_at, expires_at", k)
	}
}
