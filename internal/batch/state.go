package batch

import (
	"context"
	"fmt"
	"io"
	"time"

	"cloud.google.com/go/firestore"
	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/phasegate/phasegate/internal/dedup"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Fields of a batch document. The first group is the running coordinator's
// (CONTRACT §4); the second is phasegate's, additive.
const (
	FieldBatchID          = "batch_id"
	FieldGameDate         = "game_date"
	FieldExpected         = "expected_players"
	FieldComplete         = "is_complete"
	FieldCompletionTime   = "completion_time"
	FieldStartTime        = "start_time"
	FieldUpdatedAt        = "updated_at"
	FieldCorrelationID    = "correlation_id"
	FieldTotalPredictions = "total_predictions"
	FieldStallCompleted   = "stall_completed"
	FieldStallReason      = "stall_reason"
	FieldArray            = "completed_players"
	FieldCompletedCount   = "completed_count"

	// array_writes counts players phasegate added to the array behind a
	// dedupe (legacy and dual-with-array-reads modes): it is those modes'
	// counter, read back from the commit's transform result.
	FieldArrayWrites = "array_writes"
	// array_overflow counts players that took a reserve slot of the capped
	// array (see quota).
	FieldArrayOverflow = "array_overflow"
	// array_merged counts players the capped array's background merge
	// added (dual writes with subcollection reads), all with completion
	// documents; array_merged_at is when the last merge committed, which
	// spaces merges at least mergeEvery apart across every instance.
	FieldArrayMerged   = "array_merged"
	FieldArrayMergedAt = "array_merged_at"
	// array_watermark and array_watermark_id are the last completion (by
	// its server-set recorded_at, then its id) the capped array's merges
	// have considered; array_full says the array reached its cap.
	FieldArrayWatermark   = "array_watermark"
	FieldArrayWatermarkID = "array_watermark_id"
	FieldArrayFull        = "array_full"
	// counter_shard_count is the batch's shard count (see ShardsFor).
	FieldShardCount = "counter_shard_count"
	// legacy_key_writes marks a batch that legacy-mode completions wrote to:
	// their predictions are in idempotency keys, which the exact count reads.
	FieldLegacyKeyWrites = "legacy_key_writes"

	FieldState       = "completion_state" // claimed | released | published
	FieldToken       = "completion_claim_token"
	FieldExpires     = "completion_claim_expires_at"
	FieldClaimedBy   = "completion_claimed_by"
	FieldPayload     = "completion_payload" // the exact message, so a re-publish is byte-identical
	FieldStatus      = "completion_status"  // success | partial
	FieldReason      = "completion_reason"  // all_players | stalled | max_age
	FieldMessageIDs  = "completion_message_ids"
	FieldCountedAt   = "counted_at"        // the snapshot the final count was taken at
	FieldCountedLen  = "counted_array_len" // the array's length in that snapshot
	FieldCompletedBy = "completed_by"      // "phasegate"
)

// Completion document fields.
const (
	FieldPlayer      = "player_lookup"
	FieldCompletedAt = "completed_at"
	FieldPredCount   = "predictions_count"
	// FieldRecordedAt is when the store committed the completion (a
	// server timestamp): the capped array's merges read completions by it.
	FieldRecordedAt = "recorded_at"
)

// Shard document fields.
const (
	shardCount       = "count"
	shardPredictions = "predictions"
	shardArray       = "array_count" // completions also added to the array by a dual write
)

const (
	stateClaimed   = "claimed"
	stateReleased  = "released"
	statePublished = "published"
)

// state is a batch document decoded.
type state struct {
	exists     bool
	updateTime time.Time
	readTime   time.Time

	batchID, gameDate, corrID string
	expected                  int64
	complete                  bool
	start, updated            time.Time
	completionTime            time.Time
	array                     []string
	arrayWrites               int64
	arrayOverflow             int64
	arrayMerged               int64
	arrayMergedAt             time.Time
	arrayWatermark            time.Time
	arrayWatermarkID          string
	arrayFull                 bool
	shardCount                int64
	legacyKeys                bool
	totalPredictions          int64
	completedCount            int64
	stallCompleted            bool
	stallReason               string

	cstate, token, claimedBy string
	payload, status, reason  string
	expires                  time.Time
	msgIDs                   []string
	countedAt                time.Time
	countedLen               int64
	completedBy              string

	// incarnation is the life of the document its effects belong to.
	incarnation string
}

func decodeState(snap *firestore.DocumentSnapshot) *state {
	if snap == nil || !snap.Exists() {
		return &state{}
	}
	return decodeData(snap.Data(), snap.UpdateTime, snap.ReadTime, snap.CreateTime)
}

func decodeData(d map[string]any, updateTime, readTime, created time.Time) *state {
	st := &state{exists: true, updateTime: updateTime, readTime: readTime, incarnation: effect.Incarnation(d, created)}
	st.batchID, _ = d[FieldBatchID].(string)
	st.gameDate, _ = d[FieldGameDate].(string)
	st.corrID, _ = d[FieldCorrelationID].(string)
	st.expected = takeover.Int(d[FieldExpected])
	st.complete, _ = d[FieldComplete].(bool)
	st.start, _ = d[FieldStartTime].(time.Time)
	st.updated, _ = d[FieldUpdatedAt].(time.Time)
	st.completionTime, _ = d[FieldCompletionTime].(time.Time)
	st.array = stringList(d[FieldArray])
	st.arrayWrites = takeover.Int(d[FieldArrayWrites])
	st.arrayOverflow = takeover.Int(d[FieldArrayOverflow])
	st.arrayMerged = takeover.Int(d[FieldArrayMerged])
	st.arrayMergedAt, _ = d[FieldArrayMergedAt].(time.Time)
	st.arrayWatermark, _ = d[FieldArrayWatermark].(time.Time)
	st.arrayWatermarkID, _ = d[FieldArrayWatermarkID].(string)
	st.arrayFull, _ = d[FieldArrayFull].(bool)
	st.shardCount = takeover.Int(d[FieldShardCount])
	st.legacyKeys, _ = d[FieldLegacyKeyWrites].(bool)
	st.totalPredictions = takeover.Int(d[FieldTotalPredictions])
	st.completedCount = takeover.Int(d[FieldCompletedCount])
	st.stallCompleted, _ = d[FieldStallCompleted].(bool)
	st.stallReason, _ = d[FieldStallReason].(string)
	st.cstate, _ = d[FieldState].(string)
	st.token, _ = d[FieldToken].(string)
	st.claimedBy, _ = d[FieldClaimedBy].(string)
	st.payload, _ = d[FieldPayload].(string)
	st.status, _ = d[FieldStatus].(string)
	st.reason, _ = d[FieldReason].(string)
	st.expires, _ = d[FieldExpires].(time.Time)
	st.msgIDs = stringList(d[FieldMessageIDs])
	st.countedAt, _ = d[FieldCountedAt].(time.Time)
	st.countedLen = takeover.Int(d[FieldCountedLen])
	st.completedBy, _ = d[FieldCompletedBy].(string)
	return st
}

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// shards is the batch's counter shard count: the stored one, or the count
// every revision used before it was stored.
func (st *state) shards() int {
	if st.shardCount > 0 && st.shardCount <= MaxShards {
		return int(st.shardCount)
	}
	return LegacyShards
}

// owed reports whether a completion was claimed and is not confirmed yet
// (released: by a revision before the effect log, after a failed publish).
func (st *state) owed() bool {
	return st.payload != "" && (st.cstate == stateClaimed || st.cstate == stateReleased)
}

// done reports whether the batch needs nothing more from phasegate.
func (st *state) done() bool {
	return st.cstate == statePublished || (st.complete && st.cstate == "")
}

type shard struct{ count, predictions, array int64 }

// tally is one consistent snapshot of a batch: its document, its shards and
// the exact count over distinct players.
type tally struct {
	batchID string
	st      *state
	shards  []shard // the batch's st.shards() counter shards

	subCount       int64    // completion documents
	subPredictions int64    // their predictions_count, summed
	arrayOnly      []string // array entries with no completion document
	keyPredictions int64    // predictions in legacy idempotency keys of arrayOnly players
	keyTotal       int64    // predictions in every legacy idempotency key of the batch

	players          int64 // distinct players: |array ∪ subcollection|
	totalPredictions int64
	progress         time.Time // newest completion
	countedAt        time.Time // the snapshot's read time
}

func (tl *tally) shardSum() (count, array int64) {
	for _, s := range tl.shards {
		count += s.count
		array += s.array
	}
	return count, array
}

// dualArray is how many array entries phasegate's dual writes made, every
// one with a completion document: those the shards' array_count took, and
// those the background merge added.
func (tl *tally) dualArray() int64 {
	_, a := tl.shardSum()
	return a + tl.st.arrayMerged
}

// counter returns the value the mode's fast path counts with.
func (tl *tally) counter(m Mode) int64 {
	if m == ModeLegacy || m == ModeDualArrayReads {
		return tl.st.arrayWrites
	}
	c, _ := tl.shardSum()
	return c
}

// take reads a batch as of one instant and counts distinct players
// exactly: completion documents, plus array entries that have none (the
// legacy array, which older writers and legacy mode fill). Two distinct
// values never share a document id, so membership is a document lookup.
//
// The batch document and every counter shard come from one BatchGet, which
// reads them all at one read time T; the shards sum to the completion
// documents at T because every writer creates a completion document and
// increments its shard in the same commit (Check verifies it, Migrate
// repairs it). Array membership is looked up at T too. Nothing here runs
// in a transaction: read-only transactions take locks in the emulator and
// would stall the very writers being counted.
//
// Predictions are summed the same way: the shards' sums, plus for
// array-only players those their legacy idempotency keys recorded, plus
// whatever the batch's total_predictions holds beyond every legacy key (the
// running coordinator's own sum, which has no per-player record).
//
// withProgress also finds the newest completion, which only the sweep's
// stall rule needs.
func (t *Tracker) take(ctx context.Context, batchID string, withProgress bool) (*tally, error) {
	ref := t.batchRef(batchID)
	tl := &tally{batchID: batchID}
	// The shard count is on the batch document, which this very read
	// returns: read as many shards as this instance knows the batch has,
	// and once more should the document say otherwise. An instance that
	// has not seen the batch reads the document alone first.
	n, known := t.cache.shards(batchID)
	if !known {
		snap, err := ref.Get(ctx)
		if snap == nil || !snap.Exists() {
			if err != nil && status.Code(err) != codes.NotFound {
				return nil, fmt.Errorf("read batch: %w", err)
			}
			return nil, errNoBatch
		}
		n = decodeState(snap).shards()
	}
	for try := 0; ; try++ {
		refs := make([]*firestore.DocumentRef, 0, n+1)
		refs = append(refs, ref)
		for k := range n {
			refs = append(refs, t.shardRef(batchID, k))
		}
		snaps, err := t.Firestore.GetAll(ctx, refs)
		if err != nil {
			return nil, fmt.Errorf("read batch: %w", err)
		}
		tl.st = decodeState(snaps[0])
		if !tl.st.exists {
			return nil, errNoBatch
		}
		if want := tl.st.shards(); want != n && try == 0 {
			n = want
			continue
		}
		tl.countedAt = snaps[0].ReadTime
		tl.shards = make([]shard, n)
		for k, s := range snaps[1:] {
			if !s.ReadTime.Equal(tl.countedAt) {
				return nil, fmt.Errorf("read batch: documents read at %v and %v", tl.countedAt, s.ReadTime)
			}
			if s.Exists() {
				d := s.Data()
				tl.shards[k] = shard{takeover.Int(d[shardCount]), takeover.Int(d[shardPredictions]), takeover.Int(d[shardArray])}
			}
		}
		break
	}
	var sumPredictions int64
	for _, s := range tl.shards {
		tl.subCount += s.count
		sumPredictions += s.predictions
	}
	// Every array entry a dual write made has a completion document; when
	// the array holds exactly those, no lookup is needed, and without any
	// completion document every entry is array-only.
	arrayDual := tl.dualArray()
	var err error
	switch {
	case len(tl.st.array) == 0 || int64(len(tl.st.array)) == arrayDual:
	case tl.subCount == 0:
		tl.arrayOnly = distinct(tl.st.array)
	default:
		if tl.arrayOnly, err = t.missing(ctx, batchID, tl.st.array, tl.countedAt); err != nil {
			return nil, err
		}
	}
	needKeyTime := false
	if len(tl.arrayOnly) > 0 || tl.st.legacyKeys {
		keys, err := t.legacyKeys(ctx, batchID, tl.countedAt)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			tl.keyTotal += k.predictions
		}
		for _, p := range tl.arrayOnly {
			k, ok := keys[p]
			if !ok {
				needKeyTime = true // written by the running coordinator
				continue
			}
			tl.keyPredictions += k.predictions
			if k.at.After(tl.progress) {
				tl.progress = k.at
			}
		}
	}
	if withProgress {
		newest, err := ref.Collection(CompletionsSub).OrderBy(FieldCompletedAt, firestore.Desc).Limit(1).Documents(ctx).GetAll()
		if err != nil {
			return nil, fmt.Errorf("newest completion: %w", err)
		}
		if len(newest) == 1 {
			if at, _ := newest[0].Data()[FieldCompletedAt].(time.Time); at.After(tl.progress) {
				tl.progress = at
			}
		}
		if needKeyTime && tl.st.updated.After(tl.progress) {
			tl.progress = tl.st.updated
		}
	}
	tl.players = tl.subCount + int64(len(tl.arrayOnly))
	tl.subPredictions = sumPredictions
	tl.totalPredictions = sumPredictions + tl.keyPredictions + max(0, tl.st.totalPredictions-tl.keyTotal)
	return tl, nil
}

