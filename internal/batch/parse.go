package batch

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// Completion is a worker completion (CONTRACT §3).
type Completion struct {
	PlayerLookup         string `json:"player_lookup"`
	GameDate             string `json:"game_date"`
	PredictionsGenerated int64  `json:"-"`
	BatchID              string `json:"batch_id"`
	Timestamp            string `json:"timestamp"`
	WorkerInstance       string `json:"worker_instance"`
}

// Bounds on identifiers. A player_lookup is stored raw in a string field
// and in the legacy array; 4 KiB is far beyond any name and keeps index
// entries inside Firestore's limits. Batch ids become document ids.
const (
	MaxPlayerBytes  = 4096
	MaxBatchIDBytes = 1024
)

// ParseCompletion decodes and validates a worker completion. Every error is
// errs.Invalid: redelivering the same bytes cannot help.
func ParseCompletion(data []byte) (*Completion, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errs.Invalidf("empty_message", "message data is empty")
	}
	if trimmed[0] != '{' {
		return nil, errs.Invalidf("not_json_object", "message data is not a JSON object")
	}
	var raw struct {
		Completion
		Predictions json.RawMessage `json:"predictions_generated"`
	}
	if err := json.Unmarshal(trimmed, &raw); err != nil {
		return nil, errs.Invalidf("invalid_json", "message data: %v", err)
	}
	c := raw.Completion
	switch {
	case c.PlayerLookup == "":
		return nil, errs.Invalidf("missing_player_lookup", "player_lookup is required")
	case len(c.PlayerLookup) > MaxPlayerBytes:
		return nil, errs.Invalidf("player_lookup_too_long", "player_lookup is %d bytes, at most %d", len(c.PlayerLookup), MaxPlayerBytes)
	case !utf8.ValidString(c.PlayerLookup):
		return nil, errs.Invalidf("invalid_player_lookup", "player_lookup is not valid UTF-8")
	case c.BatchID == "" || strings.TrimSpace(c.BatchID) == "":
		return nil, errs.Invalidf("missing_batch_id", "batch_id is required")
	case len(c.BatchID) > MaxBatchIDBytes:
		return nil, errs.Invalidf("batch_id_too_long", "batch_id is %d bytes, at most %d", len(c.BatchID), MaxBatchIDBytes)
	case c.GameDate == "":
		return nil, errs.Invalidf("missing_game_date", "game_date is required")
	}
	if _, err := gamedate.Parse(c.GameDate); err != nil {
		return nil, errs.E(errs.Invalid, "invalid_game_date", err)
	}
	if n := bytes.TrimSpace(raw.Predictions); len(n) > 0 && string(n) != "null" {
		var f float64
		if err := json.Unmarshal(n, &f); err != nil || f < 0 || f != math.Trunc(f) || f > 1e12 {
			return nil, errs.Invalidf("invalid_predictions_generated", "predictions_generated %s: want a non-negative integer", clip(string(n)))
		}
		c.PredictionsGenerated = int64(f)
	}
	return &c, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
