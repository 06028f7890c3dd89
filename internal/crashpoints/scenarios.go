package crashpoints

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/history"
)

// Scenario is one path through phasegate, played the same way in the
// recording run and in every injected run. Each is kept small (few
// processors, few players) because every call it makes is explored.
type Scenario struct {
	Name   string
	Proves string // what the path covers, for docs/reliability.md
	// BigQuery paths skip when the emulator is not built.
	BigQuery bool
	// Settle is how far converge moves the clock at least: a timed rule
	// (a deadline, a stall) whose start a fault delayed fires that much
	// later than in the recording.
	Settle time.Duration
	Config func(w *world, c *config.Config)
	Setup  func(w *world) // seeds what the running system or upstream writes, outside the boundary
	Act    func(w *world)
}

const (
	night     = "2026-01-19" // overnight for phase 3 at Start
	batchDate = "2026-01-20"
)

// Scenarios are the paths the explorer walks.
var Scenarios = []*Scenario{
	{
		Name:   "gate_all_complete",
		Proves: "phase 2 with two processors: both complete, the trigger goes out",
		Config: func(_ *world, c *config.Config) {
			own(c, "phase2_to_phase3")
			expect(c, "phase2_to_phase3", "bdl_player_boxscores", "nbac_schedule")
		},
		Act: func(w *world) {
			w.Deliver("Phase2To3", "m1", completion("BdlPlayerBoxscoresProcessor", night, "success", "e1"))
			w.Deliver("Phase2To3", "m2", completion("NbacScheduleProcessor", night, "success", "e2"))
		},
	},
	{
		Name:   "gate_partial_alert",
		Proves: "phase 3 with both critical processors of three in: a critical_plus_majority trigger and its alert; the late third resolves it",
		Config: func(_ *world, c *config.Config) {
			own(c, "phase3_to_phase4")
			expect(c, "phase3_to_phase4", "player_game_summary", "upcoming_player_game_context", "team_defense_game_summary")
		},
		Act: func(w *world) {
			w.Deliver("Phase3To4", "m1", completion("PlayerGameSummaryProcessor", night, "success", "e1"))
			w.Deliver("Phase3To4", "m2", completion("AsyncUpcomingPlayerGameContextProcessor", night, "success", "e2"))
			w.Deliver("Phase3To4", "m3", completion("TeamDefenseGameSummaryProcessor", night, "success", "e3"))
		},
	},
	{
		Name:   "gate_sweep_deadline",
		Proves: "phase 2's deadline (enabled, 30 min) fired by the sweep with one processor of two; the late one is recorded",
		Settle: 35 * time.Minute,
		Config: func(_ *world, c *config.Config) {
			own(c, "phase2_to_phase3")
			p := expect(c, "phase2_to_phase3", "bdl_player_boxscores", "nbac_schedule")
			p.Timed[0].Enabled = config.On
		},
		Act: func(w *world) {
			w.Deliver("Phase2To3", "m1", completion("BdlPlayerBoxscoresProcessor", night, "success", "e1"))
			w.Advance(31 * time.Minute)
			w.Sweep()
			w.Deliver("Phase2To3", "m2", completion("NbacScheduleProcessor", night, "success", "e2"))
		},
	},
	{
		Name:     "datacheck_blocked_passed",
		Proves:   "phase 3's R-008 blocks on an empty table (error alert, history row), the rows arrive, the sweep's check passes: trigger, resolved, history row",
		BigQuery: true,
		Config: func(w *world, c *config.Config) {
			own(c, "phase3_to_phase4")
			p := expect(c, "phase3_to_phase4", "player_game_summary", "upcoming_player_game_context")
			ds := w.dataset("analytics")
			p.DataCheck.Tables = []config.CheckTable{
				{Table: ds + ".player_game_summary", DateColumn: "game_date", Processor: "player_game_summary"},
				{Table: ds + ".upcoming_player_game_context", DateColumn: "game_date", Processor: "upcoming_player_game_context"},
			}
			p.DataCheck.Critical = nil
		},
		Setup: func(w *world) {
			w.historyTable()
			ds := w.dataset("analytics")
			w.checkTable(ds, "player_game_summary", 3)
			w.checkTable(ds, "upcoming_player_game_context", 0)
		},
		Act: func(w *world) {
			w.Deliver("Phase3To4", "m1", completion("PlayerGameSummaryProcessor", night, "success", "e1"))
			w.Deliver("Phase3To4", "m2", completion("AsyncUpcomingPlayerGameContextProcessor", night, "success", "e2"))
			w.checkRows(w.dataset("analytics"), "upcoming_player_game_context", 2)
			w.Advance(5 * time.Minute)
			w.Sweep()
		},
	},
	{
		Name:   "batch_completion",
		Proves: "a three-player batch (subcollection only): every player completes, one completion message with exact counts",
		Config: func(_ *world, c *config.Config) {
			own(c, config.BatchPhase)
			c.Batch.DualWrite = config.Off
		},
		Setup: func(w *world) { w.createBatch("b1", 3) },
		Act: func(w *world) {
			for i := range 3 {
				w.Deliver("PredictionCompletions", fmt.Sprintf("m%d", i), workerCompletion("b1", player(i)))
			}
		},
	},
	{
		Name:   "batch_stall",
		Proves: "19 of 20 players, then 10 minutes without progress: the sweep completes the batch as partial, once, with one alert",
		Settle: 35 * time.Minute,
		Config: func(_ *world, c *config.Config) {
			own(c, config.BatchPhase)
			c.Batch.DualWrite = config.Off
		},
		Setup: func(w *world) { w.createBatch("b1", 20) },
		Act: func(w *world) {
			for i := range 19 {
				w.Deliver("PredictionCompletions", fmt.Sprintf("m%d", i), workerCompletion("b1", player(i)))
			}
			w.Advance(11 * time.Minute)
			w.Sweep()
		},
	},
	{
		Name:   "alert_outage",
		Proves: "a processor's failure and then its success while Slack answers 500: the alert and its resolution stay owed in the effect log and go out once each, in order, when Slack is back",
		Config: func(_ *world, c *config.Config) {
			own(c, "phase3_to_phase4")
			expect(c, "phase3_to_phase4", "player_game_summary", "upcoming_player_game_context")
		},
		Act: func(w *world) {
			w.SlackDown()
			w.Deliver("Phase3To4", "m1", completion("PlayerGameSummaryProcessor", night, "failed", "e-failed"))
			w.Deliver("Phase3To4", "m2", completion("PlayerGameSummaryProcessor", night, "success", "e1"))
			w.Advance(5 * time.Minute)
			w.Sweep()
			w.SlackUp()
			w.Deliver("Phase3To4", "m3", completion("AsyncUpcomingPlayerGameContextProcessor", night, "success", "e2"))
		},
	},
	{
		Name:     "history_row",
		Proves:   "a phase 2 trigger and a two-player batch completion, each one phase_execution_log row",
		BigQuery: true,
		Config: func(_ *world, c *config.Config) {
			own(c, "phase2_to_phase3", config.BatchPhase)
			expect(c, "phase2_to_phase3", "bdl_player_boxscores", "nbac_schedule")
			c.BigQuery.DataChecks = config.Off
			c.Batch.DualWrite = config.Off
		},
		Setup: func(w *world) {
			w.historyTable()
			w.createBatch("h1", 2)
		},
		Act: func(w *world) {
			w.Deliver("Phase2To3", "m1", completion("BdlPlayerBoxscoresProcessor", night, "success", "e1"))
			w.Deliver("Phase2To3", "m2", completion("NbacScheduleProcessor", night, "success", "e2"))
			for i := range 2 {
				w.Deliver("PredictionCompletions", fmt.Sprintf("p%d", i), workerCompletion("h1", player(i)))
			}
		},
	},
	{
		Name:   "legacy_array",
		Proves: "the default mode (dual writes, subcollection reads) with array_cap 3 and five players: the capped array holds three players that completed, one cap alert",
		Config: func(_ *world, c *config.Config) {
			own(c, config.BatchPhase)
			c.Batch.ArrayCap = 3
		},
		Setup: func(w *world) { w.createBatch("b1", 5) },
		Act: func(w *world) {
			for i := range 5 {
				w.Deliver("PredictionCompletions", fmt.Sprintf("m%d", i), workerCompletion("b1", player(i)))
			}
		},
	},
}

