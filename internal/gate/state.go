package gate

import (
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/config"
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
	fClaimExpires    = "_claim_expires_at"
	fClaimToken      = "_claim_token"
	fClaimedBy       = "_claimed_by"
	fMessageIDs      = "_published_message_ids"
	fMissing         = "_missing_processors"
	fLate            = "_late_processors"
	fUnexpected      = "_unexpected"
	fFailed          = "_failed_attempts"
	fOpen            = "_open" // true while a trigger is owed or unconfirmed: what the sweep queries
	fCorrelation     = "_correlation_id"
	fAlertKey        = "_alert_key"
	fAlertResolved   = "_alert_resolved"
	fUpdatedAt       = "_updated_at"
	fHistory         = "_sweep_actions"
	// fPublishFailures counts failed publishes of the current generation.
	fPublishFailures = "_publish_failures"
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
	resolved   bool
	corrID     string

	publishFailures int64
}

func decodeState(p *config.Phase, snap *firestore.DocumentSnapshot) *docState {
	if snap == nil || !snap.Exists() {
		return &docState{completed: map[string]bool{}, data: map[string]any{}}
	}
	return decodeData(p, snap.Data(), snap.UpdateTime)
}

func decodeData(p *config.Phase, data map[string]any, updateTime time.Time) *docState {
	st := &docState{exists: true, updateTime: updateTime, data: data, completed: map[string]bool{}}
	for _, name := range p.Expected {
		if rec, ok := st.data[name].(map[string]any); ok {
			if s, _ := rec["status"].(string); s == "success" || s == "partial" {
				st.completed[name] = true
			}
		}
	}
	st.first = takeover.Time(st.data[fFirstCompletion])
	st.triggered, _ = st.data[fTriggered].(bool)
	st.state, _ = st.data[fState].(string)
	st.generation, _ = st.data[fGeneration].(int64)
	st.triggerID, _ = st.data[fTriggerID].(string)
	st.payload, _ = st.data[fPayload].(string)
	st.partial, _ = st.data[fPartial].(bool)
	if takeover.Legacy(st.data) {
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
	st.corrID, _ = st.data[fCorrelation].(string)
	st.publishFailures, _ = st.data[fPublishFailures].(int64)
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

func (st *docState) rulesState() rules.State {
	return rules.State{Completed: st.completed, FirstCompletion: st.first}
}

// liveClaim reports whether another attempt holds the trigger right now.
func (st *docState) liveClaim(now time.Time) bool {
	return st.state == stateClaimed && now.Before(st.expires)
}

// resumable reports whether a trigger was claimed but not confirmed and may
// be taken over: its publish failed (released) or its claimant vanished.
func (st *docState) resumable(now time.Time) bool {
	return st.generation > 0 && (st.state == stateReleased || (st.state == stateClaimed && !now.Before(st.expires)))
}

func (st *docState) allComplete(p *config.Phase) bool {
	return len(st.completed) == len(p.Expected)
}

// sub returns the map field f (nil when absent).
func (st *docState) sub(f string) map[string]any {
	m, _ := st.data[f].(map[string]any)
	return m
}
