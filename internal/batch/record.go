package batch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/takeover"
)

// meta is one instance's view of one batch in one mode.
type meta struct {
	ready chan struct{}
	err   error

	// Set once, before ready closes; they never change for a batch.
	batchID  string
	mode     Mode
	expected int64
	gameDate string
	corrID   string
	n        int // counter shards

	mu sync.Mutex
	// complete: the batch needs nothing more; later completions are late.
	complete bool
	// base is the exact count minus the mode's counter in the last
	// snapshot. New distinct players raise the counter by one each, so
	// counter+base never undercounts while the batch stays in this mode.
	base int64
	// shards and shardsTotal are the counters of the last full shard read,
	// one consistent snapshot: the baseline of the read-skipping test.
	shards      []int64
	shardsTotal int64
	haveShards  bool

	passAlerted bool
	// incarnation is the batch document's (effect.Incarnation).
	incarnation string

	merge  arrayMerge
	queues []shardQueue
}

func (m *meta) isComplete() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.complete
}

func (m *meta) setComplete() {
	m.mu.Lock()
	m.complete = true
	m.mu.Unlock()
}

// need returns the counter value at which the estimate reaches expected.
func (m *meta) need() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.expected - m.base
}

// observe takes in an exact snapshot.
func (m *meta) observe(tl *tally) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.base = tl.players - tl.counter(m.mode)
	vals := make([]int64, m.n)
	var total int64
	for k, s := range tl.shards[:min(len(tl.shards), m.n)] {
		vals[k] = s.count
		total += s.count
	}
	m.setShardsLocked(vals, total)
	if tl.st.done() {
		m.complete = true
	}
}

