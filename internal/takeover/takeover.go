// Package takeover reads gate documents the running Python orchestrators
// wrote as phasegate's own (CONTRACT §9). Those documents differ from
// phasegate's in three ways that matter: a trigger is a bare `_triggered:
// true` with no generation, phase 4 writes `_first_completion_at` as an
// ISO-8601 string, and phase 2's deadline writes `_triggered_reason`.
// Everything that reads a gate document — the gate, the sweep, Status,
// compare — reads these fields through here, so they agree.
package takeover

import (
	"strings"
	"time"
)

// Fields of a gate document this package interprets.
const (
	FieldTriggered       = "_triggered"
	FieldGeneration      = "_trigger_generation"
	FieldState           = "_trigger_state"
	FieldTriggerID       = "_trigger_id"
	FieldReason          = "_trigger_reason"
	FieldLegacyReason    = "_triggered_reason" // phase 2's deadline spelling
	FieldFirstCompletion = "_first_completion_at"
	FieldTriggeredAt     = "_triggered_at"
)

// Legacy reports whether data is a gate document the running system
// triggered: `_triggered: true` and none of phasegate's trigger fields.
// Such a document counts as generation 1 published.
func Legacy(data map[string]any) bool {
	if t, _ := data[FieldTriggered].(bool); !t {
		return false
	}
	for _, f := range []string{FieldGeneration, FieldState, FieldTriggerID} {
		if _, ok := data[f]; ok {
			return false
		}
	}
	return true
}

// Reason is the trigger reason under either spelling; phasegate's wins.
func Reason(data map[string]any) string {
	if r, _ := data[FieldReason].(string); r != "" {
		return r
	}
	r, _ := data[FieldLegacyReason].(string)
	return r
}

// Time reads a timestamp field written either as a Firestore timestamp or
// as an ISO-8601 string (Python's isoformat, with or without fractional
// seconds; without an offset it is UTC). The zero time means absent or
// unreadable.
func Time(v any) time.Time {
	switch t := v.(type) {
	case time.Time:
		return t.UTC()
	case string:
		return parseISO(t)
	}
	return time.Time{}
}

var layouts = []string{
	time.RFC3339Nano,                // 2026-01-20T06:12:03.123456+00:00, …Z
	"2006-01-02T15:04:05.999999999", // naive: UTC
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
}

func parseISO(s string) time.Time {
	s = strings.TrimSpace(s)
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// Triggered reports whether anyone published a trigger for the document.
func Triggered(data map[string]any) bool {
	t, _ := data[FieldTriggered].(bool)
	return t
}

// Int reads a count however it was written: the running coordinator's
// Python client writes integers, a JSON import may have left floats.
func Int(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	case int:
		return int64(n)
	}
	return 0
}
