// Package effect is how phasegate causes anything outside Firestore: a
// trigger or batch-completion message, a Slack post, a history row. It is
// one durable log, orchestrator_effects, with one record per side effect.
//
// # Why it is shaped this way
//
// A decision — a trigger claimed, a batch completed, an alert raised or
// resolved, a data check blocked or passed — and every side effect it owes
// are written in one atomic Firestore commit: the decider's document, and
// one effect record per side effect, created with an id that is fixed by
// what the effect is for and by the deciding document's incarnation. So a
// decision exists if and only if its effects are owed, whatever crashes
// after the commit; a redelivered event that decides again finds the
// decision already recorded and owes nothing twice; and a deleted and
// re-created gate (a new incarnation) never meets its predecessor's
// records, while an effect its predecessor still owed is still performed.
//
// After the commit the same request performs what it owes, each effect on
// its own budget and concurrently, and waits for all of them before it
// answers: Cloud Run gives an instance no CPU after its answer, so nothing
// here is left to a goroutine. A hanging Slack therefore never delays a
// trigger's publish or its confirm. Whatever is still owed — the instance
// died, the destination was down, the budget ran out — the Sweep performs,
// lane by lane: each destination (a topic, a Slack route, the history
// table) is queried on its own and a lane whose destination fails is left
// for the next sweep after one try, so one broken destination never starves
// the others. The creator of an effect holds it for a lease from its
// creation; anyone else takes it with an update-time precondition, so at
// any moment one performer owns it.
//
// Outages never count against an effect: a destination that is down, an
// open breaker, a budget that ran out only postpone it (by a backoff of its
// own). Only a destination that refuses an effect (Slack answering 4xx for
// 24 h, a row BigQuery rejects as invalid) ends it failed, with one alert
// about it on another route; a trigger or batch message never fails for
// good: it stays owed, raises one "keeps failing to publish" alert, and
// counts in Health until it goes out.
//
// A publish is the one effect the deciding document records as done: its
// "done" commit also writes the owner's confirm (_triggered,
// is_complete…) through the Owner the deciding package registers, in the
// same atomic commit, conditional on the owner being unchanged. Nothing
// else of the engine's bookkeeping (leases, tries, backoffs) ever writes a
// gate or batch document, so effects add no contention to the hot
// documents.
//
// # When a message can be copied
//
// Each try of an effect is recorded before it starts (tries) and its
// outcome after (settled): a performer that takes an effect whose last try
// never settled — its performer died, or its "done" commit failed after
// the destination took it — may repeat it, and so may a retry after a try
// whose outcome was unknown (a timeout or an unavailable answer after the
// request was sent: ambiguous). Those are the only two causes of a copy;
// both are counted (effects.possible_copy, by cause) and logged with the
// effect's key. The Pub/Sub client's own retries are switched off, so a
// copy cannot hide inside the client either.
package effect