func (m *meta) setShards(vals []int64) int64 {
	var total int64
	for _, v := range vals {
		total += v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setShardsLocked(vals, total)
	return total
}

func (m *meta) setShardsLocked(vals []int64, total int64) {
	if !m.haveShards || total >= m.shardsTotal {
		m.shards, m.shardsTotal, m.haveShards = vals, total, true
	}
}

// epsilon bounds the chance that skipping the shard read misses the
// completing event of a batch (the sweep still completes it then).
const epsilon = 1e-6

// canSkip decides, from the commit's own transform result alone, that the
// batch is clearly far from done, so that reading every shard is wasted.
//
// Since the last full read (total T, shard k at b), d = v−b completions
// landed on shard k. Were the batch now done, at least R = need−T
// completions would have landed since, each on shard k with probability
// 1/n for n shards (players are hashed). Seeing as few as d of them has
// probability at most exp(−R·KL(d/R ‖ 1/n)) (Chernoff); when that is
// below epsilon the batch is not done and the read is skipped. d ≤ 0 means
// the last read already included this completion: whoever made it judged
// the batch with it.
func (m *meta) canSkip(k int, v int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.haveShards {
		return false
	}
	d := v - m.shards[k]
	if d <= 0 {
		return true
	}
	r := m.expected - m.base - m.shardsTotal
	return r > 0 && lowerTail(r, 1.0/float64(m.n), d) <= epsilon
}

// lowerTail bounds P(X ≤ d) for X ~ Binomial(n, p) from above.
func lowerTail(n int64, p float64, d int64) float64 {
	a := float64(d) / float64(n)
	if a >= p {
		return 1
	}
	kl := (1 - a) * math.Log((1-a)/(1-p))
	if a > 0 {
		kl += a * math.Log(a/p)
	}
	return math.Exp(-float64(n) * kl)
}

// meta returns the instance's view of batchID, reading the batch once per
// instance (concurrent callers wait for the one read). A missing batch is
// transient: the coordinator creates the batch before its workers finish.
func (t *Tracker) meta(ctx context.Context, batchID string, mode Mode) (*meta, error) {
	key := docid.Encode(batchID) + "\x00" + mode.String()
	m, found := t.cache.get(key)
	if found {
		select {
		case <-m.ready:
		case <-ctx.Done():
			return nil, errs.E(errs.Transient, "context", ctx.Err())
		}
		if m.err != nil {
			return nil, m.err
		}
		return m, nil
	}
	tl, err := t.take(ctx, batchID, false)
	if errors.Is(err, errNoBatch) && t.Config.Shadow() {
		if err = t.adopt(ctx, batchID); err == nil {
			tl, err = t.take(ctx, batchID, false)
		}
	}
	if err != nil {
		if errors.Is(err, errNoBatch) {
			err = errs.E(errs.Transient, "batch_not_found", fmt.Errorf("prediction_batches/%s does not exist (yet)", docid.Encode(batchID)))
		} else {
			err = errs.E(errs.Transient, "firestore", fmt.Errorf("read batch: %w", err))
		}
		m.err = err
		close(m.ready)
		t.cache.drop(key, m)
		return nil, err
	}
	st := tl.st
	if st.expected <= 0 {
		// Without expected_players every completion would complete the
		// batch. The coordinator writes it with the batch; until a document
		// has it, completions wait (5xx), as for a batch not created yet.
		err := errs.E(errs.Transient, "batch_without_expected_players",
			fmt.Errorf("prediction_batches/%s has no positive expected_players", docid.Encode(batchID)))
		m.err = err
		close(m.ready)
		t.cache.drop(key, m)
		return nil, err
	}
	if st.shardCount == 0 {
		if tl, err = t.layOut(ctx, batchID, tl); err != nil {
			m.err = err
			close(m.ready)
			t.cache.drop(key, m)
			return nil, err
		}
		st = tl.st
	}
	m.batchID, m.mode, m.expected = batchID, mode, st.expected
	m.gameDate, m.corrID, m.incarnation = st.gameDate, st.corrID, st.incarnation
	m.n = st.shards()
	m.queues = make([]shardQueue, m.n)
	m.observe(tl)
	close(m.ready)
	return m, nil
}

// layOut fixes the shard count of a batch phasegate sees for the first
// time and stores it on the batch document, conditionally on the document
// being unchanged, so every instance and every later revision uses the one
// count whatever its configuration. A batch that already has counted
// completions was laid out by a revision that always used LegacyShards.
// It returns the batch with its count.
func (t *Tracker) layOut(ctx context.Context, batchID string, tl *tally) (*tally, error) {
	for range 5 {
		st := tl.st
		if st.shardCount > 0 {
			return tl, nil
		}
		n := ShardsFor(st.expected, t.Config.Batch.ArrivalRate)
		if c, _ := tl.shardSum(); c > 0 {
			n = LegacyShards
		}
		_, err := t.commit(ctx, update(t.batchRef(batchID).Path, map[string]*pb.Value{FieldShardCount: pbInt(int64(n))}, updatedAt(st.updateTime)))
		switch status.Code(err) {
		case codes.OK:
			t.Metrics.Inc("batch.laid_out")
			t.Log.InfoContext(ctx, "batch laid out", "counter_shards", n, "expected_players", st.expected,
				"arrival_rate", t.Config.Batch.ArrivalRate)
			// The shards beyond those read are empty: only a writer that
			// found the count stored writes them, and none could have.
			st.shardCount = int64(n)
			tl.shards = append(tl.shards, make([]shard, max(0, n-len(tl.shards)))...)
			return tl, nil
		case codes.FailedPrecondition, codes.Aborted:
		default:
			return nil, errs.E(errs.Transient, "firestore", fmt.Errorf("store the shard count: %w", err))
		}
		if tl, err = t.take(ctx, batchID, false); err != nil {
			return nil, errs.E(errs.Transient, "firestore", fmt.Errorf("read batch: %w", err))
		}
	}
	return nil, errs.E(errs.Transient, "contention", fmt.Errorf("prediction_batches/%s changed on every attempt to store its shard count", docid.Encode(batchID)))
}

// Record records one worker completion and completes the batch when it is
// the one that makes it whole.
func (t *Tracker) Record(ctx context.Context, c *Completion, messageID string) (Outcome, error) {
	mode := ModeFor(t.Config.Batch, c.BatchID)
	out := Outcome{Mode: mode}
	m, err := t.meta(ctx, c.BatchID, mode)
	if err != nil {
		return out, err
	}
	logging.Annotate(ctx, "correlation_id", m.corrID)
	if m.isComplete() {
		t.Metrics.Inc("batch.late_completion")
		out.Recorded = RecordedLate
		t.Log.InfoContext(ctx, "completion after the batch completed; not recorded", "player_lookup", clip(c.PlayerLookup))
		return out, nil
	}
	now := t.Clock.Now()
	var counter int64
	var counted bool // counter is the mode's counter after this write
	switch mode {
	case ModeLegacy:
		counter, err = t.writeLegacy(ctx, c, messageID, now)
		counted = err == nil
	default:
		var k int
		var v int64
		k, v, counter, err = t.writeSub(ctx, m, c, now)
		if err == nil {
			counted, err = t.afterSubWrite(ctx, m, c, k, v, now, &counter)
		}
	}
	switch {
	case errors.Is(err, errDuplicate):
		out.Recorded = RecordedDuplicate
		t.Metrics.Inc("batch.duplicate")
		o, err := t.afterDuplicate(ctx, m)
		out.Completed, out.Status = o.Completed, o.Status
		return out, err
	case err != nil:
		return out, err
	}
	out.Recorded = RecordedNew
	t.Metrics.Inc("batch.recorded")
	if mode == ModeDualArrayReads {
		t.alertArrayPass(ctx, m, counter+m.baseValue())
	}
	if counted && counter >= m.need() {
		o, err := t.complete(ctx, m, false)
		out.Completed, out.Status = o.Completed, o.Status
		return out, err
	}
	return out, nil
}

func (m *meta) baseValue() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.base
}

