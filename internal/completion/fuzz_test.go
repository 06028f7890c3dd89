package completion

import (
	"regexp"
	"slices"
	"testing"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/errs"
)

// fieldName is what a normalised processor name must look like: it becomes a
// Firestore field name in the gate document (CONTRACT §2).
var fieldName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,127}$`)

// normalizers are the default configuration's, one per phase.
var (
	defaults    = config.Default()
	normalizers = func() []*Normalizer {
		var out []*Normalizer
		for i := range defaults.Phases {
			out = append(out, NewNormalizer(&defaults.Phases[i]))
		}
		return out
	}()
)

// checkNormalize applies every phase's normaliser to one name and checks the
// result: a field name that matches the pattern (and, when expected, is one
// of the phase's), or errs.Invalid with a reason.
func checkNormalize(t *testing.T, processor, table string) {
	t.Helper()
	for i, n := range normalizers {
		name, expected, err := n.Normalize(processor, table)
		if err != nil {
			if !errs.Is(err, errs.Invalid) || errs.ReasonOf(err) == "" {
				t.Fatalf("Normalize(%.40q, %.40q): error %v is not invalid input with a reason", processor, table, err)
			}
			continue
		}
		if !fieldName.MatchString(name) {
			t.Fatalf("Normalize(%.40q, %.40q) = %q, not a valid field name", processor, table, name)
		}
		if expected && !slices.Contains(defaults.Phases[i].Expected, name) {
			t.Fatalf("Normalize(%.40q, %.40q) = %q reported expected for %s", processor, table, name, defaults.Phases[i].Name)
		}
	}
}

// FuzzParse feeds arbitrary message data through Parse and every phase's
// Normalizer, as the gate does. Seeds: testdata/fuzz/FuzzParse.
//
// Properties: nothing panics; every rejection is errs.Invalid with a reason
// (bad input is dead-lettered, never retried); an accepted game_date is the
// canonical YYYY-MM-DD it parses to (it becomes a document id as is); an
// accepted name is at most 256 bytes and normalises to a valid field name
// or is rejected.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"processor_name":"PlayerGameSummaryProcessor","game_date":"2026-01-19","status":"success"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, d, err := Parse(data)
		if err != nil {
			if !errs.Is(err, errs.Invalid) || errs.ReasonOf(err) == "" {
				t.Fatalf("Parse: error %v is not invalid input with a reason", err)
			}
			if m != nil {
				t.Fatalf("Parse returned a message with an error")
			}
			return
		}
		if d.String() != m.GameDate {
			t.Fatalf("game_date %q accepted as %s: a document id must be the canonical date", m.GameDate, d)
		}
		if m.ProcessorName == "" || len(m.ProcessorName) > MaxNameBytes {
			t.Fatalf("processor_name of %d bytes accepted", len(m.ProcessorName))
		}
		switch m.Status {
		case StatusSuccess, StatusPartial, StatusFailed, StatusNoData:
		default:
			t.Fatalf("status %q accepted", m.Status)
		}
		checkNormalize(t, m.ProcessorName, m.OutputTable)
	})
}

// FuzzNormalize feeds names straight to the normalisers and Snake, without
// the JSON layer in between. Seeds: testdata/fuzz/FuzzNormalize.
func FuzzNormalize(f *testing.F) {
	f.Add("MLFeatureStoreProcessor", "nba_predictions.ml_feature_store_v2")
	f.Fuzz(func(t *testing.T, processor, table string) {
		_ = Snake(processor)
		checkNormalize(t, processor, table)
	})
}
