package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore"
	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/opstate"
	"github.com/phasegate/phasegate/internal/takeover"
)

// ErrNotFound reports a batch that does not exist.
var ErrNotFound = errNoBatch

// Status is an operator's view of one batch.
type Status struct {
	BatchID       string    `json:"batch_id"`
	GameDate      string    `json:"game_date"`
	CorrelationID string    `json:"correlation_id"`
	Mode          string    `json:"mode"` // the mode the current flags give this batch
	Expected      int64     `json:"expected_players"`
	Subcollection *int64    `json:"counted_subcollection,omitempty"` // completion documents, when asked to count them
	Shards        int64     `json:"counted_shards"`                  // the counter shards' sum
	Array         int64     `json:"counted_array"`                   // len(completed_players)
	ArrayOnly     int64     `json:"array_only"`                      // array entries without a completion document
	Distinct      int64     `json:"distinct_players"`                // |array ∪ subcollection|: what completion counts
	Predictions   int64     `json:"total_predictions"`
	Complete      bool      `json:"is_complete"`
	State         string    `json:"completion_state,omitempty"`
	Status        string    `json:"completion_status,omitempty"`
	Reason        string    `json:"completion_reason,omitempty"`
	Completed     int64     `json:"completed_count"`
	StartTime     time.Time `json:"start_time"`
	ProgressTime  time.Time `json:"progress_time"` // newest completion; start_time if none
	CompletedAt   time.Time `json:"completion_time,omitzero"`
}

// StatusOptions choose what Status reads beyond its fixed set.
type StatusOptions struct {
	// CountDocuments counts the completion documents with a count
	// aggregation (one RPC, billed a read per 1,000 documents), for an
	// operator comparing them with the shards.
	CountDocuments bool
}

// Status reads one batch — its document, its counter shards and its newest
// completion, whatever its size — or ErrNotFound. The completions
// themselves are Completions' to page through.
func (t *Tracker) Status(ctx context.Context, batchID string, o StatusOptions) (*Status, error) {
	tl, err := t.take(ctx, batchID, true)
	if err != nil {
		return nil, err
	}
	st := tl.st
	shards, _ := tl.shardSum()
	s := &Status{
		BatchID: batchID, GameDate: st.gameDate, CorrelationID: st.corrID,
		Mode: ModeFor(t.Config.Batch, batchID).String(), Expected: st.expected,
		Shards: shards, Array: int64(len(st.array)), ArrayOnly: int64(len(tl.arrayOnly)),
		Distinct: tl.players, Predictions: tl.totalPredictions, Complete: st.complete, State: st.cstate,
		Status: st.status, Reason: st.reason, Completed: st.completedCount, StartTime: st.start,
		ProgressTime: tl.progress, CompletedAt: st.completionTime,
	}
	if s.ProgressTime.IsZero() {
		s.ProgressTime = st.start
	}
	if st.payload != "" {
		s.Predictions = st.totalPredictions // the claim's final count, which the sum above would add again
	}
	if o.CountDocuments {
		n, err := opstate.Count(ctx, t.batchRef(batchID).Collection(CompletionsSub).Query)
		if err != nil {
			return nil, fmt.Errorf("count completions: %w", err)
		}
		s.Subcollection = &n
	}
	return s, nil
}

// Bounds of one page of Completions.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// CompletionPage is one page of a batch's completion documents, in
// document-id order.
type CompletionPage struct {
	BatchID       string           `json:"batch_id"`
	Completions   []CompletionItem `json:"completions"`
	NextPageToken string           `json:"next_page_token,omitempty"` // empty on the last page
}

// CompletionItem is one worker completion as stored.
type CompletionItem struct {
	PlayerLookup     string    `json:"player_lookup"`
	CompletedAt      time.Time `json:"completed_at"`
	PredictionsCount int64     `json:"predictions_count"`
}

