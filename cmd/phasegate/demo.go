package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/slacktest"
	"github.com/phasegate/phasegate/internal/status"
)

func demoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Replay a fortnight of game days on the emulators and print what each gate decided",
		Long: `Replay the fortnight of game dates 2026-01-06 to 2026-01-19 through 'serve'
on the Firestore and Pub/Sub emulators (started here unless
FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST are set), on a simulated
clock, with the scheduler's sweep only at the instants a timed rule falls
due. Thirteen nights are compressed: ordinary ones a few minutes apart, a
partial one (phase 4 goes on at tier 2), a late one (50 minutes), one whose
phase 3 waits for a processor that never reports (overdue), and one blocked
by the R-008 data check — when the BigQuery emulator is built (make
bigquery-emulator); without it the data checks are off and that night's
batch stalls instead. The last night, 2026-01-19, is played step by step:
phase 2 processors complete over time, one is delivered twice, one has a
name nobody expects, one fails and the 30-minute completion deadline fires
from the sweep; phase 3 goes on with its critical processors; phase 4
completes; a prediction batch of players with awkward names completes once
despite a redelivery. Slack alerts go to a local webhook receiver and are
printed. Exits non-zero if any night did not end as planned. Then it prints
the fortnight's grid, the URLs of the season's and the night's Status pages,
and keeps serving them for --linger, or until interrupted.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.linger < 0 {
				return usagef("--linger %v: must not be negative", o.linger)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().BoolVar(&o.verbose, "verbose", false, "also print phasegate's JSON logs on stderr")
	cmd.Flags().DurationVar(&o.linger, "linger", 2*time.Minute, "how long to keep serving the Status pages after the replay (0: exit at once)")
	return cmd
}

type demoOptions struct {
	verbose bool
	linger  time.Duration
	// atEnd, when set, is called with the pages while they are served,
	// instead of lingering: a test looks at them with it.
	atEnd func(ctx context.Context, p demoPages) error
}

// demoPages is what the demo serves at its end, and what it played.
type demoPages struct {
	Night, Season string // URLs
	Played        []playedNight
}

type step struct {
	at     string // New York wall time on 2026-01-20
	ep     string // entry point
	proc   string
	status string
	msgID  string // empty: a fresh id
	table  string
	note   string
}

var day = []step{
	{at: "00:31", ep: "Phase2To3", proc: "BdlPlayerBoxscoresProcessor", status: "success", msgID: "bdl-1"},
	{at: "00:33", ep: "Phase2To3", proc: "BdlPlayerBoxscoresProcessor", status: "success", msgID: "bdl-1", note: "Pub/Sub redelivers the same message"},
	{at: "00:35", ep: "Phase2To3", proc: "NbacScheduleProcessor", status: "success"},
	{at: "00:38", ep: "Phase2To3", proc: "OddsApiGameLinesBatchProcessor", status: "success"},
	{at: "00:40", ep: "Phase2To3", proc: "NbacInjuryReportProcessor", status: "success", note: "a processor nobody expects"},
	{at: "00:42", ep: "Phase2To3", proc: "BigDataBallPbpProcessor", status: "success"},
	{at: "00:45", ep: "Phase2To3", proc: "NbacGamebookProcessor", status: "success"},
	{at: "00:47", ep: "Phase2To3", proc: "BrRostersCurrentProcessor", status: "failed", note: "the roster scraper fails"},
	{at: "01:01", ep: "Sweep", note: "Cloud Scheduler's sweep: the 30 min deadline falls due (00:31 + 30 min)"},
	{at: "01:10", ep: "Phase3To4", proc: "PlayerGameSummaryProcessor", status: "success"},
	{at: "01:12", ep: "Phase3To4", proc: "AsyncUpcomingPlayerGameContextProcessor", status: "success"},
	{at: "01:15", ep: "Phase3To4", proc: "TeamDefenseGameSummaryProcessor", status: "partial"},
	{at: "01:20", ep: "Phase3To4", proc: "TeamOffenseGameSummaryProcessor", status: "success", note: "after the trigger"},
	{at: "01:22", ep: "Phase3To4", proc: "UpcomingTeamGameContextProcessor", status: "success", note: "after the trigger"},
	{at: "01:30", ep: "Phase4To5", proc: "TeamDefenseZoneAnalysisProcessor", status: "success"},
	{at: "01:34", ep: "Phase4To5", proc: "PlayerShotZoneAnalysisProcessor", status: "success"},
	{at: "01:38", ep: "Phase4To5", proc: "PlayerCompositeFactorsProcessor", status: "success"},
	{at: "01:41", ep: "Phase4To5", proc: "PlayerDailyCacheProcessor", status: "success"},
	{at: "01:45", ep: "Phase4To5", proc: "MlFeatureStoreV2Processor", table: "nba_predictions.ml_feature_store_v2", status: "success", note: "named by its v2 table"},
	{at: "02:00", ep: "PredictionCompletions", note: "the coordinator starts a batch of 10 players; 10 workers complete over 7 minutes, one is redelivered"},
}

// wantTriggers is what the night must end with, by topic: the phase
// triggers' reasons and the batch completion's status.
var wantTriggers = map[string]string{
	"nba-phase3-trigger":              "deadline_exceeded",
	"nba-phase4-trigger":              "critical_plus_majority_60pct",
	"nba-predictions-trigger":         "all_complete",
	"nba-phase5-predictions-complete": "success",
}

// nightWant is where the night's gates and batch end, for the season page.
func nightWant() map[column]outcome {
	at := func(hhmm string) time.Time {
		t, _ := time.ParseInLocation("2006-01-02 15:04", "2026-01-20 "+hhmm, gamedate.NewYork())
		return t
	}
	return map[column]outcome{
		"phase2_to_phase3": {status.StatePartial, at("01:01")},
		"phase3_to_phase4": {status.StatePartial, at("01:15")},
		"phase4_to_phase5": {status.StateTriggered, at("01:45")},
		batchCol:           {status.StateTriggered, at("02:07")}, // 02:00 + 11 completions 40 s apart
	}
}

// demoPlayers are the prediction batch's players; their names are the kind
// the running system dropped (hyphens, dots, apostrophes, non-ASCII).
var demoPlayers = []string{"lebronjames", "shaigilgeous-alexander", "jr.smith", "d'angelorussell", "nikolajokić",
	"lukadončić", "victorwembanyama", "jaysontatum", "stephencurry", "giannisantetokounmpo"}

const gameDate = "2026-01-19"

// demoStarted is when the process started: the replay is timed from it.
var demoStarted = time.Now()

func runDemo(ctx context.Context, out io.Writer, o demoOptions) error {
	stop, err := ensureEmulators(ctx, out)
	if err != nil {
		return err
	}
	defer stop()
	slack := slacktest.New()
	defer slack.Close()
	// Alerts are printed after the step that caused them.
	alerts := make(chan string, 100)
	slack.OnPost = func(p slacktest.Post) {
		alerts <- fmt.Sprintf("        💬 Slack %-9s %s", strings.TrimPrefix(p.Path, "/")+":", firstLine(p.Text))
	}
	cfg := config.Default()
	cfg.ProjectID = fmt.Sprintf("phasegate-demo-%d", time.Now().Unix())
	cfg.Alerts.WebhookURL, cfg.Alerts.WebhookURLError, cfg.Alerts.WebhookURLWarning = slack.Hook("info"), slack.Hook("error"), slack.Hook("warning")
	cfg.Alerts.MinInterval = 0
	p2, _ := cfg.Phase("Phase2To3")
	p2.Timed[0].Enabled = config.On // ENABLE_PHASE2_COMPLETION_DEADLINE=true
	stopBQ, bq, err := withBigQuery(ctx, cfg, out)
	if err != nil {
		return err
	}
	defer stopBQ()
	if err := cfg.Validate(); err != nil {
		return err
	}
	ny := gamedate.NewYork()
	clk := clock.NewFake(time.Date(2026, 1, 7, 0, 0, 0, 0, ny))
	logOut := io.Discard
	if o.verbose {
		logOut = os.Stderr
	}
	a, err := app.New(ctx, cfg, app.Options{Clock: clk, Log: logging.New(logOut, slog.LevelInfo)})
	if err != nil {
		return err
	}
	defer a.Close()
	d := &demo{a: a, clk: clk, out: out, alerts: alerts, subs: map[string]*bus.Subscription{},
		topics: map[column]string{batchCol: cfg.Topics.BatchComplete}}
	for _, p := range cfg.Phases {
		d.topics[column(p.Name)] = p.OutputTopic
	}
	for topic := range wantTriggers {
		if d.subs[topic], err = a.Bus.Subscribe(ctx, topic, "demo-"+topic); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stopServer := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(sctx, ln, a, io.Discard) }()
	defer func() { stopServer(); <-served }()
	d.base = "http://" + ln.Addr().String()

	fmt.Fprintf(out, "phasegate demo: the game dates %s to %s on a simulated clock, every entry point at %s\n\n", firstDate, gameDate, d.base)
	var played []playedNight
	for _, n := range fortnight {
		pn, err := d.playNight(ctx, n, bq)
		if err != nil {
			return err
		}
		played = append(played, pn)
	}
	if err := d.playDay(ctx); err != nil {
		return err
	}
	played = append(played, playedNight{date: gameDate, story: "the night step by step, above", want: nightWant()})
	// The scheduler's sweep keeps running after the last event; Health
	// reports a sweep older than 15 minutes as degraded.
	if code, err := post(ctx, d.base+"/Sweep", "demo-last-sweep", nil); err != nil || code >= 300 {
		return fmt.Errorf("demo: the last sweep answered %d: %v", code, err)
	}
	health, err := get(ctx, d.base+"/Health")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nGET /Health at the end of the night (%s New York, after the scheduler's sweep):\n%s",
		clk.Now().In(ny).Format("15:04"), health)
	pages := demoPages{Night: d.base + "/Status?date=" + gameDate, Season: d.base + "/Status?from=" + firstDate + "&to=" + gameDate, Played: played}
	if err := d.printSeason(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nthe season's Status page: %s\nthe night's Status page:  %s\n", pages.Season, pages.Night)
	fmt.Fprintf(out, "replayed in %.1f s, from the binary's start to serving the pages\n", time.Since(demoStarted).Seconds())
	if o.atEnd != nil {
		return o.atEnd(ctx, pages)
	}
	if o.linger == 0 {
		return nil
	}
	fmt.Fprintf(out, "(open them in a browser; serving for %v; Ctrl-C stops)\n", o.linger)
	select {
	case <-ctx.Done():
	case <-time.After(o.linger):
	}
	return nil
}

// printSeason prints the fortnight as `phasegate status --from --to --url`
// prints it, from the Status function's JSON.
func (d *demo) printSeason(ctx context.Context) error {
	body, err := get(ctx, d.base+"/Status?from="+firstDate+"&to="+gameDate)
	if err != nil {
		return err
	}
	var s status.Season
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return fmt.Errorf("demo: the season's JSON: %w", err)
	}
	fmt.Fprintf(d.out, "\nthe fortnight at a glance (phasegate status --from %s --to %s --url %s/Status):\n", firstDate, gameDate, d.base)
	return status.WriteSeason(d.out, &s)
}

// playDay plays the night of gameDate step by step, printing each
// decision and trigger as it happens.
func (d *demo) playDay(ctx context.Context) error {
	ny := gamedate.NewYork()
	fmt.Fprintf(d.out, "\n%s, step by step:\n%-8s %-21s %-40s %s\n", gameDate, "NY time", "entry", "event", "decision")
	got := map[string]string{}
	for i, s := range day {
		at, _ := time.ParseInLocation("2006-01-02 15:04", "2026-01-20 "+s.at, ny)
		d.clk.Set(at)
		id := s.msgID
		if id == "" {
			id = fmt.Sprintf("demo-%d", i)
		}
		event, result := "", ""
		switch s.ep {
		case "PredictionCompletions":
			r, err := runBatch(ctx, d.a, d.base, d.clk)
			if err != nil {
				return err
			}
			event, result = demoBatchID, r
		default:
			var body map[string]any
			if s.proc != "" {
				body = completionBody(s.proc, gameDate, s.status, s.table, i, at)
			}
			code, err := post(ctx, d.base+"/"+s.ep, id, body)
			if err != nil {
				return err
			}
			event, result = s.proc+" "+s.status, decision(ctx, d.a, s, code)
			if s.proc == "" {
				event = "sweep"
			}
		}
		fmt.Fprintf(d.out, "%-8s %-21s %-40s %s\n", s.at, s.ep, event, result)
		if s.note != "" {
			fmt.Fprintf(d.out, "%-8s %-21s   (%s)\n", "", "", s.note)
		}
		d.printAlerts()
		msgs, err := d.drain(ctx)
		if err != nil {
			return err
		}
		if err := d.printTriggers(msgs, got); err != nil {
			return err
		}
	}
	// A message that missed its step's drain is waited for here.
	missing := map[string]int{}
	for topic := range wantTriggers {
		if _, ok := got[topic]; !ok {
			missing[topic] = 1
		}
	}
	if len(missing) > 0 {
		msgs, err := d.receive(ctx, missing)
		if err != nil {
			return err
		}
		if err := d.printTriggers(msgs, got); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "\ntriggers: %d\n", len(got))
	for topic, reason := range wantTriggers {
		if got[topic] != reason {
			return fmt.Errorf("demo: %s got trigger reason %q, want %q", topic, got[topic], reason)
		}
	}
	fmt.Fprintln(d.out, "the day ended as expected: one trigger per phase, each with its manifest")
	return d.checkNight(ctx, gameDate, nightWant())
}

// printTriggers prints the night's messages as they come and records, by
// topic, each trigger's reason or the batch completion's status.
func (d *demo) printTriggers(msgs map[string][]map[string]any, got map[string]string) error {
	for topic, list := range msgs {
		for _, raw := range list {
			if _, dup := got[topic]; dup || raw["game_date"] != gameDate {
				return fmt.Errorf("demo: a second message on %s (for %v)", topic, raw["game_date"])
			}
			if md, ok := raw["metadata"].(map[string]any); ok { // the batch completion
				fmt.Fprintf(d.out, "        ⇒ %s  %s  status=%s players=%v/%v predictions=%v\n", topic,
					raw["execution_id"], raw["status"], md["completed_players"], md["expected_players"], md["total_predictions"])
				got[topic], _ = raw["status"].(string)
				continue
			}
			fmt.Fprintf(d.out, "        ⇒ %s  %s  reason=%s partial=%v missing=%v\n", topic,
				raw["trigger_id"], raw["trigger_reason"], raw["is_partial"], raw["missing_processors"])
			got[topic], _ = raw["trigger_reason"].(string)
		}
	}
	return nil
}

// get returns the body of a GET.
func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

const demoBatchID = "batch_2026-01-19_1768892400"

// workerEvery spaces the workers' completions, so that the batch has a
// visible life on the Status page's timeline.
const workerEvery = 40 * time.Second

// runBatch creates the batch as the running coordinator does, then sends
// every worker's completion, the first one twice, and says how each was
// answered.
func runBatch(ctx context.Context, a *app.App, base string, clk *clock.Fake) (string, error) {
	if err := createDemoBatch(ctx, a, demoBatchID, gameDate, len(demoPlayers), clk.Now()); err != nil {
		return "", err
	}
	answers := map[int]int{}
	order := []int{0} // the second push is Pub/Sub redelivering the first
	for i := range demoPlayers {
		order = append(order, i)
	}
	for _, i := range order {
		clk.Advance(workerEvery)
		p := demoPlayers[i]
		body := map[string]any{"player_lookup": p, "game_date": gameDate, "predictions_generated": 5,
			"batch_id": demoBatchID, "timestamp": clk.Now().Format(time.RFC3339), "worker_instance": fmt.Sprintf("worker-%d", i%3)}
		id := fmt.Sprintf("worker-%d", i)
		code, err := post(ctx, base+"/PredictionCompletions", id, body)
		if err != nil || code >= 300 {
			return "", fmt.Errorf("demo: completion of %s: status %d, %v", p, code, err)
		}
		answers[code]++
	}
	return fmt.Sprintf("%d recorded (HTTP 204), %d duplicate (HTTP 200)", answers[http.StatusNoContent], answers[http.StatusOK]), nil
}

// post delivers a Pub/Sub push request, as a push subscription would.
func post(ctx context.Context, url, id string, body map[string]any) (int, error) {
	data := []byte("{}")
	if body != nil {
		data, _ = json.Marshal(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(envelope.PushBody(id, data, nil, time.Now())))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// decision summarises the gate document after a step.
func decision(ctx context.Context, a *app.App, s step, code int) string {
	status := fmt.Sprintf("HTTP %d", code)
	if s.ep == "Sweep" {
		return status
	}
	p, _ := a.Cfg.Phase(s.ep)
	snap, err := a.FS.Collection(p.Collection).Doc(gameDate).Get(ctx)
	if err != nil {
		return status + ", gate unreadable: " + err.Error()
	}
	d := snap.Data()
	parts := []string{status, fmt.Sprintf("%v/%d complete", d["_completed_count"], len(p.Expected))}
	if code == http.StatusOK {
		parts = append(parts, "duplicate")
	}
	if d["_triggered"] == true {
		parts = append(parts, "triggered")
	}
	if late, _ := d["_late_processors"].([]any); len(late) > 0 {
		parts = append(parts, fmt.Sprintf("late %v", late))
	}
	if u, _ := d["_unexpected"].(map[string]any); len(u) > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected", len(u)))
	}
	if f, _ := d["_failed_attempts"].(map[string]any); len(f) > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", len(f)))
	}
	return strings.Join(parts, ", ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// ensureEmulators starts the emulators unless the environment names a
// pair, and returns what stops them.
func ensureEmulators(ctx context.Context, out io.Writer) (func(), error) {
	if os.Getenv("FIRESTORE_EMULATOR_HOST") != "" && os.Getenv("PUBSUB_EMULATOR_HOST") != "" {
		return func() {}, nil
	}
	fmt.Fprintln(out, "starting the Firestore and Pub/Sub emulators…")
	e, err := emulator.Start(ctx, "")
	if err != nil {
		return nil, err
	}
	os.Setenv("FIRESTORE_EMULATOR_HOST", e.FirestoreHost)
	os.Setenv("PUBSUB_EMULATOR_HOST", e.PubSubHost)
	return e.Stop, nil
}
