package completion

import (
	"strings"
	"testing"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/errs"
)

func TestNormalize(t *testing.T) {
	cfg := config.Default()
	tests := []struct {
		phase, processor, table string
		want                    string
		expected                bool
	}{
		{"Phase2To3", "BdlPlayerBoxscoresProcessor", "", "bdl_player_boxscores", true},
		{"Phase2To3", "BigDataBallPbpProcessor", "", "bigdataball_play_by_play", true},
		{"Phase2To3", "OddsApiGameLinesBatchProcessor", "", "odds_api_game_lines", true},
		{"Phase2To3", "NbacGamebookProcessor", "", "nbac_gamebook_player_stats", true},
		{"Phase2To3", "BrRostersCurrentProcessor", "", "br_roster", true},
		{"Phase2To3", "NbacScheduleProcessor", "", "nbac_schedule", true},
		{"Phase2To3", "SomeProcessor", "nba_raw.nbac_schedule", "nbac_schedule", true},
		{"Phase2To3", "nbac_schedule", "", "nbac_schedule", true},
		{"Phase3To4", "PlayerGameSummaryProcessor", "", "player_game_summary", true},
		{"Phase3To4", "AsyncUpcomingPlayerGameContextProcessor", "", "upcoming_player_game_context", true},
		{"Phase3To4", "UpcomingTeamGameContextProcessor", "nba_analytics.upcoming_team_game_context", "upcoming_team_game_context", true},
		{"Phase3To4", "TeamOffenseGameSummaryProcessor", "", "team_offense_game_summary", true},
		{"Phase4To5", "MLFeatureStoreProcessor", "", "ml_feature_store", true},
		{"Phase4To5", "ml_feature_store_v2", "", "ml_feature_store", true},
		{"Phase4To5", "MlFeatureStoreV2Processor", "nba_predictions.ml_feature_store_v2", "ml_feature_store", true},
		{"Phase4To5", "TeamDefenseZoneAnalysisProcessor", "", "team_defense_zone_analysis", true},
		{"Phase4To5", "PlayerShotZoneAnalysisProcessor", "", "player_shot_zone_analysis", true},
		{"Phase4To5", "PlayerDailyCacheProcessor", "", "player_daily_cache", true},
		{"Phase4To5", "PlayerCompositeFactorsProcessor", "", "player_composite_factors", true},
		{"Phase4To5", "MysteryProcessor", "", "mystery", false},
		{"Phase4To5", "Asynchronous", "", "asynchronous", false},
		{"Phase4To5", "HTTPServerProcessor", "", "http_server", false},
	}
	for _, tt := range tests {
		p, _ := cfg.Phase(tt.phase)
		got, exp, err := NewNormalizer(p).Normalize(tt.processor, tt.table)
		if err != nil || got != tt.want || exp != tt.expected {
			t.Errorf("%s Normalize(%q, %q) = %q, %v, %v; want %q, %v", tt.phase, tt.processor, tt.table, got, exp, err, tt.want, tt.expected)
		}
	}
}

func TestNormalizeRejects(t *testing.T) {
	p, _ := config.Default().Phase("Phase2To3")
	for _, name := range []string{"../../etc", "a/b", "__name__", "Ünïcode", "9lives", "has space", "x.y"} {
		if _, _, err := NewNormalizer(p).Normalize(name, ""); !errs.Is(err, errs.Invalid) {
			t.Errorf("Normalize(%q): err = %v, want invalid", name, err)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, data, reason string
	}{
		{"ok", `{"processor_name":"X","game_date":"2026-01-19","status":"success"}`, ""},
		{"empty", ``, "empty_message"},
		{"array", `[1,2]`, "not_json_object"},
		{"truncated", `{"processor_name":`, "invalid_json"},
		{"no name", `{"game_date":"2026-01-19","status":"success"}`, "missing_processor_name"},
		{"no date", `{"processor_name":"X","status":"success"}`, "missing_game_date"},
		{"impossible date", `{"processor_name":"X","game_date":"2026-02-30","status":"success"}`, "invalid_game_date"},
		{"path date", `{"processor_name":"X","game_date":"../../x","status":"success"}`, "invalid_game_date"},
		{"no status", `{"processor_name":"X","game_date":"2026-01-19"}`, "missing_status"},
		{"odd status", `{"processor_name":"X","game_date":"2026-01-19","status":"done"}`, "invalid_status"},
		{"long name", `{"processor_name":"` + strings.Repeat("A", 300) + `","game_date":"2026-01-19","status":"success"}`, "processor_name_too_long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.data))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if !errs.Is(err, errs.Invalid) || errs.ReasonOf(err) != tt.reason {
				t.Fatalf("Parse: err = %v (reason %q), want invalid %q", err, errs.ReasonOf(err), tt.reason)
			}
		})
	}
}

func TestParseDefaultsCorrelation(t *testing.T) {
	m, _, err := Parse([]byte(`{"processor_name":"X","game_date":"2026-01-19","status":"partial","execution_id":"e1",
		"metadata":{"is_incremental":true,"entities_changed":["a","b"]},"unknown":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.CorrelationID != "e1" || !m.IsIncremental || len(m.EntitiesChange) != 2 || !m.Completed() {
		t.Fatalf("got %+v", m)
	}
}

func TestRecordCountForms(t *testing.T) {
	for in, want := range map[string]Count{`100`: {100, true}, `100.0`: {100, true}, `"42"`: {42, true},
		`null`: {}, `"many"`: {}, `[1]`: {}, `1e300`: {}} {
		m, _, err := Parse([]byte(`{"processor_name":"X","game_date":"2026-01-19","status":"success","record_count":` + in + `}`))
		if err != nil {
			t.Fatalf("record_count %s: %v", in, err)
		}
		if m.RecordCount != want {
			t.Errorf("record_count %s = %+v, want %+v", in, m.RecordCount, want)
		}
	}
}
