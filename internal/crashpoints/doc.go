// Package crashpoints proves phasegate's promise — nothing lost, nothing
// doubled, every alert once — by exploration rather than by examples
// (`make crashpoints`, docs/reliability.md). It is a test kit: nothing
// deployed links it.
//
// For each path (a Scenario) it plays the path once and records every
// external call in order: Firestore RPCs, Pub/Sub publishes, Slack posts,
// BigQuery calls. A call is named by its site — method and resource (the
// collections a commit writes, the collection a query reads, the topic, the
// Slack route, the table) — and its occurrence there. Then it replays the
// path once per injection: at each site its first, middle and last call;
// a read gets one fault (it fails), a call that can take effect gets three
// (it fails before taking effect; it takes effect but the caller sees a
// timeout; it takes effect and the process dies). Each replay is driven to
// convergence as production would drive it — Pub/Sub redelivers what was
// not answered 2xx, a dead instance is replaced by a fresh App on the same
// project, Cloud Scheduler runs Sweep, and the fake clock moves past every
// lease and backoff — and then judged.
//
// Why at the RPC boundary: faults injected inside phasegate's functions
// test the places someone thought of; faults at the wire test every place
// a call can fail, including the client libraries' own retries (a Publish
// that timed out after Pub/Sub took it is retried by the client, and that
// is a copy). So Firestore and Pub/Sub calls go through gRPC interceptors
// on each App instance's own connections, Slack and BigQuery through an
// http.RoundTripper; the same boundary kills an instance, after which every
// call it makes fails at once and its answer is a dropped connection.
//
// Why judged from outside: the invariants are what a consumer, an
// operator in Slack and a reader of the history table see — the messages
// on the output topics (one per trigger_id; a copy only where the fault hit
// that publish or the commit recording it), Slack's posts (each alert and
// each "resolved" once; a copy only where the fault hit that post or its
// record), the history rows (one per trigger and batch), the documents'
// contract fields (CONTRACT §4: every completion recorded, exact counts, a
// legacy array complete up to its cap) — compared with the recording run.
// Only owed.go reads phasegate's own bookkeeping: owedOrClaimed, to say
// that nothing is left owed or claimed, and recordsDelivery, to know the
// commit that records a delivery (where a fault may leave a copy). It is
// the one file to change when that bookkeeping changes.
//
// What it cannot show: one fault per run, in one order, with one message in
// flight at a time. Concurrency, contention, reordering, re-publication
// under new message ids, repeated failures (breakers), slow answers and bad
// input stay with internal/faults, internal/batch and internal/edge.
package crashpoints