// Completions returns up to size completion documents after pageToken (a
// document id from an earlier page's NextPageToken; empty for the first
// page). It reads one document more than it returns, to know whether a
// next page exists.
func (t *Tracker) Completions(ctx context.Context, batchID, pageToken string, size int) (*CompletionPage, error) {
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	if _, err := t.batchRef(batchID).Get(ctx); status.Code(err) == codes.NotFound {
		return nil, errNoBatch
	} else if err != nil {
		return nil, fmt.Errorf("read batch: %w", err)
	}
	q := t.batchRef(batchID).Collection(CompletionsSub).OrderBy(firestore.DocumentID, firestore.Asc)
	if pageToken != "" {
		q = q.StartAfter(pageToken)
	}
	snaps, err := q.Select(FieldPlayer, FieldCompletedAt, FieldPredCount).Limit(size + 1).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("list completions: %w", err)
	}
	page := &CompletionPage{BatchID: batchID, Completions: []CompletionItem{}}
	for i, s := range snaps {
		if i == size {
			page.NextPageToken = snaps[i-1].Ref.ID
			break
		}
		d := s.Data()
		p, _ := d[FieldPlayer].(string)
		at, _ := d[FieldCompletedAt].(time.Time)
		page.Completions = append(page.Completions, CompletionItem{PlayerLookup: p, CompletedAt: at, PredictionsCount: takeover.Int(d[FieldPredCount])})
	}
	return page, nil
}

// CheckOptions selects the batches Check looks at.
type CheckOptions struct {
	BatchID  string        // one batch; empty: every batch
	LookBack time.Duration // only batches started within it; 0: all
}

// Mismatch is one inconsistency.
type Mismatch struct {
	BatchID string `json:"batch_id"`
	Kind    string `json:"kind"`
	Detail  string `json:"detail"`
}

// Mismatch kinds.
const (
	MismatchArrayNotInSub  = "array_not_in_subcollection"
	MismatchArrayOverCap   = "array_over_cap"
	MismatchShards         = "shards_out_of_step"
	MismatchCompletedCount = "completed_count"
)

// CheckReport is what Check found.
type CheckReport struct {
	Checked    int        `json:"checked"`
	Open       int        `json:"open"`
	Completed  int        `json:"completed"`
	Skipped    int        `json:"skipped"` // completed by the running coordinator: no phasegate count to compare
	Mismatches []Mismatch `json:"mismatches"`
}

// Check verifies the invariants the migration relies on. For an open batch
// in a subcollection mode: every array entry has a completion document
// (else `batch migrate` is due), the shards sum to the completion
// documents, and a capped array is within the cap. For a batch phasegate
// completed: completed_count equals the distinct players of the snapshot
// it was counted in — completion documents created by then, plus array
// entries within the array's length then (completions arriving after the
// count are late and do not count).
func (t *Tracker) Check(ctx context.Context, o CheckOptions) (CheckReport, error) {
	rep := CheckReport{Mismatches: []Mismatch{}}
	ids, err := t.batchIDs(ctx, o.BatchID, false, o.LookBack)
	if err != nil {
		return rep, err
	}
	for _, id := range ids {
		tl, err := t.take(ctx, id, false)
		if errors.Is(err, errNoBatch) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("batch %s: %w", id, err)
		}
		st := tl.st
		rep.Checked++
		bad := func(kind, format string, args ...any) {
			rep.Mismatches = append(rep.Mismatches, Mismatch{BatchID: id, Kind: kind, Detail: fmt.Sprintf(format, args...)})
		}
		if st.complete || st.cstate == statePublished {
			rep.Completed++
			if st.cstate != statePublished || st.countedAt.IsZero() {
				rep.Skipped++
				continue
			}
			n, err := t.countAt(ctx, id, st)
			if err != nil {
				return rep, fmt.Errorf("batch %s: %w", id, err)
			}
			if n != st.completedCount {
				bad(MismatchCompletedCount, "completed_count %d, but %d distinct players completed by %s",
					st.completedCount, n, st.countedAt.Format(time.RFC3339Nano))
			}
			continue
		}
		rep.Open++
		mode := ModeFor(t.Config.Batch, id)
		if mode == ModeLegacy {
			continue
		}
		if len(tl.arrayOnly) > 0 {
			bad(MismatchArrayNotInSub, "%d of %d array entries have no completion document (first: %q); run `phasegate batch migrate --batch-id %s`",
				len(tl.arrayOnly), len(st.array), clip(tl.arrayOnly[0]), id)
		}
		docs, err := t.listCompletions(ctx, id, len(tl.shards), tl.countedAt)
		if err != nil {
			return rep, fmt.Errorf("batch %s: %w", id, err)
		}
		if !sameCounts(docs.shards, tl.shards) {
			bad(MismatchShards, "counter shards sum to %d, completion documents number %d (or their shards disagree); run `phasegate batch migrate --batch-id %s`",
				tl.subCount, len(docs.ids), id)
		}
		if (mode == ModeDualSubReads || mode == ModeSubOnly) && len(st.array) > t.Config.Batch.ArrayCap {
			bad(MismatchArrayOverCap, "completed_players has %d entries, cap %d", len(st.array), t.Config.Batch.ArrayCap)
		}
	}
	return rep, nil
}

