// Package batch tracks prediction batches: it records worker completions
// (PredictionCompletions) in prediction_batches/{batch_id}, counts the
// distinct players that completed, and publishes the batch completion
// exactly once when every expected player is in — or, from the sweep, when
// the batch stalled or aged out.
//
// # Why not the running system's design
//
// The running coordinator appends each player to an array on the batch
// document (ArrayUnion), bumps a counter there, and reads the document back.
// Every completion writes the one document, so completions queue behind
// each other (Firestore sustains about one write per second per document;
// the emulator serialises them), the counter moves on redeliveries, and the
// array approaches Firestore's limits on big days. BenchmarkBatchDesigns
// measures it against this package's design and against the floor of one
// bare Create per player.
//
// # Design
//
// One atomic commit per completion, nothing on the batch document. In the
// subcollection modes a completion is a single Commit RPC (the low-level
// apiv1 client, outside any transaction, so nothing is locked) holding two
// writes: Create of completions/{player} with precondition exists=false,
// and an Increment on one of the batch's n counter documents,
// counter_shards/{hash(player) % n}. The completion document is the
// idempotency key of (batch_id, player_lookup): a redelivery or re-publish
// fails the Create with AlreadyExists and the commit applies nothing, so
// the shards always sum to exactly the number of completion documents, and
// only distinct players count. Player ids become document ids through
// docid, so any name works and two names never collide; the document keeps
// the raw value.
//
// The shard count n follows the batch's size and the configured arrival
// rate (batch.arrival_rate, BATCH_ARRIVAL_RATE: completions per second one
// batch receives): enough shards that each takes about 0.3 writes per
// second on average, so the busiest of them stays near Firestore's one per
// second over any 10 s (at 34/s, 114 shards); no more than a batch of that
// size could write ten times each; never fewer than 16, the count every
// earlier revision used, and at most 500. It is fixed the first time
// phasegate sees the batch and stored on the batch document
// (counter_shard_count, a conditional write, so all instances agree);
// every later reader uses the stored count, so changing the rate never
// changes an open batch's layout or its exact count. A batch without the
// field, or one that already has counted completions when first seen, has
// 16. Because n ≥ 16, a completion that an older revision counted on
// shard hash%16 still lands on a shard that is read.
//
// A busy instance group-commits: completions of one shard that arrive while
// that shard's commit is in flight go together in the next one (their
// Creates and one Increment by their number — still all or nothing; a
// group that meets a duplicate falls back to one commit each). A shard then
// takes at most one write at a time per instance, and 10,000 completions
// from 100 senders need about 2,000 commits: on the emulator this design
// records completions faster than one bare Create per player does.
//
// Completion detection reads no document in the common case. The commit's
// transform result is the shard's count after the increment. From the last
// full read of the shards (one BatchGet), a Chernoff bound tells whether the
// batch could possibly be done: had every remaining player completed since
// that read, this shard would almost surely (1 − 1e-6) have grown by more
// than it did. While that holds the read is skipped; near the end every
// completion reads the shards (one BatchGet of the batch's n documents), and the
// read that sees the sum reach expected_players runs the exact check.
// On a 10,000-player batch with 16 shards about 97 % of completions skip
// the read; with more shards fewer do (the bound needs more remaining
// players per shard), which `make loadtest` reports as BatchGetDocuments
// per completion. The
// rare batch whose last completion skipped wrongly, or was lost, is
// completed as success by the sweep's exact check.
//
// expected_players, game_date, correlation_id and start_time never change
// after the coordinator creates a batch, so each instance reads the batch
// document once and caches them, with is_complete once seen, so later
// completions are acknowledged as late without any write.
//
// The exact count is |array ∪ subcollection| taken at one read time: the
// batch document and every shard from one BatchGet (one read time T), and
// array entries looked up in the subcollection as of T. Using the union is
// what keeps every mode, and every change of mode in the middle of a batch,
// exact: legacy writers add to the array, subcollection writers to the
// subcollection, and a player in both counts once. Each instance's fast
// path counts with its mode's counter (the shard sum, or array_writes for
// the modes that count from the array) plus an offset taken from the last
// exact count, which a new distinct player can only raise by one; an exact
// check whose estimate was high simply re-bases the offset.
//
// Completion is decided once, by a write to the batch document conditional
// on its update time: the claim stores the final counts, the snapshot time
// they were taken at (counted_at) and the message itself, and owes, in the
// same commit, the message, a partial completion's alert and its history
// row as records of the effect log (internal/effect), which publishes the
// stored bytes and confirms is_complete. A completion claimed and not
// confirmed is performed again from its record (by the redelivery, a
// duplicate, or the sweep), never decided again. Concurrent attempts of
// one instance share one run. This write, the one that stores the shard
// count, the confirm and in dual-write mode with subcollection reads the
// capped array's merges (at most about one per second) are all the batch
// document takes in the subcollection modes, whatever the arrival rate or
// the number of instances.
//
// # Migration modes (CONTRACT §6)
//
//   - legacy: a Create of the worker completion's idempotency key in
//     pubsub_deduplication and, in the same commit, ArrayUnion on
//     completed_players with Increments of array_writes and
//     total_predictions. The key makes both counters exact (it is written
//     whatever ENABLE_IDEMPOTENCY_KEYS says, and records the player's
//     predictions for the exact count). The batch document is hot, as it is
//     for the running system.
//   - dual writes, array reads: the subcollection commit also carries the
//     ArrayUnion and array_writes Increment (uncapped; one warning alert when
//     it passes the cap).
//   - dual writes, subcollection reads (default): the subcollection commit
//     alone on the request path. The capped legacy array is derived from
//     the completions themselves, so nothing of it lives in an instance's
//     memory: each completion document is stamped by the store
//     (recorded_at), and a merge reads the completions recorded since the
//     array's watermark (recorded_at, then the document id) and adds them
//     in one write that moves the watermark, conditional on the batch
//     document being unchanged and on the last merge (array_merged_at, a
//     server timestamp) being at least a second old by the server's clock.
//     The request that records a completion merges when its instance may
//     take that window (one merge at a time per instance, and it tries at
//     most once a second), without waiting; the batch's completion commit
//     brings the array up to date with every completion it counted; and
//     the sweep brings every open batch's array up to date, so one sweep
//     after any loss of instances the array holds every completed player up
//     to its cap. Merges stay two seconds behind the newest completion: the
//     store's stamp is taken before the commit that makes a completion
//     visible, and concurrent commits become visible out of stamp order, so
//     a watermark at the newest stamp could pass one over. The merge reads
//     the array, so it fills it exactly up to the cap (a usual game day
//     fits, and everyone is listed) and, the first time the cap leaves a
//     player out, owes one warning alert with the write that sets
//     array_full. The same write counts the added players in array_merged,
//     so the exact count knows, without a lookup, that those entries all
//     have completion documents. Nothing counts from the array in this
//     mode.
//   - subcollection only: the subcollection commit alone.
//
// `phasegate batch migrate` copies legacy arrays into the subcollection
// (each copy a Create with its shard increment, so it is idempotent and
// resumable) and repairs shards that disagree with the documents;
// `phasegate batch check` verifies the invariants.
package batch
