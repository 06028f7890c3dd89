package effect

import (
	"fmt"
	"strconv"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/takeover"
)

// Collection holds one document per effect.
const Collection = "orchestrator_effects"

// Kind is what an effect does.
type Kind string

const (
	Publish Kind = "publish" // a Pub/Sub message: a trigger, a batch completion
	Slack   Kind = "slack"   // a Slack post: an alert raised or resolved
	Row     Kind = "row"     // a row of the BigQuery history table
)

// State is where an effect stands.
type State string

const (
	Owed      State = "owed"      // not performed yet
	Done      State = "done"      // performed (or superseded), recorded once
	Failed    State = "failed"    // its destination refused it for good
	Dismissed State = "dismissed" // an operator gave it up
	// Shadow: recorded by a shadow phasegate, never performed, never owed.
	Shadow State = "shadow"
)

// Effect is one side effect a decision owes.
type Effect struct {
	Kind Kind
	// Key says what the effect is for, unique within an incarnation:
	// "trigger:phase3_to_phase4:2026-01-19:1", "alert:<alert key>".
	Key string
	// Incarnation is the deciding document's (see Incarnation).
	Incarnation string
	// Destination is the lane it is performed in: a topic, a Slack route
	// (error, warning, info), the history table.
	Destination string
	Data        []byte            // the message body, the alert, the row
	Attributes  map[string]string // a publish's message attributes
	// After names an effect that must be done before this one (a
	// "resolved" after its alert); when that one failed or was dismissed,
	// this one is skipped.
	After string
	// Owner is the path of the document that confirms a publish
	// (phase3_completion/2026-01-19), "" for none.
	Owner string
	// GameDate and Subject (a phase or batch id) label its log lines and
	// `phasegate effects list`.
	GameDate, Subject string
}

// ID is the document id of e: fixed by its key and incarnation, so that
// recording the same decision twice is one record.
func (e Effect) ID() string { return ID(e.Key, e.Incarnation) }

// ID is the document id of the effect key of incarnation inc.
func ID(key, inc string) string { return docid.Encode(key + "@" + inc) }

// Incarnation names one life of a deciding document: the token its create
// wrote (FieldIncarnation), or for a document phasegate did not create (the
// running system's, an earlier revision's) its create time. A document
// deleted and created again has another, so its effects never meet the old
// ones.
func Incarnation(data map[string]any, created time.Time) string {
	if s, _ := data[FieldIncarnation].(string); s != "" {
		return s
	}
	return "ct" + strconv.FormatInt(created.UnixNano(), 36)
}

// FieldIncarnation is the token a deciding document's create writes.
const FieldIncarnation = "_incarnation"

// Fields of an effect document.
const (
	fKind        = "kind"
	fKey         = "key"
	fInc         = "incarnation"
	fDest        = "destination"
	fData        = "data"
	fAttrs       = "attributes"
	fAfter       = "after"
	fOwner       = "owner"
	fGameDate    = "game_date"
	fSubject     = "subject"
	fState       = "state"
	fCreated     = "created_at"
	fDue         = "due_at" // set while owed: when a performer may next take it
	fTries       = "tries"  // tries started, the creator's included
	fSettled     = "settled"
	fFailures    = "failures" // consecutive tries that did not perform it
	fAmbiguous   = "ambiguous"
	fRefused     = "refused_since"
	fLastError   = "last_error"
	fLastTry     = "last_try_at"
	fAlerted     = "alerted" // a publish's "keeps failing" alert was raised
	fDoneAt      = "done_at"
	fRef         = "ref" // what the destination answered: a message id
	fPerformedBy = "performed_by"
)

// Record is an effect document as read.
type Record struct {
	ID string
	Effect
	State        State
	CreatedAt    time.Time
	DueAt        time.Time // zero: not due (done, failed, a shadow record)
	Tries        int64
	Settled      int64
	Failures     int64
	Ambiguous    int64
	RefusedSince time.Time
	LastError    string
	LastTry      time.Time
	Alerted      bool
	DoneAt       time.Time
	Ref          string

	updateTime  time.Time
	settleToken string // the token of the commit that recorded the last outcome
	// copyCause is set when the try before this one never settled or was
	// ambiguous: this try may repeat what it did.
	copyCause string
}

func decode(snap *firestore.DocumentSnapshot) (*Record, error) {
	if !snap.Exists() {
		return nil, fmt.Errorf("effect %s: %w", snap.Ref.ID, errNotFound)
	}
	d := snap.Data()
	str := func(f string) string { s, _ := d[f].(string); return s }
	tm := func(f string) time.Time { t, _ := d[f].(time.Time); return t }
	r := &Record{ID: snap.Ref.ID, updateTime: snap.UpdateTime}
	r.Kind, r.Key, r.Incarnation, r.Destination = Kind(str(fKind)), str(fKey), str(fInc), str(fDest)
	r.Data, _ = d[fData].([]byte)
	if m, ok := d[fAttrs].(map[string]any); ok {
		r.Attributes = make(map[string]string, len(m))
		for k, v := range m {
			r.Attributes[k], _ = v.(string)
		}
	}
	r.After, r.Owner, r.GameDate, r.Subject = str(fAfter), str(fOwner), str(fGameDate), str(fSubject)
	r.State, r.CreatedAt, r.DueAt = State(str(fState)), tm(fCreated), tm(fDue)
	r.Tries, r.Settled, r.Failures = takeover.Int(d[fTries]), takeover.Int(d[fSettled]), takeover.Int(d[fFailures])
	r.Ambiguous = takeover.Int(d[fAmbiguous])
	r.RefusedSince, r.LastError, r.LastTry = tm(fRefused), str(fLastError), tm(fLastTry)
	r.Alerted, _ = d[fAlerted].(bool)
	r.DoneAt, r.Ref, r.settleToken = tm(fDoneAt), str(fRef), str(fSettle)
	if r.Key == "" || r.Kind == "" {
		return nil, fmt.Errorf("effect %s: no kind or key", snap.Ref.ID)
	}
	return r, nil
}

// doc is the document that records e as owed (or, in shadow mode, as
// recorded) at now, held by its creator until due.
func doc(e Effect, state State, now, due time.Time) map[string]any {
	m := map[string]any{
		fKind: string(e.Kind), fKey: e.Key, fInc: e.Incarnation, fDest: e.Destination, fData: e.Data,
		fState: string(state), fCreated: now, fTries: int64(1), fSettled: int64(0), fFailures: int64(0),
		fAmbiguous: int64(0), fLastTry: now,
	}
	if !due.IsZero() {
		m[fDue] = due
	}
	if len(e.Attributes) > 0 {
		m[fAttrs] = e.Attributes
	}
	for f, v := range map[string]string{fAfter: e.After, fOwner: e.Owner, fGameDate: e.GameDate, fSubject: e.Subject} {
		if v != "" {
			m[f] = v
		}
	}
	return m
}
