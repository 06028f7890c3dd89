package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/bqclient"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/history"
	"github.com/phasegate/phasegate/internal/status"
)

// The fortnight ends with the night of gameDate, played step by step; the
// thirteen before it are compressed: each is an ordinary night's timetable,
// moved by a few minutes, and bent by what the night is there to show.
const firstDate = "2026-01-06"

// nightKind is what a compressed night shows.
type nightKind int

const (
	ordinary nightKind = iota
	partialTier2
	checkBlocks // with BigQuery: R-008 finds no rows; without: the batch stalls
	overdueGate
)

type nightPlan struct {
	date  string
	delay time.Duration // the whole timetable moves by this
	kind  nightKind
}

var fortnight = []nightPlan{
	{date: "2026-01-06"},
	{date: "2026-01-07", delay: 3 * time.Minute},
	{date: "2026-01-08", delay: -2 * time.Minute},
	{date: "2026-01-09", delay: 1 * time.Minute, kind: partialTier2},
	{date: "2026-01-10", delay: 2 * time.Minute},
	{date: "2026-01-11", delay: -1 * time.Minute},
	{date: "2026-01-12", delay: 4 * time.Minute},
	{date: "2026-01-13", kind: checkBlocks},
	{date: "2026-01-14", delay: -3 * time.Minute},
	{date: "2026-01-15", delay: 50 * time.Minute}, // the late night
	{date: "2026-01-16", delay: 1 * time.Minute},
	{date: "2026-01-17", delay: -1 * time.Minute},
	{date: "2026-01-18", kind: overdueGate},
}

// The ordinary night's timetable, New York time on the morning after the
// games: each phase's processors a few minutes apart, phase 3's critical
// ones last so that nothing goes on before every one is in.
var (
	phase2Procs = []string{"BdlPlayerBoxscoresProcessor", "NbacScheduleProcessor", "OddsApiGameLinesBatchProcessor",
		"BigDataBallPbpProcessor", "NbacGamebookProcessor", "BrRostersCurrentProcessor"}
	phase3Procs = []string{"TeamDefenseGameSummaryProcessor", "TeamOffenseGameSummaryProcessor", "UpcomingTeamGameContextProcessor",
		"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor"}
	phase4Procs = []string{"TeamDefenseZoneAnalysisProcessor", "PlayerShotZoneAnalysisProcessor", "PlayerCompositeFactorsProcessor",
		"PlayerDailyCacheProcessor", "MlFeatureStoreV2Processor"}
)

const (
	phase2Start, phase2Every = 30 * time.Minute, 3 * time.Minute
	phase3Start, phase3Every = 65 * time.Minute, 2 * time.Minute
	phase4Start, phase4Every = 90 * time.Minute, 3 * time.Minute
	batchAfterTrigger        = 15 * time.Minute // the coordinator starts the batch after phase 4's trigger
	demoBatchPlayers         = 10
	stallPlayers             = 20 // 19 of 20 is 95 %: the stall rule's threshold
)

// column names a cell of the season grid: a phase gate or the batches.
type column string

const batchCol column = "prediction_batch"

// outcome is what a night must end with in one column: the state and, for
// a trigger (a batch completion), its New York minute.
type outcome struct {
	state string
	at    time.Time // zero without a trigger
}

// event is one delivery of a compressed night.
type event struct {
	at    time.Time
	ep    string // entry point
	proc  string
	table string
	note  string // why a sweep runs then: the rule that falls due
}

// playedNight is a night as the demo played it: what the season page must
// show for it.
type playedNight struct {
	date  string
	story string
	want  map[column]outcome
}

