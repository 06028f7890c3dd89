package apptest

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/emulator"
)

// RPCs counts the Firestore RPCs an App makes, by method, the documents
// they return (what Firestore bills as reads) and the documents its commits
// write.
type RPCs struct {
	mu     sync.Mutex
	calls  map[string]int
	docs   int
	writes int
}

// CountRPCs returns an Option that routes the App's Firestore client through
// a counting connection, and the counter. The client library dials the
// emulator itself and ignores dial options, so this brings its own.
func CountRPCs(t testing.TB) (Option, *RPCs) {
	c := &RPCs{calls: map[string]int{}}
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"),
		grpc.WithChainUnaryInterceptor(c.unary), grpc.WithChainStreamInterceptor(c.stream))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return WithFirestoreOptions(option.WithGRPCConn(conn)), c
}

func (c *RPCs) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.mu.Lock()
	c.calls[method]++
	if r, ok := req.(*firestorepb.CommitRequest); ok {
		c.writes += len(r.Writes)
	}
	c.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *RPCs) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.mu.Lock()
	c.calls[method]++
	c.mu.Unlock()
	s, err := streamer(ctx, desc, cc, method, opts...)
	return &countingStream{ClientStream: s, c: c}, err
}

type countingStream struct {
	grpc.ClientStream
	c *RPCs
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		found := false
		switch r := m.(type) {
		case *firestorepb.RunQueryResponse:
			found = r.Document != nil
		case *firestorepb.BatchGetDocumentsResponse:
			found = r.GetFound() != nil
		}
		if found {
			s.c.mu.Lock()
			s.c.docs++
			s.c.mu.Unlock()
		}
	}
	return err
}

// Writes returns the documents written since the last TakeWrites.
func (c *RPCs) TakeWrites() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.writes
	c.writes = 0
	return n
}

// Take returns the calls and documents read since the last Take.
func (c *RPCs) Take() (total int, byMethod map[string]int, docs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.calls {
		total += v
	}
	byMethod, docs = c.calls, c.docs
	c.calls, c.docs = map[string]int{}, 0
	return total, byMethod, docs
}

// FailQueries returns an Option under which every query of the App on the
// collections fails as production Firestore fails a query whose composite
// index is missing (FAILED_PRECONDITION), and the number of queries failed.
// The emulator enforces no index, so this is how a test meets that failure.
func FailQueries(t testing.TB, collections ...string) (Option, *atomic.Int64) {
	var n atomic.Int64
	fail := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/google.firestore.v1.Firestore/RunQuery" {
			return s, err
		}
		return &failingQuery{ClientStream: s, collections: collections, n: &n}, nil
	}
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), grpc.WithChainStreamInterceptor(fail))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return WithFirestoreOptions(option.WithGRPCConn(conn)), &n
}

// failingQuery sees the request as it is sent (a server-streaming call sends
// it after the stream opens) and fails the answer when it names collection.
type failingQuery struct {
	grpc.ClientStream
	collections []string
	n           *atomic.Int64
	fail        bool
}

func (s *failingQuery) SendMsg(m any) error {
	if r, ok := m.(*firestorepb.RunQueryRequest); ok {
		for _, f := range r.GetStructuredQuery().GetFrom() {
			s.fail = s.fail || slices.Contains(s.collections, f.GetCollectionId())
		}
	}
	return s.ClientStream.SendMsg(m)
}

func (s *failingQuery) RecvMsg(m any) error {
	if s.fail {
		s.n.Add(1)
		return status.Error(codes.FailedPrecondition, "The query requires an index. You can create it here: https://console.firebase.google.com/…")
	}
	return s.ClientStream.RecvMsg(m)
}