func distinct(list []string) []string {
	seen := make(map[string]bool, len(list))
	out := make([]string, 0, len(list))
	for _, p := range list {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// missing returns the distinct players that had no completion document at
// readTime.
func (t *Tracker) missing(ctx context.Context, batchID string, players []string, readTime time.Time) ([]string, error) {
	ps := distinct(players)
	byName := make(map[string]string, len(ps))
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = t.completionRef(batchID, p).Path
		byName[names[i]] = p
	}
	db := t.database()
	ctx = metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", db)
	var out []string
	for i := 0; i < len(names); i += 500 {
		stream, err := t.raw.BatchGetDocuments(ctx, &pb.BatchGetDocumentsRequest{
			Database: db, Documents: names[i:min(i+500, len(names))],
			ConsistencySelector: &pb.BatchGetDocumentsRequest_ReadTime{ReadTime: timestamppb.New(readTime)},
			Mask:                &pb.DocumentMask{FieldPaths: []string{FieldPlayer}},
		})
		if err != nil {
			return nil, fmt.Errorf("look up array entries: %w", err)
		}
		for {
			res, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("look up array entries: %w", err)
			}
			if name := res.GetMissing(); name != "" {
				out = append(out, byName[name])
			}
		}
	}
	return out, nil
}

type keyRec struct {
	predictions int64
	at          time.Time
}

// legacyKeys returns the batch's legacy-mode idempotency keys by player,
// as of readTime (a key is created in the same commit as its array entry).
func (t *Tracker) legacyKeys(ctx context.Context, batchID string, readTime time.Time) (map[string]keyRec, error) {
	snaps, err := t.Firestore.Collection(t.Config.Names().Coll(dedup.Collection)).Where(FieldBatchID, "==", batchID).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("read legacy keys: %w", err)
	}
	out := make(map[string]keyRec, len(snaps))
	for _, s := range snaps {
		d := s.Data()
		if kind, _ := d["kind"].(string); kind != KeyKind || s.CreateTime.After(readTime) {
			continue
		}
		p, _ := d[FieldPlayer].(string)
		at, _ := d["processed_at"].(time.Time)
		out[p] = keyRec{predictions: takeover.Int(d[FieldPredCount]), at: at}
	}
	return out, nil
}

// keyID is the idempotency key of a worker completion: (batch_id,
// player_lookup), whatever message carried it.
func keyID(batchID, player string) string { return dedup.ID(KeyKind, batchID, player) }