// countAt recounts a completed batch as of its count's snapshot.
func (t *Tracker) countAt(ctx context.Context, batchID string, st *state) (int64, error) {
	docs, err := t.listCompletions(ctx, batchID, st.shards(), st.countedAt)
	if err != nil {
		return 0, err
	}
	n := int64(len(docs.ids))
	seen := map[string]bool{}
	for i, p := range st.array {
		if int64(i) >= st.countedLen {
			break
		}
		if id := docid.Encode(p); !docs.ids[id] && !seen[id] {
			seen[id] = true
			n++
		}
	}
	return n, nil
}

// completionList is the completion documents of a batch as of an instant.
type completionList struct {
	ids    map[string]bool // document ids
	shards []shard         // what each counter shard should hold
}

// listCompletions lists every completion document created by readTime.
// Documents are never deleted, so those are exactly the ones a read at
// readTime would see.
func (t *Tracker) listCompletions(ctx context.Context, batchID string, n int, readTime time.Time) (*completionList, error) {
	snaps, err := t.batchRef(batchID).Collection(CompletionsSub).Select(FieldPlayer, FieldPredCount).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("list completions: %w", err)
	}
	l := &completionList{ids: make(map[string]bool, len(snaps)), shards: make([]shard, n)}
	for _, s := range snaps {
		if s.CreateTime.After(readTime) {
			continue
		}
		l.ids[s.Ref.ID] = true
		p, _ := s.Data()[FieldPlayer].(string)
		k := ShardOf(p, n)
		l.shards[k].count++
		l.shards[k].predictions += takeover.Int(s.Data()[FieldPredCount])
	}
	return l, nil
}

// batchIDs lists batch ids: one, the open ones, or all started within
// lookBack.
func (t *Tracker) batchIDs(ctx context.Context, one string, openOnly bool, lookBack time.Duration) ([]string, error) {
	if one != "" {
		return []string{one}, nil
	}
	q := t.Firestore.Collection(t.Config.Names().Coll(Collection)).Query
	if openOnly {
		q = q.Where(FieldComplete, "==", false)
	}
	if lookBack > 0 {
		q = q.Where(FieldStartTime, ">=", t.Clock.Now().Add(-lookBack))
	}
	snaps, err := q.Select(FieldBatchID).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	out := make([]string, 0, len(snaps))
	for _, s := range snaps {
		id, _ := s.Data()[FieldBatchID].(string)
		if id == "" || docid.Encode(id) != s.Ref.ID {
			id = s.Ref.ID
		}
		out = append(out, id)
	}
	return out, nil
}

// MigrateOptions selects what Migrate copies.
type MigrateOptions struct {
	BatchID string // one batch; empty: every open batch
	// Progress, when set, is called as players are copied, one call at a
	// time.
	Progress func(done, total int)
}

// MigrateReport counts what Migrate did; a second run reports nothing
// copied and nothing fixed.
type MigrateReport struct {
	Batches     int `json:"batches"`
	Players     int `json:"players"`         // distinct array entries examined
	Copied      int `json:"copied"`          // completion documents created
	Present     int `json:"already_present"` // array entries that had one
	ShardsFixed int `json:"shards_fixed"`    // counter shards corrected
}