var errDuplicate = errors.New("completion already recorded")

// writeLegacy adds the player to the array in one commit with the
// completion's idempotency key: the key's Create fails for a player
// already recorded, and then nothing else is written, so array_writes and
// total_predictions move exactly once per distinct player. The key is
// written whatever ENABLE_IDEMPOTENCY_KEYS says: in legacy mode it is what
// makes the counters exact. It returns array_writes after the write.
func (t *Tracker) writeLegacy(ctx context.Context, c *Completion, messageID string, now time.Time) (int64, error) {
	keyRef := t.Firestore.Collection(t.Config.Names().Coll(dedup.Collection)).Doc(keyID(c.BatchID, c.PlayerLookup))
	ttl := t.Config.Idempotency.TTL
	res, err := t.commit(ctx,
		create(keyRef.Path, map[string]*pb.Value{
			"message_id": pbString(messageID), "processed_at": pbTime(now), "expires_at": pbTime(now.Add(ttl)),
			"kind": pbString(KeyKind), FieldBatchID: pbString(c.BatchID), FieldPlayer: pbString(c.PlayerLookup),
			FieldPredCount: pbInt(c.PredictionsGenerated),
		}),
		update(t.batchRef(c.BatchID).Path, map[string]*pb.Value{
			FieldUpdatedAt: pbTime(now), FieldLegacyKeyWrites: pbBool(true),
		}, exists(true),
			union(FieldArray, c.PlayerLookup), inc(FieldArrayWrites, 1), inc(FieldTotalPredictions, c.PredictionsGenerated)),
	)
	if err := classify(err); err != nil {
		return 0, err
	}
	n, _ := transformInt(res, 1, 1)
	return n, nil
}

// writeSub records the completion document — in subcollection modes it is
// the idempotency key of (batch_id, player_lookup) itself, written in the
// same commit as the counter — and bumps the player's counter shard. A
// Create that fails means a duplicate and nothing is incremented, so the
// shards always sum to the number of completion documents. In dual-write-
// with-array-reads mode the same commit adds the player to the (uncapped)
// array. It returns the shard, the player's position in it (the shard's
// count just after this player) and the mode's counter after the write.
//
// Completions of one shard that arrive while that shard's commit is in
// flight go together in the next commit: one Create each and a single
// increment of the shard by their number, still all-or-nothing. Each shard
// thus takes one write at a time from an instance however busy it is, and
// a busy instance sends far fewer commits than completions. Should any
// Create in a group find its document (a duplicate), the commit applies
// nothing and every member commits alone instead.
func (t *Tracker) writeSub(ctx context.Context, m *meta, c *Completion, now time.Time) (int, int64, int64, error) {
	k := ShardOf(c.PlayerLookup, m.n)
	q := &m.queues[k]
	q.mu.Lock()
	if q.cond == nil {
		q.cond = sync.NewCond(&q.mu)
	}
	lead := q.next == nil || len(q.next.members) >= maxGroup
	if lead {
		q.next = &subGroup{done: make(chan struct{})}
	}
	g := q.next
	i := len(g.members)
	g.members = append(g.members, groupMember{c: c, at: now})
	if !lead {
		q.mu.Unlock()
		<-g.done // the leader's commit is bounded by commitTimeout
	} else {
		for q.busy {
			q.cond.Wait()
		}
		if q.next == g {
			q.next = nil // later arrivals form the next group
		}
		q.busy = true
		q.mu.Unlock()
		t.commitGroup(ctx, m, k, g)
		q.mu.Lock()
		q.busy = false
		q.cond.Broadcast()
		q.mu.Unlock()
		close(g.done)
	}
	r := g.results[i]
	if r.alone {
		return t.commitGroupOf(ctx, m, k, groupMember{c: c, at: now})
	}
	return k, r.pos, r.counter, r.err
}