// timetable lays out a compressed night: its deliveries, its batch and the
// outcome each column must reach. Sweeps run only when a rule falls due.
func (n nightPlan) timetable(bq bool) (story string, evs []event, b *batchPlan, want map[column]outcome) {
	ny := gamedate.NewYork()
	d, _ := gamedate.Parse(n.date)
	morning := time.Date(d.Year, d.Month, d.Day+1, 0, 0, 0, 0, ny).Add(n.delay)
	want = map[column]outcome{}
	deliver := func(ep string, procs []string, start, every time.Duration, skip string) (first, last time.Time) {
		at := morning.Add(start)
		first = at
		for _, p := range procs {
			if p != skip {
				e := event{at: at, ep: ep, proc: p}
				if p == "MlFeatureStoreV2Processor" {
					e.table = "nba_predictions.ml_feature_store_v2"
				}
				evs = append(evs, e)
				last = at
			}
			at = at.Add(every)
		}
		return first, last
	}
	_, p2 := deliver("Phase2To3", phase2Procs, phase2Start, phase2Every, "")
	want["phase2_to_phase3"] = outcome{status.StateTriggered, p2}
	story = "an ordinary night"
	if n.delay >= 30*time.Minute {
		story = fmt.Sprintf("a late night: everything %d min later", int(n.delay.Minutes()))
	}
	skip3 := ""
	if n.kind == overdueGate {
		skip3 = "PlayerGameSummaryProcessor"
	}
	p3first, p3 := deliver("Phase3To4", phase3Procs, phase3Start, phase3Every, skip3)
	switch {
	case n.kind == overdueGate:
		story = "player_game_summary never reports; phase 3 has no timed rule, so it waits — overdue 4 h after its first completion"
		stuck := p3first.Add(4 * time.Hour)
		evs = append(evs, event{at: stuck, ep: "Sweep", note: "phase 3's stuck_after (4h) falls due: overdue"})
		want["phase3_to_phase4"] = outcome{state: status.StateOverdue}
		want["phase4_to_phase5"], want[batchCol] = outcome{state: status.StateNotStarted}, outcome{state: status.StateNotStarted}
		return story, evs, nil, want
	case n.kind == checkBlocks && bq:
		story = "R-008 finds no rows in nba_analytics.team_offense_game_summary: phase 3 is held, phase 4 never starts"
		stuck := p3first.Add(4 * time.Hour)
		evs = append(evs, event{at: stuck, ep: "Sweep", note: "phase 3's stuck_after (4h) falls due; the check is run again"})
		want["phase3_to_phase4"] = outcome{state: status.StateBlocked}
		want["phase4_to_phase5"], want[batchCol] = outcome{state: status.StateNotStarted}, outcome{state: status.StateNotStarted}
		return story, evs, nil, want
	}
	want["phase3_to_phase4"] = outcome{status.StateTriggered, p3}
	skip4 := ""
	if n.kind == partialTier2 {
		skip4 = "PlayerShotZoneAnalysisProcessor"
	}
	p4first, p4 := deliver("Phase4To5", phase4Procs, phase4Start, phase4Every, skip4)
	want["phase4_to_phase5"] = outcome{status.StateTriggered, p4}
	if n.kind == partialTier2 {
		story = "player_shot_zone_analysis never reports: tier 2 (4 of 5) lets phase 4 go on an hour after its first completion"
		p4 = p4first.Add(time.Hour)
		evs = append(evs, event{at: p4, ep: "Sweep", note: "tier2_timeout falls due: 1 h after the first completion, 4 of 5 in"})
		want["phase4_to_phase5"] = outcome{status.StatePartial, p4}
	}
	b = &batchPlan{id: fmt.Sprintf("batch_%s_%d", n.date, p4.Unix()), start: p4.Add(batchAfterTrigger),
		players: demoBatchPlayers, complete: demoBatchPlayers}
	done := b.start.Add(time.Duration(b.complete) * workerEvery)
	want[batchCol] = outcome{status.StateTriggered, done}
	if n.kind == checkBlocks { // no BigQuery: the batch stalls instead
		story = "no BigQuery emulator, so instead of a blocked check: the batch stalls at 19 of 20 players and completes partial 10 min later"
		b.players, b.complete = stallPlayers, stallPlayers-1
		done = b.start.Add(time.Duration(b.complete) * workerEvery).Add(10 * time.Minute)
		b.sweepAt = done
		want[batchCol] = outcome{status.StatePartial, done}
	}
	return story, evs, b, want
}

// batchPlan is a night's prediction batch: started as the coordinator
// starts it, complete of its players reporting workerEvery apart, and a
// sweep at sweepAt when the stall rule falls due.
type batchPlan struct {
	id                string
	start             time.Time
	players, complete int
	sweepAt           time.Time
}

// demo is the world the fortnight is played in.
type demo struct {
	a      *app.App
	base   string
	clk    *clock.Fake
	out    io.Writer
	subs   map[string]*bus.Subscription
	alerts chan string
	topics map[column]string // the topic each column's trigger goes to
}

