package apptest

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/edge"
	"github.com/phasegate/phasegate/internal/emulator"
)

// Faults breaks an App at its RPC boundary: a Firestore commit that fails
// (applied or not), or the instance dying right after a commit, as Cloud
// Run's instances do, after which nothing it sends takes effect.
type Faults struct {
	mu     sync.Mutex
	rules  []*commitRule
	dead   bool
	killed int
	after  []func(*firestorepb.CommitRequest)
}

type commitRule struct {
	collection string
	skip       int // matching commits to let through first
	fault      Fault
	done       bool
	held       chan struct{} // Hold: closed once the commit waits
	release    chan struct{} // Hold: closed by Release
}

// Fault is what happens to a commit.
type Fault int

const (
	Fail      Fault = iota // it fails without taking effect
	FailAfter              // it takes effect, and its answer is lost (a timeout)
	DieBefore              // the instance dies right before it: it never happens
	DieAfter               // the instance dies right after it took effect
	Hold                   // it waits until Release, then goes on
	// Replay: it takes effect (AfterCommit sees it), then is sent again
	// and answers as the replay does, as the client's own retry of a
	// Commit answered Unavailable would.
	Replay
)

// NewFaults returns a Faults with nothing armed.
func NewFaults() *Faults { return &Faults{} }

// At arms fault for the commit writing under collection that comes after
// skip others that do.
func (f *Faults) At(collection string, skip int, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &commitRule{collection: collection, skip: skip, fault: fault,
		held: make(chan struct{}), release: make(chan struct{})})
}

// Held returns a channel closed once the commit a Hold stops is waiting,
// and Release lets every held commit go on.
func (f *Faults) Held() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.fault == Hold {
			return r.held
		}
	}
	return nil
}

// Release lets the held commits go on.
func (f *Faults) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.fault == Hold {
			select {
			case <-r.release:
			default:
				close(r.release)
			}
		}
	}
}

// Kill makes the instance die now: nothing it sends from here on takes
// effect.
func (f *Faults) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dead, f.killed = true, f.killed+1
}

// AfterCommit calls fn with every commit that took effect.
func (f *Faults) AfterCommit(fn func(*firestorepb.CommitRequest)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after = append(f.after, fn)
}

// Hit reports whether every armed fault was met.
func (f *Faults) Hit() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if !r.done {
			return false
		}
	}
	return true
}

// Killed reports how many times the instance died.
func (f *Faults) Killed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.killed
}

var errDead = status.Error(codes.Unavailable, "injected: the instance is dead")

func (f *Faults) isDead() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dead
}

// match returns the armed rule c hits, consuming one of its uses.
func (f *Faults) match(c *firestorepb.CommitRequest) *commitRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	var hit *commitRule
	for _, r := range f.rules {
		if r.done || !writes(c, r.collection) {
			continue
		}
		if r.skip > 0 {
			r.skip--
			continue
		}
		if hit == nil {
			r.done, hit = true, r
		}
	}
	return hit
}

func writes(c *firestorepb.CommitRequest, collection string) bool {
	for _, w := range c.Writes {
		name := w.GetUpdate().GetName() + w.GetDelete() + w.GetTransform().GetDocument()
		if strings.Contains(name, "/documents/"+collection+"/") {
			return true
		}
	}
	return false
}

func (f *Faults) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if f.isDead() {
		return errDead
	}
	c, ok := req.(*firestorepb.CommitRequest)
	var r *commitRule
	if ok {
		r = f.match(c)
	}
	if r != nil && r.fault == Hold {
		close(r.held)
		<-r.release
		r = nil
	}
	if r == nil || r.fault == Replay {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil && ok {
			f.mu.Lock()
			after := slices.Clone(f.after)
			f.mu.Unlock()
			for _, fn := range after {
				fn(c)
			}
		}
		if err != nil || r == nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if r.fault == FailAfter || r.fault == DieAfter {
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
	}
	if r.fault == DieBefore || r.fault == DieAfter {
		f.mu.Lock()
		f.dead, f.killed = true, f.killed+1
		f.mu.Unlock()
		return errDead
	}
	// DeadlineExceeded: the client library does not retry a Commit on it.
	return status.Error(codes.DeadlineExceeded, "injected: commit timed out")
}

func (f *Faults) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if f.isDead() {
		return nil, errDead
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// Option routes the App's Firestore clients and its publishes through f.
func (f *Faults) Option(t testing.TB) Option {
	t.Helper()
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"),
		grpc.WithChainUnaryInterceptor(f.unary), grpc.WithChainStreamInterceptor(f.stream))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func(s *setup) {
		WithFirestoreOptions(option.WithGRPCConn(conn))(s)
		prev := s.opts.WrapPublisher
		s.opts.WrapPublisher = func(p edge.Publisher) edge.Publisher {
			if prev != nil {
				p = prev(p)
			}
			return deadPublisher{Publisher: p, f: f}
		}
	}
}

// deadPublisher publishes nothing once its instance is dead.
type deadPublisher struct {
	edge.Publisher
	f *Faults
}

func (d deadPublisher) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	if d.f.isDead() {
		return "", errors.New("injected: the instance is dead")
	}
	return d.Publisher.Publish(ctx, topic, data, attrs)
}