// maxGroup bounds a group's commit well below Firestore's 500 writes.
const maxGroup = 200

const commitTimeout = 20 * time.Second

// shardQueue groups one instance's completions of one shard.
type shardQueue struct {
	mu   sync.Mutex
	cond *sync.Cond
	next *subGroup // forming; nil when none
	busy bool      // a group's commit is in flight
}

type groupMember struct {
	c  *Completion
	at time.Time
}

type memberResult struct {
	pos, counter int64
	err          error
	alone        bool // commit alone: the group held a duplicate
}

type subGroup struct {
	members []groupMember
	results []memberResult
	done    chan struct{}
}

// commitGroup commits g's members together and fills g.results.
func (t *Tracker) commitGroup(ctx context.Context, m *meta, k int, g *subGroup) {
	g.results = make([]memberResult, len(g.members))
	// The same player twice in one group: the later copy is a duplicate of
	// the first, and only once the first is stored — a copy answered
	// "duplicate" before that commit is durable would be acknowledged, and
	// lost with it if the commit failed.
	first := map[string]int{}
	var uniq []groupMember
	var idx []int
	for i, mb := range g.members {
		if _, seen := first[mb.c.PlayerLookup]; seen {
			continue
		}
		first[mb.c.PlayerLookup] = i
		uniq = append(uniq, mb)
		idx = append(idx, i)
	}
	defer func() {
		for i, mb := range g.members {
			if j := first[mb.c.PlayerLookup]; j != i {
				g.results[i] = memberResult{err: g.results[j].err, alone: g.results[j].alone}
				if g.results[i].err == nil && !g.results[i].alone {
					g.results[i].err = errDuplicate
				}
			}
		}
	}()
	if len(uniq) == 1 {
		_, pos, counter, err := t.commitGroupOf(ctx, m, k, uniq[0])
		g.results[idx[0]] = memberResult{pos: pos, counter: counter, err: err}
		return
	}
	_, last, counter, err := t.commitGroupOf(ctx, m, k, uniq...)
	t.Metrics.Inc("batch.group_commits")
	for j, i := range idx {
		switch {
		case errors.Is(err, errDuplicate):
			g.results[i].alone = true
		case err != nil:
			g.results[i].err = err
		default:
			g.results[i] = memberResult{pos: last - int64(len(uniq)-1-j), counter: counter}
		}
	}
}

// commitGroupOf commits the given completions of shard k in one commit. It
// returns the shard, its count after the commit and the mode's counter.
func (t *Tracker) commitGroupOf(ctx context.Context, m *meta, k int, ms ...groupMember) (int, int64, int64, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	batchID := m.batchID
	var writes []*pb.Write
	var preds int64
	players := make([]string, 0, len(ms))
	for _, mb := range ms {
		c := mb.c
		writes = append(writes, createCompletion(t.completionRef(batchID, c.PlayerLookup).Path, t.expiring(mb.at, map[string]*pb.Value{
			FieldPlayer: pbString(c.PlayerLookup), FieldCompletedAt: pbTime(mb.at), FieldPredCount: pbInt(c.PredictionsGenerated),
		})))
		preds += c.PredictionsGenerated
		players = append(players, c.PlayerLookup)
	}
	n := int64(len(ms))
	tr := []*pb.DocumentTransform_FieldTransform{inc(shardCount, n), inc(shardPredictions, preds)}
	if m.mode == ModeDualArrayReads {
		tr = append(tr, inc(shardArray, n))
		writes = append(writes, update(t.batchRef(batchID).Path, map[string]*pb.Value{FieldUpdatedAt: pbTime(ms[len(ms)-1].at)},
			exists(true), union(FieldArray, players...), inc(FieldArrayWrites, n)))
	}
	writes = append(writes, update(t.shardRef(batchID, k).Path, t.expiring(ms[0].at, map[string]*pb.Value{}), nil, tr...))
	res, err := t.commit(ctx, writes...)
	if err := classify(err); err != nil {
		return k, 0, 0, err
	}
	v, _ := transformInt(res, len(writes)-1, 0)
	counter := v
	if m.mode == ModeDualArrayReads {
		counter, _ = transformInt(res, len(writes)-2, 1)
	}
	return k, v, counter, nil
}

