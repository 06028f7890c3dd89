// Package opstate keeps the operational facts that Health must answer the
// same on every instance — when a sweep last finished, and each circuit
// breaker's last transition — as small Firestore documents, one per fact, in
// the collection orchestrator_health. Breakers live in each instance's
// memory; the instance that sees a transition writes it.
package opstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
)

// Collection holds one document per fact.
const Collection = "orchestrator_health"

// sweepDoc is the sweep's heartbeat; breaker documents are breakerPrefix +
// the breaker's name.
const (
	sweepDoc      = "sweep"
	breakerPrefix = "breaker-"
)

// writeTimeout bounds recording a transition: it runs at the end of the
// request that caused it, whose own deadline may have passed.
const writeTimeout = 3 * time.Second

// Store records and reads the facts.
type Store struct {
	fs       *firestore.Client
	coll     string
	clk      clock.Clock
	log      *slog.Logger
	instance string

	mu      sync.Mutex
	pending []Transition
}

// New returns a Store writing to fs's orchestrator_health (its shadow_
// twin in shadow mode, as names says).
func New(fs *firestore.Client, names config.Names, clk clock.Clock, log *slog.Logger) *Store {
	return &Store{fs: fs, coll: names.Coll(Collection), clk: clk, log: log, instance: InstanceID()}
}

// InstanceID names this process in what it records: Cloud Run's revision
// and host name when there are, plus a random suffix, since instances of a
// revision share a name.
func InstanceID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	host, _ := os.Hostname()
	id := hex.EncodeToString(b)
	if host != "" {
		id = host + "-" + id
	}
	if rev := os.Getenv("K_REVISION"); rev != "" {
		id = rev + "/" + id
	}
	return id
}

// Instance returns this process's name.
func (s *Store) Instance() string { return s.instance }

// Transition is a breaker's change of state.
type Transition struct {
	Breaker string
	State   string // closed | open | half-open
	At      time.Time
	// OpenFor is the breaker's open period: a reader treats an "open"
	// older than OpenFor plus a minute as closed, because the instance that
	// recorded it may have gone away before its breaker closed.
	OpenFor time.Duration
}

// BreakerChanged queues a transition. Breakers call it while holding their
// own lock, so it does no I/O; WriteTransitions, called by the request that
// drove the breaker, writes it.
func (s *Store) BreakerChanged(name string, openFor time.Duration, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(s.pending, Transition{Breaker: name, State: to, At: s.clk.Now().UTC(), OpenFor: openFor})
}

// WriteTransitions writes the queued transitions, oldest first. It does not
// inherit ctx's cancellation: a transition is usually caused by a request
// that ran out of time. A transition that cannot be written is logged and
// dropped; the breaker's next one replaces it anyway.
func (s *Store) WriteTransitions(ctx context.Context) {
	s.mu.Lock()
	todo := s.pending
	s.pending = nil
	s.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	for _, t := range todo {
		_, err := s.fs.Collection(s.coll).Doc(breakerPrefix+t.Breaker).Set(ctx, map[string]any{
			"breaker": t.Breaker, "state": t.State, "recorded_at": t.At,
			"open_for_s": int64(t.OpenFor.Seconds()), "instance": s.instance,
		})
		if err != nil {
			s.log.ErrorContext(ctx, "breaker transition not recorded", "breaker", t.Breaker, "to", t.State, "error", err.Error())
		}
	}
}

// SweepDone records that a sweep finished at the store's now, with what it
// did.
func (s *Store) SweepDone(ctx context.Context, summary map[string]any) error {
	doc := map[string]any{"last_sweep_at": s.clk.Now().UTC(), "instance": s.instance}
	for k, v := range summary {
		doc[k] = v
	}
	if _, err := s.fs.Collection(s.coll).Doc(sweepDoc).Set(ctx, doc); err != nil {
		return fmt.Errorf("opstate: record sweep: %w", err)
	}
	return nil
}

// Breaker is a breaker's last recorded transition.
type Breaker struct {
	State      string     `json:"state"`
	RecordedAt *time.Time `json:"recorded_at"` // nil: never recorded
}

// Facts are what Read returns.
type Facts struct {
	LastSweepAt time.Time // zero: no sweep has finished
	Breakers    map[string]Breaker
}

// Read returns the last sweep and the named breakers' last transitions, in
// one BatchGet. A breaker nobody recorded is closed; an "open" older than
// its open period plus a minute counts as closed.
func Read(ctx context.Context, fs *firestore.Client, names config.Names, now time.Time, breakers []string) (Facts, error) {
	coll := fs.Collection(names.Coll(Collection))
	refs := []*firestore.DocumentRef{coll.Doc(sweepDoc)}
	for _, b := range breakers {
		refs = append(refs, coll.Doc(breakerPrefix+b))
	}
	snaps, err := fs.GetAll(ctx, refs)
	if err != nil {
		return Facts{}, fmt.Errorf("opstate: read: %w", err)
	}
	f := Facts{Breakers: map[string]Breaker{}}
	if snaps[0].Exists() {
		f.LastSweepAt, _ = snaps[0].Data()["last_sweep_at"].(time.Time)
	}
	var errs []error
	for i, name := range breakers {
		b := Breaker{State: "closed"}
		if snap := snaps[i+1]; snap.Exists() {
			var d struct {
				State      string    `firestore:"state"`
				RecordedAt time.Time `firestore:"recorded_at"`
				OpenForS   int64     `firestore:"open_for_s"`
			}
			if err := snap.DataTo(&d); err != nil {
				errs = append(errs, fmt.Errorf("opstate: %s: %w", snap.Ref.ID, err))
				continue
			}
			at := d.RecordedAt.UTC()
			b = Breaker{State: d.State, RecordedAt: &at}
			if d.State != "closed" && now.Sub(d.RecordedAt) > time.Duration(d.OpenForS)*time.Second+time.Minute {
				b.State = "closed"
			}
		}
		f.Breakers[name] = b
	}
	return f, errors.Join(errs...)
}

// Count returns how many documents q matches, with a count aggregation:
// one RPC, billed one read per 1,000 index entries.
func Count(ctx context.Context, q firestore.Query) (int64, error) {
	res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		return 0, err
	}
	v, _ := res["n"].(*firestorepb.Value)
	return v.GetIntegerValue(), nil
}