// own makes phasegate own only what the path exercises, so that each sweep
// visits (and the explorer injects into) only that.
func own(c *config.Config, names ...string) { c.Owned = names }

// expect shrinks a phase's expected processors, and with them what names
// them: its critical list, its name map, its data check's tables.
func expect(c *config.Config, phase string, names ...string) *config.Phase {
	p, _ := c.Phase(phase)
	p.Expected = names
	p.Critical = slices.DeleteFunc(p.Critical, func(n string) bool { return !slices.Contains(names, n) })
	maps.DeleteFunc(p.NameMap, func(_, n string) bool { return !slices.Contains(names, n) })
	if p.DataCheck != nil {
		p.DataCheck.Tables = slices.DeleteFunc(p.DataCheck.Tables, func(t config.CheckTable) bool {
			return t.Processor != "" && !slices.Contains(names, t.Processor)
		})
		p.DataCheck.Critical = nil
	}
	return p
}

func completion(processor, date, status, exec string) map[string]any {
	return map[string]any{
		"processor_name": processor, "game_date": date, "status": status,
		"execution_id": exec, "correlation_id": "corr-" + date,
		"record_count": 100, "timestamp": Start.Format(time.RFC3339),
	}
}

func player(i int) string { return fmt.Sprintf("player%02d", i) }

