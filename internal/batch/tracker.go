package batch

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"math"
	"strconv"
	"sync"

	"cloud.google.com/go/firestore"
	vkit "cloud.google.com/go/firestore/apiv1"
	"golang.org/x/sync/singleflight"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Firestore names (CONTRACT §4).
const (
	Collection     = "prediction_batches"
	CompletionsSub = "completions"
	ShardsSub      = "counter_shards"
	// KeyKind names worker-completion idempotency keys in pubsub_deduplication.
	KeyKind = "worker_completion"
)

// A batch's players are spread over counter_shard_count counter documents,
// fixed when phasegate first sees the batch (see ShardsFor) and stored on
// the batch document, so that changing the arrival rate never changes an
// open batch's layout. A batch without the field was laid out by a
// revision that always used LegacyShards.
const (
	LegacyShards = 16
	// MaxShards bounds the one BatchGet that reads every shard.
	MaxShards = 500
	// shardWriteRate is the mean writes per second a shard is sized for:
	// well under Firestore's sustained one per second per document, so
	// that the busiest of a hundred shards stays near one over any 10 s.
	shardWriteRate = 0.3
	// shardWindowWrites: a batch too small to write any shard more than
	// this many times in all needs no more shards, whatever the rate.
	shardWindowWrites = 10
)

// ShardsFor is the counter shard count for a new batch of expected players
// arriving at rate completions per second: enough that a shard's mean
// write rate stays at shardWriteRate, never more than a batch of that size
// could fill shardWindowWrites times, never fewer than LegacyShards (so a
// completion an older revision counted on shard hash%16 still lands on a
// shard that is read).
func ShardsFor(expected int64, rate int) int {
	byRate := int(math.Ceil(float64(rate) / shardWriteRate))
	bySize := int((expected + shardWindowWrites - 1) / shardWindowWrites)
	return min(MaxShards, max(LegacyShards, min(byRate, bySize)))
}

// Effects records and performs what decisions owe.
type Effects interface {
	Decide(ctx context.Context, ws []effect.Write, effs []effect.Effect, after map[string]any) (effect.Made, error)
	Perform(ctx context.Context, m effect.Made) map[string]effect.Status
	Resume(ctx context.Context, id string) (effect.Status, error)
}

// Deps are what a Tracker needs from outside.
type Deps struct {
	Firestore *firestore.Client
	Effects   Effects
	Clock     clock.Clock
	Log       *slog.Logger
	Metrics   *metrics.Registry
	// Config is read on every call: Batch (flags, cap, stall rules), Gate
	// (lease, attempts), Topics.BatchComplete, Idempotency.
	Config *config.Config
	// HistoryTable, "" when history is off (shadow mode, no BigQuery), gets
	// a row per completed batch.
	HistoryTable string
	// Raw is the low-level client on the same project, for the single-RPC
	// commits whose transform results the fast path reads; its owner
	// closes it.
	Raw *vkit.Client
}

// Tracker records worker completions and completes prediction batches.
type Tracker struct {
	Deps
	raw    *vkit.Client
	cache  *cache
	flight singleflight.Group
}

// New returns a Tracker committing through d.Raw.
func New(d Deps) *Tracker {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Metrics == nil {
		d.Metrics = &metrics.Registry{}
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Tracker{Deps: d, raw: d.Raw, cache: newCache(4096)}
}

// Mode is where a batch's completions are written and counted from
// (CONTRACT §6). A batch id's flag bucket decides it.
type Mode int

const (
	ModeLegacy         Mode = iota // array only, counted from the array
	ModeDualArrayReads             // array (uncapped) and subcollection, counted from the array
	ModeDualSubReads               // subcollection and an array capped for older readers, counted from the subcollection
	ModeSubOnly                    // subcollection only
)

func (m Mode) String() string {
	switch m {
	case ModeDualArrayReads:
		return "dual_write_array_reads"
	case ModeDualSubReads:
		return "dual_write_subcollection_reads"
	case ModeSubOnly:
		return "subcollection_only"
	}
	return "legacy"
}

// ModeFor returns the mode of batchID under cfg. The combination config
// validation refuses (subcollection writes without dual writes or
// subcollection reads) cannot occur for any bucket; it would count as
// subcollection-only.
func ModeFor(cfg config.Batch, batchID string) Mode {
	switch {
	case !cfg.EnableSubcollection.Enabled(batchID):
		return ModeLegacy
	case cfg.DualWrite.Enabled(batchID) && !cfg.UseSubcollectionReads.Enabled(batchID):
		return ModeDualArrayReads
	case cfg.DualWrite.Enabled(batchID):
		return ModeDualSubReads
	}
	return ModeSubOnly
}

// ShardOf returns the counter shard of a player in a batch of n shards.
func ShardOf(player string, n int) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(player))
	return int(h.Sum64() % uint64(n))
}

