package batch_test

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/emulator"
)

// holder holds the response of the nth BatchGetDocuments that asks for
// exactly docs documents: the server has answered (its read time is fixed)
// but the caller does not see the answer until release is closed.
type holder struct {
	docs    int
	nth     int32
	seen    atomic.Int32
	held    chan struct{} // closed once the held read has been answered
	release chan struct{}
	// after signals the first BatchGet of afterDocs documents answered after
	// the held one.
	afterDocs int
	after     chan struct{}
	afterOnce sync.Once
}

func newHolder(docs int, nth int32, afterDocs int) *holder {
	return &holder{docs: docs, nth: nth, held: make(chan struct{}), release: make(chan struct{}),
		afterDocs: afterDocs, after: make(chan struct{})}
}

func (h *holder) option(t testing.TB) apptest.Option {
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), grpc.WithChainStreamInterceptor(h.stream))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return apptest.WithFirestoreOptions(option.WithGRPCConn(conn))
}

func (h *holder) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return s, err
	}
	return &heldStream{ClientStream: s, h: h}, nil
}

type heldStream struct {
	grpc.ClientStream
	h          *holder
	hold, post bool
	done       bool
}

func (s *heldStream) SendMsg(m any) error {
	if r, ok := m.(*pb.BatchGetDocumentsRequest); ok {
		select {
		case <-s.h.held:
			s.post = len(r.Documents) == s.h.afterDocs
		default:
			if len(r.Documents) == s.h.docs && s.h.seen.Add(1) == s.h.nth {
				s.hold = true
			}
		}
	}
	return s.ClientStream.SendMsg(m)
}

func (s *heldStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if s.hold && !s.done {
		s.done = true
		close(s.h.held)
		<-s.h.release
	}
	if s.post && err != nil { // the stream ended: every document is in
		s.h.afterOnce.Do(func() { close(s.h.after) })
	}
	return err
}

// An exact check that began before the completing player's commit must not
// answer for that player: here the first check starts early (a re-published
// player of the running coordinator's array makes the estimate run ahead),
// and the last player's own check, joining it while it runs, must still
// complete the batch instead of acknowledging with nothing published.
func TestCompletionJoiningAnEarlierCheck(t *testing.T) {
	// BatchGets of 17 documents (the batch and its shards) are exact checks:
	// the first is the batch's first read, the second the early check.
	h := newHolder(1+batch.LegacyShards, 2, batch.LegacyShards)
	e := env(t, batch.ModeSubOnly, nil, nil, h.option(t))
	sub := e.Sub(topic)
	ctx := context.Background()
	createBatch(t, e, "race", 2)
	if _, err := e.App.FS.Collection(batch.Collection).Doc("race").Set(ctx,
		map[string]any{"completed_players": []string{"p0"}}, mergeAll); err != nil {
		t.Fatal(err)
	}
	rec := func(p, id string) (batch.Outcome, error) {
		return e.App.Batches.Record(ctx, &batch.Completion{PlayerLookup: p, GameDate: gameDate, BatchID: "race",
			PredictionsGenerated: 1}, id)
	}
	var wg sync.WaitGroup
	var outA, outB batch.Outcome
	var errA, errB error
	// p0 again (already in the array): recorded, the estimate says 2 of 2,
	// the exact check finds 1.
	wg.Go(func() { outA, errA = rec("p0", "again-p0") })
	select {
	case <-h.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the early exact check never ran")
	}
	// p1 completes the batch while that check is in flight.
	wg.Go(func() { outB, errB = rec("p1", "m-p1") })
	select {
	case <-h.after: // p1's shard read is in: its check comes next
	case <-time.After(10 * time.Second):
		t.Fatal("p1 never read the shards")
	}
	time.Sleep(300 * time.Millisecond)
	close(h.release)
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("errors: %v, %v", errA, errB)
	}
	t.Logf("p0 again: %+v; p1: %+v", outA, outB)
	got := completions(t, sub.Drain(t, time.Second))
	if len(got) != 1 {
		t.Fatalf("got %d batch completions after the last player was acknowledged, want 1", len(got))
	}
	if got[0].Status != "success" || got[0].Metadata.CompletedPlayers != 2 {
		t.Fatalf("batch completion = %+v", got[0])
	}
}
