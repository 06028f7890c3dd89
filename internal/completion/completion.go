// Package completion parses the completion message every processor publishes
// (CONTRACT §2) and maps its processor name onto the configured names.
package completion

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/errs"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// Message is a processor's completion.
type Message struct {
	ProcessorName  string         `json:"processor_name"`
	Phase          string         `json:"phase"`
	ExecutionID    string         `json:"execution_id"`
	CorrelationID  string         `json:"correlation_id"`
	GameDate       string         `json:"game_date"`
	OutputTable    string         `json:"output_table"`
	OutputDataset  string         `json:"output_dataset"`
	Status         string         `json:"status"`
	RecordCount    Count          `json:"record_count"`
	Timestamp      string         `json:"timestamp"`
	Metadata       map[string]any `json:"metadata"`
	IsIncremental  bool           `json:"-"`
	EntitiesChange []string       `json:"-"`
}

// Count is an informational integer that a processor may write as 100,
// 100.0 or "100" (Python's json.dumps writes floats with a point). What is
// not a number is ignored: a completion is never lost over a count.
type Count struct {
	N     int64
	Valid bool
}

// UnmarshalJSON accepts a JSON number or numeric string and never fails.
func (c *Count) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) &&
		f >= math.MinInt64 && f <= math.MaxInt64 {
		*c = Count{N: int64(f), Valid: true}
	}
	return nil
}

// Statuses that count as completed, and those recorded as failed attempts.
const (
	StatusSuccess = "success"
	StatusPartial = "partial"
	StatusFailed  = "failed"
	StatusNoData  = "no_data"
)

// Completed reports whether the status counts towards completion.
func (m *Message) Completed() bool { return m.Status == StatusSuccess || m.Status == StatusPartial }

// MaxNameBytes bounds a processor name before normalisation.
const MaxNameBytes = 256

// Parse decodes and validates data. Every error is errs.Invalid with a short
// reason: the message can never succeed, however often it is redelivered.
func Parse(data []byte) (*Message, gamedate.Date, error) {
	var m Message
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, gamedate.Date{}, errs.Invalidf("empty_message", "message data is empty")
	}
	if trimmed[0] != '{' {
		return nil, gamedate.Date{}, errs.Invalidf("not_json_object", "message data is not a JSON object")
	}
	if err := json.Unmarshal(trimmed, &m); err != nil {
		return nil, gamedate.Date{}, errs.Invalidf("invalid_json", "message data: %v", err)
	}
	if m.ProcessorName == "" {
		return nil, gamedate.Date{}, errs.Invalidf("missing_processor_name", "processor_name is required")
	}
	if len(m.ProcessorName) > MaxNameBytes {
		return nil, gamedate.Date{}, errs.Invalidf("processor_name_too_long", "processor_name is %d bytes, at most %d", len(m.ProcessorName), MaxNameBytes)
	}
	if m.GameDate == "" {
		return nil, gamedate.Date{}, errs.Invalidf("missing_game_date", "game_date is required")
	}
	d, err := gamedate.Parse(m.GameDate)
	if err != nil {
		return nil, gamedate.Date{}, errs.E(errs.Invalid, "invalid_game_date", err)
	}
	switch m.Status {
	case StatusSuccess, StatusPartial, StatusFailed, StatusNoData:
	case "":
		return nil, gamedate.Date{}, errs.Invalidf("missing_status", "status is required")
	default:
		return nil, gamedate.Date{}, errs.Invalidf("invalid_status", "status %q: want success, partial, failed or no_data", clip(m.Status))
	}
	if m.CorrelationID == "" {
		m.CorrelationID = m.ExecutionID
	}
	if v, ok := m.Metadata["is_incremental"].(bool); ok {
		m.IsIncremental = v
	}
	if list, ok := m.Metadata["entities_changed"].([]any); ok {
		for _, e := range list {
			if s, ok := e.(string); ok {
				m.EntitiesChange = append(m.EntitiesChange, s)
			}
		}
	}
	return &m, d, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Normalizer maps processor names onto a phase's expected names.
type Normalizer struct {
	expected map[string]bool
	nameMap  map[string]string
}

// NewNormalizer builds the mapping for phase p.
func NewNormalizer(p *config.Phase) *Normalizer {
	n := &Normalizer{expected: map[string]bool{}, nameMap: p.NameMap}
	for _, e := range p.Expected {
		n.expected[e] = true
	}
	return n
}

// Normalize returns the configured name for m and whether it is expected.
// The order (CONTRACT §2): the explicit map on processor_name; output_table
// without its dataset prefix (mapped too) when that is expected; CamelCase to
// snake_case after dropping an Async prefix and a Processor suffix. A result
// that cannot be a field name is errs.Invalid.
func (n *Normalizer) Normalize(processor, outputTable string) (name string, expected bool, err error) {
	if to, ok := n.nameMap[processor]; ok {
		return to, n.expected[to], nil
	}
	if outputTable != "" {
		table := outputTable
		if i := strings.LastIndexByte(table, '.'); i >= 0 {
			table = table[i+1:]
		}
		if to, ok := n.nameMap[table]; ok && n.expected[to] {
			return to, true, nil
		}
		if n.expected[table] {
			return table, true, nil
		}
	}
	name = Snake(processor)
	if to, ok := n.nameMap[name]; ok {
		name = to
	}
	if !config.ValidName(name) {
		return "", false, errs.Invalidf("invalid_processor_name",
			"processor_name %q normalises to %q, which is not [a-z][a-z0-9_]{0,127}", clip(processor), clip(name))
	}
	return name, n.expected[name], nil
}

// Snake converts a class name to the snake_case name of its table: drop an
// "Async" prefix and a "Processor" suffix, then split words at case changes,
// a run of capitals being one word (MLFeatureStore → ml_feature_store).
// Names already in snake_case pass through lower-cased.
func Snake(s string) string {
	if strings.HasPrefix(s, "Async") && len(s) > len("Async") && unicode.IsUpper(rune(s[len("Async")])) {
		s = s[len("Async"):]
	}
	if t := strings.TrimSuffix(s, "Processor"); t != "" {
		s = t
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsUpper(r) {
			prevLower := i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]))
			nextLower := i > 0 && i+1 < len(rs) && unicode.IsUpper(rs[i-1]) && unicode.IsLower(rs[i+1])
			if (prevLower || nextLower) && b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Timestamp parses the message's own timestamp, if any.
func (m *Message) TimestampTime() (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, m.Timestamp)
	return t.UTC(), err == nil
}

// String identifies the message in logs.
func (m *Message) String() string {
	return fmt.Sprintf("%s %s %s", m.ProcessorName, m.GameDate, m.Status)
}