// playNight plays a compressed night and checks it ended as planned.
func (d *demo) playNight(ctx context.Context, n nightPlan, bq bool) (playedNight, error) {
	story, evs, b, want := n.timetable(bq)
	fmt.Fprintf(d.out, "%s  %s\n", n.date, story)
	for i, e := range evs {
		d.clk.Set(e.at)
		var body map[string]any
		if e.proc != "" {
			body = completionBody(e.proc, n.date, "success", e.table, i, e.at)
		}
		code, err := post(ctx, d.base+"/"+e.ep, fmt.Sprintf("%s-%d", n.date, i), body)
		if err != nil || code >= 300 {
			return playedNight{}, fmt.Errorf("demo: %s %s %s: status %d, %v", n.date, e.ep, e.proc, code, err)
		}
		if e.note != "" {
			fmt.Fprintf(d.out, "  %s  sweep: %s\n", e.at.In(gamedate.NewYork()).Format("15:04"), e.note)
		}
		d.printAlerts()
	}
	if b != nil {
		if err := d.playBatch(ctx, n.date, b); err != nil {
			return playedNight{}, err
		}
	}
	if err := d.checkMessages(ctx, n.date, want); err != nil {
		return playedNight{}, err
	}
	return playedNight{date: n.date, story: story, want: want}, d.checkNight(ctx, n.date, want)
}

func completionBody(proc, date, st, table string, i int, at time.Time) map[string]any {
	return map[string]any{"processor_name": proc, "game_date": date, "status": st,
		"execution_id": fmt.Sprintf("run-%s-%d", date, i), "correlation_id": "night-" + date, "output_table": table,
		"record_count": 420, "timestamp": at.UTC().Format(time.RFC3339)}
}

// playBatch creates the batch as the coordinator does and sends its
// workers' completions, then the sweep when the stall rule falls due.
func (d *demo) playBatch(ctx context.Context, date string, b *batchPlan) error {
	d.clk.Set(b.start)
	if err := createDemoBatch(ctx, d.a, b.id, date, b.players, b.start); err != nil {
		return err
	}
	for i := range b.complete {
		d.clk.Advance(workerEvery)
		body := map[string]any{"player_lookup": demoPlayer(i), "game_date": date, "predictions_generated": 5,
			"batch_id": b.id, "timestamp": d.clk.Now().Format(time.RFC3339), "worker_instance": fmt.Sprintf("worker-%d", i%3)}
		if code, err := post(ctx, d.base+"/PredictionCompletions", fmt.Sprintf("%s-w%d", b.id, i), body); err != nil || code >= 300 {
			return fmt.Errorf("demo: %s completion %d: status %d, %v", b.id, i, code, err)
		}
	}
	if !b.sweepAt.IsZero() {
		d.clk.Set(b.sweepAt)
		fmt.Fprintf(d.out, "  %s  sweep: the stall rule falls due: %d of %d players, no progress for 10 min\n",
			b.sweepAt.In(gamedate.NewYork()).Format("15:04"), b.complete, b.players)
		if code, err := post(ctx, d.base+"/Sweep", b.id+"-stall", nil); err != nil || code >= 300 {
			return fmt.Errorf("demo: the stall sweep: status %d, %v", code, err)
		}
	}
	d.printAlerts()
	return nil
}

func demoPlayer(i int) string {
	if i < len(demoPlayers) {
		return demoPlayers[i]
	}
	return fmt.Sprintf("player%02d", i)
}

func createDemoBatch(ctx context.Context, a *app.App, id, date string, players int, at time.Time) error {
	_, err := a.FS.Collection("prediction_batches").Doc(id).Create(ctx, map[string]any{
		"batch_id": id, "game_date": date, "expected_players": players,
		"completed_players": []string{}, "total_predictions": 0, "is_complete": false,
		"start_time": at, "updated_at": at, "correlation_id": "night-" + date,
	})
	if err != nil {
		return fmt.Errorf("demo: create batch %s: %w", id, err)
	}
	return nil
}

func (d *demo) printAlerts() {
	for len(d.alerts) > 0 {
		fmt.Fprintln(d.out, <-d.alerts)
	}
}