// Migrate copies legacy arrays into the completions subcollection and
// brings the counter shards in step with the completion documents. Each
// copy is a Create committed with its shard increment, so a copy that
// already exists changes nothing, and an interrupted run resumes by
// running again. A copied player's predictions and time come from its
// legacy idempotency key when there is one.
func (t *Tracker) Migrate(ctx context.Context, o MigrateOptions) (MigrateReport, error) {
	var rep MigrateReport
	ids, err := t.batchIDs(ctx, o.BatchID, true, 0)
	if err != nil {
		return rep, err
	}
	type job struct {
		id    string
		st    *state
		plist []string
		keys  map[string]keyRec
	}
	var jobs []job
	total := 0
	for _, id := range ids {
		tl, err := t.take(ctx, id, false)
		switch {
		case errors.Is(err, errNoBatch) && o.BatchID == "":
			continue // gone since it was listed
		case err != nil:
			return rep, fmt.Errorf("batch %s: %w", id, err)
		}
		// The copies go to the shards of the batch's layout, fixed now if
		// phasegate has not seen the batch yet.
		if tl, err = t.layOut(ctx, id, tl); err != nil {
			return rep, fmt.Errorf("batch %s: %w", id, err)
		}
		st := tl.st
		var keys map[string]keyRec
		if len(st.array) > 0 {
			if keys, err = t.legacyKeys(ctx, id, tl.countedAt); err != nil {
				return rep, fmt.Errorf("batch %s: %w", id, err)
			}
		}
		plist := distinct(st.array)
		jobs = append(jobs, job{id, st, plist, keys})
		total += len(plist)
	}
	var done, copied, present atomic.Int64
	var progressMu sync.Mutex
	for _, j := range jobs {
		rep.Batches++
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		for _, p := range j.plist {
			g.Go(func() error {
				at, n := j.st.updated, int64(0)
				if at.IsZero() {
					at = j.st.start
				}
				if k, ok := j.keys[p]; ok {
					at, n = k.at, k.predictions
				}
				if at.IsZero() {
					at = t.Clock.Now()
				}
				k := ShardOf(p, j.st.shards())
				_, err := t.commit(gctx,
					create(t.completionRef(j.id, p).Path, map[string]*pb.Value{
						FieldPlayer: pbString(p), FieldCompletedAt: pbTime(at), FieldPredCount: pbInt(n), "migrated": pbBool(true),
					}),
					update(t.shardRef(j.id, k).Path, map[string]*pb.Value{}, nil,
						inc(shardCount, 1), inc(shardPredictions, n), inc(shardArray, 1)))
				switch err := classify(err); {
				case errors.Is(err, errDuplicate):
					present.Add(1)
				case err != nil:
					return fmt.Errorf("batch %s: copy %q: %w", j.id, clip(p), err)
				default:
					copied.Add(1)
				}
				if o.Progress != nil {
					progressMu.Lock()
					o.Progress(int(done.Add(1)), total)
					progressMu.Unlock()
				} else {
					done.Add(1)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			rep.Players, rep.Copied, rep.Present = int(done.Load()), int(copied.Load()), int(present.Load())
			return rep, err
		}
		fixed, err := t.fixShards(ctx, j.id, j.st.shards())
		rep.ShardsFixed += fixed
		if err != nil {
			return rep, fmt.Errorf("batch %s: %w", j.id, err)
		}
	}
	rep.Players, rep.Copied, rep.Present = int(done.Load()), int(copied.Load()), int(present.Load())
	return rep, nil
}

// fixShards makes the counter shards agree with the completion documents.
// The shards are read at one instant and compared with the documents that
// existed then; each shard gets an increment by its difference. Completions
// committed meanwhile move a document and its shard together, so the
// difference stays right however late it lands.
func (t *Tracker) fixShards(ctx context.Context, batchID string, n int) (int, error) {
	refs := make([]*firestore.DocumentRef, n)
	for k := range n {
		refs[k] = t.shardRef(batchID, k)
	}
	snaps, err := t.Firestore.GetAll(ctx, refs)
	if err != nil {
		return 0, fmt.Errorf("read shards: %w", err)
	}
	have := make([]shard, n)
	for k, s := range snaps {
		if !s.ReadTime.Equal(snaps[0].ReadTime) {
			return 0, fmt.Errorf("read shards: read at %v and %v", snaps[0].ReadTime, s.ReadTime)
		}
		if s.Exists() {
			d := s.Data()
			have[k] = shard{count: takeover.Int(d[shardCount]), predictions: takeover.Int(d[shardPredictions])}
		}
	}
	docs, err := t.listCompletions(ctx, batchID, n, snaps[0].ReadTime)
	if err != nil {
		return 0, err
	}
	fixed := 0
	for k := range n {
		dc, dp := docs.shards[k].count-have[k].count, docs.shards[k].predictions-have[k].predictions
		if dc == 0 && dp == 0 {
			continue
		}
		if _, err := t.commit(ctx, update(t.shardRef(batchID, k).Path, map[string]*pb.Value{}, nil,
			inc(shardCount, dc), inc(shardPredictions, dp))); err != nil {
			return fixed, fmt.Errorf("fix shard %d: %w", k, err)
		}
		fixed++
	}
	return fixed, nil
}

func sameCounts(a, b []shard) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if a[k].count != b[k].count || a[k].predictions != b[k].predictions {
			return false
		}
	}
	return true
}