func workerCompletion(batchID, p string) map[string]any {
	return map[string]any{"player_lookup": p, "game_date": batchDate, "predictions_generated": 1 + len(p)%7,
		"batch_id": batchID, "timestamp": Start.Format(time.RFC3339), "worker_instance": "w1"}
}

// createBatch writes a batch document as the running coordinator does.
func (w *world) createBatch(id string, expected int) {
	now := w.clock.Now()
	_, err := w.fs.Collection(batch.Collection).Doc(docid.Encode(id)).Create(w.ctx, map[string]any{
		"batch_id": id, "game_date": batchDate, "expected_players": expected, "completed_players": []string{},
		"total_predictions": 0, "is_complete": false, "start_time": now, "updated_at": now, "correlation_id": "corr-" + id,
	})
	w.must(err, "create batch "+id)
}

// historyTable creates the run's phase_execution_log.
func (w *world) historyTable() {
	ds, table, _ := strings.Cut(w.cfg.BigQuery.HistoryTable, ".")
	w.must(w.bq.Dataset(ds).Create(w.ctx, &bigquery.DatasetMetadata{}), "create dataset "+ds)
	w.must(w.bq.Dataset(ds).Table(table).Create(w.ctx, &bigquery.TableMetadata{Schema: history.Schema}), "create history table")
}

var checkSchema = bigquery.Schema{
	{Name: "game_date", Type: bigquery.DateFieldType, Required: true},
	{Name: "player_lookup", Type: bigquery.StringFieldType},
}

// checkTable creates a checked table (and its dataset, once) with a row on
// the day before the night and rows on the night.
func (w *world) checkTable(ds, table string, rows int) {
	d := w.bq.Dataset(ds)
	if _, err := d.Metadata(w.ctx); err != nil {
		w.must(d.Create(w.ctx, &bigquery.DatasetMetadata{}), "create dataset "+ds)
	}
	w.must(d.Table(table).Create(w.ctx, &bigquery.TableMetadata{Schema: checkSchema,
		TimePartitioning: &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: "game_date"}}), "create "+table)
	day, _ := civil.ParseDate(night)
	w.insertRows(ds, table, day.AddDays(-1), 1)
	if rows > 0 {
		w.checkRows(ds, table, rows)
	}
}

// checkRows lands rows for the night in a checked table: upstream's data
// arriving.
func (w *world) checkRows(ds, table string, n int) {
	day, _ := civil.ParseDate(night)
	w.insertRows(ds, table, day, n)
}

func (w *world) insertRows(ds, table string, day civil.Date, n int) {
	rows := make([]*bigquery.ValuesSaver, 0, n)
	for i := range n {
		rows = append(rows, &bigquery.ValuesSaver{Schema: checkSchema, Row: []bigquery.Value{day, player(i)}})
	}
	w.must(w.bq.Dataset(ds).Table(table).Inserter().Put(w.ctx, rows), "insert into "+table)
}
