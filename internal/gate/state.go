package gate

import (
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/rules"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Firestore fields of a gate document, phaseN_completion/{game_date}. A
// processor's record lives under its normalised name; metadata starts with
// an underscore (CONTRACT §4).
const (
	fCompletedCount  = "_completed_count"
	fFirstCompletion = "_first_completion_at"
	fTriggered       = "_triggered"
	fTriggeredAt     = "_triggered_at"
	fReason          = "_trigger_reason"
	fMode            = "_mode"
	fState           = "_trigger_state" // claimed | released | published
	fGeneration      = "_trigger_generation"
	fTriggerID       = "_trigger_id"
	fPayload         = "_trigger_payload" // the exact message, so a re-publish is byte-identical
	fPartial         = "_trigger_partial"
	// fClaimExpires is kept on a claim for revisions before the effect
	// log, which re-claim an unconfirmed trigger once it passes: after a
	// rollback they wait for this revision's lease.
	fClaimExpires  = "_claim_expires_at"
	fClaimToken    = "_claim_token" // those revisions' claim, deleted when taken over
	fClaimedBy     = "_claimed_by"
	fMessageIDs    = "_published_message_ids"
	fMissing       = "_missing_processors"
	fLate          = "_late_processors"
	fUnexpected    = "_unexpected"
	fFailed        = "_failed_attempts"
	fOpen          = "_open" // true while a trigger is owed or unconfirmed: what the sweep queries
	fCorrelation   = "_correlation_id"
	fAlertKey      = "_alert_key"
	fAlertResolved = "_alert_resolved"
	// fAlertKeys are the partial alerts raised and not yet resolved: a
	// second partial trigger with another reason (a manual one after a
	// timeout) must not leave the first one's alert open for ever.
	fAlertKeys = "_partial_alert_keys"
	fUpdatedAt = "_updated_at"
	fHistory   = "_sweep_actions"
)

// Trigger states.
const (
	stateClaimed   = "claimed"
	stateReleased  = "released"
	statePublished = "published"
)

// docState is a gate document decoded.
type docState struct {
	exists     bool
	updateTime time.Time
	data       map[string]any

	completed  map[string]bool // expected processors with success/partial
	first      time.Time
	triggered  bool
	state      string
	generation int64
	triggerID  string
	payload    string
	partial    bool
	expires    time.Time
	token      string
	messageIDs []string
	late       []string
	alertKey   string
	openAlerts []string
	resolved   bool
	corrID     string
	reason     string
	mode       string
	missing    []string
	// created is the document's create time, incarnation the life of it
	// its effects belong to (effect.Incarnation).
	created     time.Time
	incarnation string
	legacy      bool // triggered by the running system
}

func decodeState(p *config.Phase, snap *firestore.DocumentSnapshot) *docState {
	if snap == nil || !snap.Exists() {
		return &docState{completed: map[string]bool{}, data: map[string]any{}}
	}
	return decodeData(p, snap.Data(), snap.UpdateTime, snap.CreateTime)
}

func decodeData(p *config.Phase, data map[string]any, updateTime, created time.Time) *docState {
	st := &docState{exists: true, updateTime: updateTime, data: data, completed: map[string]bool{}, created: created}
	st.incarnation = effect.Incarnation(data, created)
	for _, name := range p.Expected {
		if rec, ok := st.data[name].(map[string]any); ok {
			if s, _ := rec["status"].(string); s == "success" || s == "partial" {
				st.completed[name] = true
			}
		}
	}
	st.first = takeover.Time(st.data[fFirstCompletion])
	if st.first.IsZero() {
		// The running system's phase 3 keeps none: its first processor
		// entry's completion is the first completion.
		for name := range st.completed {
			rec, _ := st.data[name].(map[string]any)
			if at := takeover.Time(rec["completed_at"]); !at.IsZero() && (st.first.IsZero() || at.Before(st.first)) {
				st.first = at
			}
		}
	}
	st.triggered, _ = st.data[fTriggered].(bool)
	st.state, _ = st.data[fState].(string)
	st.generation, _ = st.data[fGeneration].(int64)
	st.triggerID, _ = st.data[fTriggerID].(string)
	st.payload, _ = st.data[fPayload].(string)
	st.partial, _ = st.data[fPartial].(bool)
	st.reason = takeover.Reason(st.data)
	st.mode, _ = st.data[fMode].(string)
	st.missing = stringList(st.data[fMissing])
	if takeover.Legacy(st.data) {
		st.legacy = true
		// The running system triggered this date: generation 1 is published,
		// so no rule fires it again and later completions are late.
		st.generation, st.state = 1, statePublished
		partial, _ := st.data["_partial_completion"].(bool) // phase 2's deadline
		st.partial = partial || len(stringList(st.data[fMissing])) > 0
	}
	st.expires, _ = st.data[fClaimExpires].(time.Time)
	st.token, _ = st.data[fClaimToken].(string)
	st.messageIDs = stringList(st.data[fMessageIDs])
	st.late = stringList(st.data[fLate])
	st.alertKey, _ = st.data[fAlertKey].(string)
	st.resolved, _ = st.data[fAlertResolved].(bool)
	st.openAlerts = stringList(st.data[fAlertKeys])
	if _, ok := st.data[fAlertKeys]; !ok && st.alertKey != "" && !st.resolved {
		st.openAlerts = []string{st.alertKey} // written before the list
	}
	st.corrID, _ = st.data[fCorrelation].(string)
	if st.corrID == "" {
		st.corrID = nightCorrelation(p, st.data)
	}
	return st
}

// nightCorrelation is the correlation id of a document without
// _correlation_id (the running system's): its first expected processor's
// entry's, which carries the night's.
func nightCorrelation(p *config.Phase, data map[string]any) string {
	var first time.Time
	corr := ""
	for _, name := range p.Expected {
		rec, _ := data[name].(map[string]any)
		c, _ := rec["correlation_id"].(string)
		at := takeover.Time(rec["completed_at"])
		if c != "" && (corr == "" || (!at.IsZero() && at.Before(first))) {
			corr, first = c, at
		}
	}
	return corr
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

func (st *docState) rulesState() rules.State {
	return rules.State{Completed: st.completed, FirstCompletion: st.first}
}

// owesTrigger reports whether a trigger was claimed and is not confirmed
// yet (released: by a revision before the effect log, after a failed
// publish).
func (st *docState) owesTrigger() bool {
	return st.generation > 0 && (st.state == stateClaimed || st.state == stateReleased)
}

func (st *docState) allComplete(p *config.Phase) bool {
	return len(st.completed) == len(p.Expected)
}

// sub returns the map field f (nil when absent).
func (st *docState) sub(f string) map[string]any {
	m, _ := st.data[f].(map[string]any)
	return m
}

// ledger is a (phase, date)'s generation ledger as read.
type ledger struct {
	exists     bool
	updateTime time.Time
	generation int64
}

func decodeLedger(snap *firestore.DocumentSnapshot) *ledger {
	if snap == nil || !snap.Exists() {
		return &ledger{}
	}
	gen, _ := snap.Data()["generation"].(int64)
	return &ledger{exists: true, updateTime: snap.UpdateTime, generation: gen}
}