// drain collects what every subscription received, concurrently: each
// drain waits a quiet moment, which sequentially would add up.
func (d *demo) drain(ctx context.Context) (map[string][]map[string]any, error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	got := map[string][]map[string]any{}
	for topic, sub := range d.subs {
		wg.Go(func() {
			msgs, err := sub.Drain(ctx, 300*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			for _, m := range msgs {
				var raw map[string]any
				_ = json.Unmarshal(m.Data, &raw)
				got[topic] = append(got[topic], raw)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return got, nil
}

// receive drains the subscriptions until want messages per topic have come
// or receiveFor has passed: on a loaded machine a message can miss one
// quiet drain and arrive in the next.
func (d *demo) receive(ctx context.Context, want map[string]int) (map[string][]map[string]any, error) {
	got := map[string][]map[string]any{}
	for deadline := time.Now().Add(receiveFor); ; {
		more, err := d.drain(ctx)
		if err != nil {
			return nil, err
		}
		for topic, msgs := range more {
			got[topic] = append(got[topic], msgs...)
		}
		short := false
		for topic, n := range want {
			short = short || len(got[topic]) < n
		}
		if !short || time.Now().After(deadline) {
			return got, nil
		}
	}
}

const receiveFor = 30 * time.Second

// checkMessages prints the night's triggers and checks there is exactly
// one per column that went on, with the outcome planned. A copy that comes
// late is caught the night after: it carries this night's date.
func (d *demo) checkMessages(ctx context.Context, date string, want map[column]outcome) error {
	counts := map[string]int{}
	for col, w := range want {
		if w.state == status.StateTriggered || w.state == status.StatePartial {
			counts[d.topics[col]] = 1
		}
	}
	got, err := d.receive(ctx, counts)
	if err != nil {
		return err
	}
	for topic, msgs := range got {
		for _, m := range msgs {
			if m["game_date"] != date {
				return fmt.Errorf("demo: while checking %s, a message for %v on %s: a second trigger", date, m["game_date"], topic)
			}
		}
	}
	var parts []string
	for _, col := range []column{"phase2_to_phase3", "phase3_to_phase4", "phase4_to_phase5", batchCol} {
		msgs := got[d.topics[col]]
		w := want[col]
		went := w.state == status.StateTriggered || w.state == status.StatePartial
		if (len(msgs) == 1) != went || len(msgs) > 1 {
			return fmt.Errorf("demo: %s %s: %d messages on %s, want %s", date, col, len(msgs), d.topics[col], w.state)
		}
		if !went {
			parts = append(parts, fmt.Sprintf("%s %s", shortCol(col), w.state))
			continue
		}
		m := msgs[0]
		at := w.at.In(gamedate.NewYork()).Format("15:04")
		if md, ok := m["metadata"].(map[string]any); ok {
			parts = append(parts, fmt.Sprintf("batch %v %v/%v %s", m["status"], md["completed_players"], md["expected_players"], at))
			continue
		}
		if partial, _ := m["is_partial"].(bool); partial != (w.state == status.StatePartial) {
			return fmt.Errorf("demo: %s %s went on partial=%v, want %s", date, col, partial, w.state)
		}
		parts = append(parts, fmt.Sprintf("%s %v %s", shortCol(col), m["trigger_reason"], at))
	}
	fmt.Fprintf(d.out, "            ⇒ %s\n", strings.Join(parts, " · "))
	return nil
}

func shortCol(c column) string {
	if c == batchCol {
		return "batch"
	}
	var a, b int
	fmt.Sscanf(string(c), "phase%d_to_phase%d", &a, &b)
	return fmt.Sprintf("%d→%d", a, b)
}

// checkNight asks Status for the date, as an operator would, and checks
// that each gate and the batch stand where the plan put them, to the
// minute the page shows.
func (d *demo) checkNight(ctx context.Context, date string, want map[column]outcome) error {
	body, err := get(ctx, d.base+"/Status?date="+date)
	if err != nil {
		return err
	}
	var s struct{ Dates []status.Date }
	if err := json.Unmarshal([]byte(body), &s); err != nil || len(s.Dates) != 1 {
		return fmt.Errorf("demo: Status of %s: %v: %s", date, err, body)
	}
	day := s.Dates[0]
	check := func(col column, state string, at *time.Time) error {
		w := want[col]
		if state != w.state || (at == nil) != w.at.IsZero() || (at != nil && !at.Truncate(time.Minute).Equal(w.at.Truncate(time.Minute))) {
			return fmt.Errorf("demo: %s %s is %s at %v, want %s at %v", date, col, state, at, w.state, w.at)
		}
		return nil
	}
	for _, p := range day.Phases {
		at := p.TriggeredAt
		if !p.Triggered {
			at = nil
		}
		if err := check(column(p.Phase), p.State, at); err != nil {
			return err
		}
	}
	if len(day.Batches) == 0 {
		return check(batchCol, status.StateNotStarted, nil)
	}
	return check(batchCol, day.Batches[0].State, day.Batches[0].CompletedAt)
}

// demoCheck is the one data check the demo runs: the one that blocks its
// night. A check costs about a second on the emulator (the client polls the
// query job), and three a night would double the replay.
const demoCheck = "phase3_to_phase4"

// withBigQuery starts the BigQuery emulator when one is built and fills
// R-008's tables for every date of the fortnight — all but one table on the
// night the check blocks — so that the check runs as in production, and
// the history rows are appended; it returns what stops it, or false when
// none is built.
func withBigQuery(ctx context.Context, cfg *config.Config, out io.Writer) (stop func(), ok bool, err error) {
	bin, ok := emulator.BigQueryBinary()
	if !ok {
		fmt.Fprintf(out, "no BigQuery emulator at %s (make bigquery-emulator): data checks are off, and 2026-01-13 shows a stalled batch instead of a blocked check\n", bin)
		return func() {}, false, nil
	}
	for i := range cfg.Phases {
		if cfg.Phases[i].Name != demoCheck {
			cfg.Phases[i].DataCheck = nil
		}
	}
	const project = "phasegate-demo"
	e, err := emulator.StartBigQuery(ctx, bin, project, "")
	if err != nil {
		return nil, false, err
	}
	c, err := bqclient.New(ctx, project, e.Host)
	if err != nil {
		e.Stop()
		return nil, false, err
	}
	defer c.Close()
	if err := seedBigQuery(ctx, c, cfg); err != nil {
		e.Stop()
		return nil, false, fmt.Errorf("demo: fill the BigQuery emulator: %w", err)
	}
	cfg.BigQuery.EmulatorHost, cfg.BigQuery.Project = e.Host, project
	fmt.Fprintln(out, "BigQuery emulator: R-008 counts the analytics rows before phase 3 goes on (R-007 and R-006 are left off to keep the replay short); history rows are appended")
	return e.Stop, true, nil
}

// blockedTable is the table R-008 finds empty on the night it blocks.
const blockedTable = "nba_analytics.team_offense_game_summary"

func seedBigQuery(ctx context.Context, c *bigquery.Client, cfg *config.Config) error {
	var blocked string
	for _, n := range fortnight {
		if n.kind == checkBlocks {
			blocked = n.date
		}
	}
	datasets := map[string]bool{}
	dataset := func(name string) error {
		if datasets[name] {
			return nil
		}
		datasets[name] = true
		return c.Dataset(name).Create(ctx, &bigquery.DatasetMetadata{})
	}
	for _, p := range cfg.Phases {
		if p.DataCheck == nil {
			continue
		}
		for _, t := range p.DataCheck.Tables {
			ds, tb, _ := strings.Cut(t.Table, ".")
			if err := dataset(ds); err != nil {
				return err
			}
			schema := bigquery.Schema{{Name: t.DateColumn, Type: bigquery.DateFieldType, Required: true},
				{Name: "player_lookup", Type: bigquery.StringFieldType}}
			if err := c.Dataset(ds).Table(tb).Create(ctx, &bigquery.TableMetadata{Schema: schema,
				TimePartitioning: &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: t.DateColumn}}); err != nil {
				return err
			}
			var rows []*bigquery.ValuesSaver
			for d, _ := gamedate.Parse(firstDate); d.String() <= gameDate; d = d.AddDays(1) {
				if t.Table == blockedTable && d.String() == blocked {
					continue
				}
				rows = append(rows, &bigquery.ValuesSaver{Schema: schema,
					Row: []bigquery.Value{civil.Date{Year: d.Year, Month: d.Month, Day: d.Day}, "lebronjames"}})
			}
			if err := c.Dataset(ds).Table(tb).Inserter().Put(ctx, rows); err != nil {
				return err
			}
		}
	}
	ds, tb, _ := strings.Cut(cfg.BigQuery.HistoryTable, ".")
	if err := dataset(ds); err != nil {
		return err
	}
	return c.Dataset(ds).Table(tb).Create(ctx, &bigquery.TableMetadata{Schema: history.Schema})
}