// afterSubWrite brings the capped array up to date when this instance
// holds the batch's merge window (dual-write-with-subcollection-reads
// mode), then works out the mode's counter for the
// subcollection modes: skipped when clearly far from done, else one read
// of every shard. It reports whether *counter holds the mode's counter.
func (t *Tracker) afterSubWrite(ctx context.Context, m *meta, c *Completion, k int, v int64, now time.Time, counter *int64) (bool, error) {
	if m.mode == ModeDualArrayReads {
		return true, nil
	}
	if m.mode == ModeDualSubReads {
		t.mergeIfDue(ctx, m)
	}
	if m.canSkip(k, v) {
		t.Metrics.Inc("batch.shard_read_skipped")
		return false, nil
	}
	total, err := t.readShards(ctx, m)
	if err != nil {
		// Recorded: the redelivery is a duplicate, which reads again.
		return false, errs.E(errs.Transient, "firestore", err)
	}
	*counter = total
	return true, nil
}

// readShards reads every shard of the batch in one call.
func (t *Tracker) readShards(ctx context.Context, m *meta) (int64, error) {
	refs := make([]*firestore.DocumentRef, m.n)
	for k := range m.n {
		refs[k] = t.shardRef(m.batchID, k)
	}
	snaps, err := t.Firestore.GetAll(ctx, refs)
	if err != nil {
		return 0, fmt.Errorf("read counter shards: %w", err)
	}
	vals := make([]int64, m.n)
	for k, s := range snaps {
		if s.Exists() {
			vals[k] = takeover.Int(s.Data()[shardCount])
		}
	}
	t.Metrics.Inc("batch.shard_reads")
	return m.setShards(vals), nil
}

// afterDuplicate re-judges the batch on a duplicate: it is how the
// redelivery of an event whose publish failed, or whose instance died,
// finishes the completion.
func (t *Tracker) afterDuplicate(ctx context.Context, m *meta) (Outcome, error) {
	if m.isComplete() {
		return Outcome{}, nil
	}
	var counter int64
	switch m.mode {
	case ModeLegacy, ModeDualArrayReads:
		snap, err := t.batchRef(m.batchID).Get(ctx)
		if err != nil {
			return Outcome{}, errs.E(errs.Transient, "firestore", err)
		}
		st := decodeState(snap)
		if st.done() {
			m.setComplete()
			return Outcome{}, nil
		}
		counter = st.arrayWrites
	default:
		var err error
		if counter, err = t.readShards(ctx, m); err != nil {
			return Outcome{}, errs.E(errs.Transient, "firestore", err)
		}
	}
	if counter < m.need() {
		return Outcome{}, nil
	}
	return t.complete(ctx, m, true)
}

// raiseOnce owes a, once per batch incarnation, unless this instance
// already did for m: the effect's create decides across instances (one
// that finds it exists raised nothing), this flag saves the round trip on
// every later completion. An alert that could not be recorded is asked
// for again by the next completion past the cap.
func (t *Tracker) raiseOnce(ctx context.Context, m *meta, raised *bool, a alert.Alert) {
	m.mu.Lock()
	first := !*raised
	*raised = true
	m.mu.Unlock()
	if !first {
		return
	}
	eff := alert.Raise(a, m.incarnation)
	made, err := t.Effects.Decide(ctx, nil, []effect.Effect{eff}, nil)
	switch {
	case err != nil:
		t.Log.WarnContext(ctx, "alert not recorded; the next completion asks again", "alert_key", a.Key, "error", err.Error())
		m.mu.Lock()
		*raised = false
		m.mu.Unlock()
	default:
		t.Effects.Perform(ctx, made)
	}
}

// alertArrayPass warns once when an uncapped array (dual writes counted
// from the array) grows past the cap.
func (t *Tracker) alertArrayPass(ctx context.Context, m *meta, est int64) {
	if est <= int64(t.Config.Batch.ArrayCap) {
		return
	}
	t.raiseOnce(ctx, m, &m.passAlerted, alert.Alert{
		Key: "batch:" + m.batchID + ":array_past_cap", Severity: alert.Warning,
		Title:    fmt.Sprintf("prediction batch %s: completed_players passed %d entries", m.batchID, t.Config.Batch.ArrayCap),
		GameDate: m.gameDate, Reason: "array_past_cap", Completed: int(est), Expected: int(m.expected),
		Detail: "reads still come from the array (USE_SUBCOLLECTION_READS=false); switch reads to the subcollection before it reaches Firestore's limits",
	})
}

// classify maps a commit's failure: a Create that found its document means
// a duplicate; a batch document that vanished or anything else the store
// reports is transient.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.AlreadyExists:
		return errDuplicate
	case codes.NotFound:
		return errs.E(errs.Transient, "batch_not_found", err)
	}
	return errs.E(errs.Transient, "firestore", err)
}