func (t *Tracker) batchRef(batchID string) *firestore.DocumentRef {
	return t.Firestore.Collection(t.Config.Names().Coll(Collection)).Doc(docid.Encode(batchID))
}

func (t *Tracker) shardRef(batchID string, k int) *firestore.DocumentRef {
	return t.batchRef(batchID).Collection(ShardsSub).Doc(strconv.Itoa(k))
}

func (t *Tracker) completionRef(batchID, player string) *firestore.DocumentRef {
	return t.batchRef(batchID).Collection(CompletionsSub).Doc(docid.Encode(player))
}

// ownerPath is the batch document's path as the effect log names owners.
func (t *Tracker) ownerPath(batchID string) string {
	return t.Config.Names().Coll(Collection) + "/" + docid.Encode(batchID)
}

// Collection is the batch documents' collection (the effect log's owner
// name for them).
func (t *Tracker) Collection() string { return t.Config.Names().Coll(Collection) }

// Handle is the PredictionCompletions entry point.
func (t *Tracker) Handle(ctx context.Context, m envelope.Message) error {
	c, err := ParseCompletion(m.Data)
	if err != nil {
		return err
	}
	logging.Annotate(ctx, "batch_id", c.BatchID, "game_date", c.GameDate)
	out, err := t.Record(ctx, c, m.ID)
	if err != nil {
		return err
	}
	t.Log.InfoContext(ctx, "worker completion handled", "player_lookup", clip(c.PlayerLookup),
		"outcome", out.Recorded, "mode", out.Mode.String(), "batch_completed", out.Completed)
	if out.Recorded == RecordedDuplicate {
		return errs.E(errs.Duplicate, "duplicate_worker_completion", nil)
	}
	return nil
}

// Outcomes of Record.
const (
	RecordedNew       = "recorded"
	RecordedDuplicate = "duplicate"
	RecordedLate      = "late" // the batch had completed: nothing written
)

// Outcome says what Record did.
type Outcome struct {
	Recorded  string
	Mode      Mode
	Completed bool   // this call published the batch completion
	Status    string // success | partial, when Completed
}

// cache keeps, per instance, what never changes after a batch is created
// (expected_players, game_date, correlation_id, start_time) and what the
// fast path learns as it goes: whether the batch completed, the offset
// between its counter and the exact count, and the last full shard read.
type cache struct {
	mu  sync.Mutex
	m   map[string]*meta
	max int
}

func newCache(max int) *cache { return &cache{m: map[string]*meta{}, max: max} }

func (c *cache) get(key string) (*meta, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[key]
	if !ok {
		if len(c.m) >= c.max {
			// Finished batches first; an open one only if that is not enough
			// (its next completion reads the batch document again).
			for k, v := range c.m {
				if v.isComplete() {
					delete(c.m, k)
				}
			}
			for k := range c.m {
				if len(c.m) < c.max {
					break
				}
				delete(c.m, k)
			}
		}
		m = &meta{ready: make(chan struct{})}
		c.m[key] = m
	}
	return m, ok
}

// shards returns the shard count of batchID as a cached view knows it.
func (c *cache) shards(batchID string) (int, bool) {
	prefix := docid.Encode(batchID) + "\x00"
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, mode := range []Mode{ModeSubOnly, ModeDualSubReads, ModeDualArrayReads, ModeLegacy} {
		if m, ok := c.m[prefix+mode.String()]; ok {
			select {
			case <-m.ready:
				if m.err == nil {
					return m.n, true
				}
			default:
			}
		}
	}
	return 0, false
}

func (c *cache) drop(key string, m *meta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[key] == m {
		delete(c.m, key)
	}
}

var errNoBatch = errors.New("batch document does not exist")
