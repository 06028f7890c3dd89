package faults

// The seams of issue 16: each test tries, from outside (the messages a
// consumer receives, Slack's posts, BigQuery's rows, Health, the contract's
// fields), one place where a side effect sequenced by hand leaked before
// the effect log. Every one failed on the revision before it.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/firestore"
	"time"

	"cloud.google.com/go/civil"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/bqtest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/legacytest"
	"github.com/phasegate/phasegate/internal/slacktest"
)

// sweepPast moves the clock past every lease and the first backoffs and
// runs the sweep, rounds times.
func sweepPast(t *testing.T, e *apptest.Env, rounds int) {
	t.Helper()
	for i := range rounds {
		e.Clock.Advance(2 * time.Minute)
		if c := e.PushOnce("Sweep", fmt.Sprintf("sweep-%d-%d", time.Now().UnixNano(), i), map[string]any{}); c >= 300 && c < 500 {
			t.Fatalf("sweep answered %d", c)
		}
	}
}

func triggerIDs(t *testing.T, msgs []*pubsubpb.PubsubMessage) []string {
	t.Helper()
	var ids []string
	for _, m := range msgs {
		var g gate.Message
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, g.TriggerID)
	}
	slices.Sort(ids)
	return ids
}

func deliverAll(t *testing.T, e *apptest.Env, ep, date, exec string, processors []string) {
	t.Helper()
	for _, p := range processors {
		m := apptest.Completion(p, date, "success")
		m["execution_id"] = exec + "-" + p
		if c := e.Deliver(ep, exec+"-"+p, m); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
}

// A date re-run after its gate document was deleted gets a trigger_id
// never used before, and ends triggered: before the generation ledger the
// re-run published phase4_to_phase5:…:1 again, which a consumer that drops
// repeated ids dropped; with history on, the confirm's outbox create failed
// for ever and the same trigger went out after every lease.
func TestRerunAfterDeleteGetsANewTriggerID(t *testing.T) {
	for _, withHistory := range []bool{false, true} {
		t.Run(fmt.Sprintf("history=%v", withHistory), func(t *testing.T) {
			var opts []apptest.Option
			var bq *bqtest.Env
			if withHistory {
				bq = bqtest.Start(t)
				bq.HistoryTable(t)
				opts = append(opts, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), apptest.WithConfig(func(c *config.Config) {
					c.BigQuery.DataChecks = config.Off
				}))
			}
			e := apptest.New(t, opts...)
			sub := e.Sub("nba-predictions-trigger")
			deliverAll(t, e, "Phase4To5", date, "night", phase4)
			if _, err := e.App.FS.Doc("phase4_completion/" + date).Delete(context.Background()); err != nil {
				t.Fatal(err)
			}
			deliverAll(t, e, "Phase4To5", date, "rerun", phase4)
			sweepPast(t, e, 3)
			got := triggerIDs(t, sub.Drain(t, 2*time.Second))
			want := []string{"phase4_to_phase5:" + date + ":1", "phase4_to_phase5:" + date + ":2"}
			if !slices.Equal(got, want) {
				t.Fatalf("triggers %v, want %v", got, want)
			}
			if doc := e.Doc("phase4_completion/" + date); doc["_trigger_state"] != "published" || doc["_triggered"] != true {
				t.Fatalf("re-run gate not closed: %v %v", doc["_trigger_state"], doc["_triggered"])
			}
			if withHistory {
				if n := bq.HistoryRows(t, "phase4_to_phase5", "complete"); n != 2 {
					t.Fatalf("%d history rows, want one per trigger", n)
				}
			}
		})
	}
}

// A gate triggered by a revision before the generation ledger (its ledger
// missing) and then deleted and re-run still gets a trigger_id never used:
// the first sweep of this revision carries the gate's generation into the
// ledger, and so does `phasegate effects take-over` (SeedLedger).
func TestRerunAfterLedgerlessTriggerGetsANewTriggerID(t *testing.T) {
	ctx := context.Background()
	e := apptest.New(t)
	sub := e.Sub("nba-predictions-trigger")
	deliverAll(t, e, "Phase4To5", date, "night", phase4)
	ledgers := e.App.FS.Collection(gate.LedgerCollection)
	old, err := ledgers.Documents(ctx).GetAll()
	if err != nil || len(old) != 1 {
		t.Fatalf("ledgers %d %v, want the night's", len(old), err)
	}
	if _, err := old[0].Ref.Delete(ctx); err != nil { // as an earlier revision left it
		t.Fatal(err)
	}
	sweepPast(t, e, 1) // this revision's first sweep
	if _, err := ledgers.Doc(old[0].Ref.ID).Get(ctx); err != nil {
		t.Fatalf("the first sweep did not carry the gate into the ledger: %v", err)
	}
	seeded := 0
	for _, g := range e.App.Gates {
		n, err := g.SeedLedger(ctx, 1) // the operator's take-over, a page of one
		if err != nil {
			t.Fatal(err)
		}
		seeded += n
	}
	if seeded != 1 {
		t.Fatalf("the take-over read %d triggered gates, want 1", seeded)
	}

	if _, err := e.App.FS.Doc("phase4_completion/" + date).Delete(ctx); err != nil {
		t.Fatal(err)
	}
	deliverAll(t, e, "Phase4To5", date, "rerun", phase4)
	got := triggerIDs(t, sub.Drain(t, 2*time.Second))
	want := []string{"phase4_to_phase5:" + date + ":1", "phase4_to_phase5:" + date + ":2"}
	if !slices.Equal(got, want) {
		t.Fatalf("triggers %v, want %v", got, want)
	}
}

// A partial trigger's alert never stands between its publish and its
// confirm. Slack hangs; the instance dies while it hangs, once the trigger
// is confirmed or 3 s passed: before, the confirm waited for Slack, so the
// trigger was left published and unconfirmed, and went out a second time
// after the lease.
func TestSlackHangingNeverDelaysTheConfirm(t *testing.T) {
	f := apptest.NewFaults()
	e := apptest.New(t, f.Option(t), apptest.WithConfig(func(c *config.Config) {
		c.Alerts.SendBudget, c.Alerts.MaxElapsed, c.Alerts.RequestTimeout = 5*time.Second, 6*time.Second, 8*time.Second
	}))
	sub := e.Sub("nba-phase4-trigger")
	var confirmed atomic.Bool
	f.AfterCommit(func(c *firestorepb.CommitRequest) {
		for _, w := range c.Writes {
			if v, ok := w.GetUpdate().GetFields()["_triggered"]; ok && v.GetBooleanValue() && strings.Contains(w.GetUpdate().GetName(), "/phase3_completion/") {
				confirmed.Store(true)
			}
		}
	})
	var once sync.Once
	e.Slack.OnRequest = func(string) {
		once.Do(func() {
			go func() {
				for deadline := time.Now().Add(3 * time.Second); !confirmed.Load() && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				f.Kill()
			}()
		})
	}
	e.Slack.Script(slacktest.Reply{Status: 200, Delay: 8 * time.Second})
	pending := map[string]map[string]any{}
	for _, p := range []string{"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor"} {
		m := apptest.Completion(p, date, "success")
		if c := e.PushOnce("Phase3To4", "m-"+p, m); c >= 500 {
			pending["m-"+p] = m
		}
	}
	if f.Killed() != 1 {
		t.Fatal("the instance did not die while Slack hung")
	}
	e = e.On(e.Instance())
	for id, m := range pending {
		e.Deliver("Phase3To4", id, m)
	}
	sweepPast(t, e, 3)
	if got := triggerIDs(t, sub.Drain(t, 2*time.Second)); !slices.Equal(got, []string{"phase3_to_phase4:" + date + ":1"}) {
		t.Fatalf("triggers %v, want the one", got)
	}
}

// A publish whose answer is lost after Pub/Sub took it is one try: the
// client's own retries are off, and the repeat the effect log makes is
// counted. Before, the client retried inside the call and the copy went
// out uncounted.
func TestAmbiguousPublishCopyIsCounted(t *testing.T) {
	var lost atomic.Bool
	intercept := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if r, ok := req.(*pubsubpb.PublishRequest); ok && err == nil && strings.HasSuffix(r.Topic, "/nba-predictions-trigger") && lost.CompareAndSwap(false, true) {
			return status.Error(codes.Unavailable, "injected: the answer was lost after Pub/Sub took the message")
		}
		return err
	}
	e := apptest.New(t, apptest.WithPubSubOptions(option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(intercept))))
	sub := e.Sub("nba-predictions-trigger")
	deliverAll(t, e, "Phase4To5", date, "night", phase4)
	sweepPast(t, e, 2)
	got := triggerIDs(t, sub.Drain(t, 2*time.Second))
	if !lost.Load() {
		t.Fatal("no publish answer was lost")
	}
	counted := e.Metrics.Get("effects.possible_copy.ambiguous") + e.Metrics.Get("effects.possible_copy.crash")
	if int64(len(got)) != 1+counted {
		t.Fatalf("the consumer saw %d copies of %v, %d counted: every copy must be counted", len(got), got, counted)
	}
}

// seedCheck creates the tables of phase's data check, with rows on the date
// for those in withRows.
func seedCheck(t *testing.T, bq *bqtest.Env, phase, date string, withRows ...string) {
	t.Helper()
	p, _ := config.Default().Phase(phase)
	d, _ := gamedate.Parse(date)
	for _, tb := range p.DataCheck.Tables {
		ds, name, _ := strings.Cut(tb.Table, ".")
		bq.Table(t, ds, name, tb.DateColumn)
		bq.Rows(t, ds, name, tb.DateColumn, civil.Date(d.AddDays(-1)), 1)
		if slices.Contains(withRows, tb.Table) {
			bq.Rows(t, ds, name, tb.DateColumn, civil.Date(d), 4)
		}
	}
}

func slackTexts(e *apptest.Env) []string {
	var out []string
	for _, p := range e.Slack.Delivered() {
		out = append(out, p.Path+" "+p.Text)
	}
	return out
}

// The data check's "resolved" follows its BLOCKED alert whichever path
// publishes the trigger: before, it went out only from the evaluation that
// saw the pass and also published and confirmed; one failed publish left
// the BLOCKED alert open for ever.
func TestDataCheckResolvedWhenThePublishFailsOnce(t *testing.T) {
	bq := bqtest.Start(t)
	seedCheck(t, bq, "phase3_to_phase4", date)
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), apptest.FailPublishes("nba-phase4-trigger", 1),
		apptest.WithConfig(func(c *config.Config) { c.BigQuery.History = false }))
	sub := e.Sub("nba-phase4-trigger")
	deliverAll(t, e, "Phase3To4", date, "night", phase3)
	p, _ := config.Default().Phase("phase3_to_phase4")
	d, _ := gamedate.Parse(date)
	for _, tb := range p.DataCheck.Tables {
		ds, name, _ := strings.Cut(tb.Table, ".")
		bq.Rows(t, ds, name, tb.DateColumn, civil.Date(d), 4)
	}
	sweepPast(t, e, 4)
	if got := triggerIDs(t, sub.Drain(t, 2*time.Second)); len(got) != 1 {
		t.Fatalf("triggers %v, want one", got)
	}
	texts := slackTexts(e)
	blocked := slices.IndexFunc(texts, func(s string) bool { return strings.Contains(s, "BLOCKED") })
	resolved := slices.IndexFunc(texts, func(s string) bool { return strings.Contains(s, "Resolved") && strings.Contains(s, "R-008") })
	if blocked < 0 || resolved < blocked {
		t.Fatalf("slack %q: want the BLOCKED alert, then its resolved", texts)
	}
}

// The alerts a claim owes are in the claim's own commit: when that commit
// fails, the redelivery decides again, alerts included. Before, the claim
// was committed first and a degraded check's warning that could not be
// recorded was never raised again by whoever finished the claim.
func TestDegradedAlertSurvivesAFailedRecord(t *testing.T) {
	bq := bqtest.Start(t)
	seedCheck(t, bq, "phase4_to_phase5", date, "nba_predictions.ml_feature_store_v2", "nba_precompute.player_daily_cache",
		"nba_precompute.player_composite_factors", "nba_precompute.player_shot_zone_analysis") // one table empty: degraded
	f := apptest.NewFaults()
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project), f.Option(t),
		apptest.WithConfig(func(c *config.Config) { c.BigQuery.History = false }))
	// The first write of an alert's record fails, wherever alerts are kept.
	for _, coll := range []string{"orchestrator_alerts", "orchestrator_effects"} {
		f.At(coll, 0, apptest.Fail)
	}
	sub := e.Sub("nba-predictions-trigger")
	for _, p := range phase4 {
		e.PushOnce("Phase4To5", "m-"+p, apptest.Completion(p, date, "success"))
	}
	e = e.On(e.Instance())
	deliverAll(t, e, "Phase4To5", date, "redelivery", phase4[4:])
	sweepPast(t, e, 3)
	if got := triggerIDs(t, sub.Drain(t, 2*time.Second)); len(got) != 1 {
		t.Fatalf("triggers %v, want one", got)
	}
	var degraded int
	for _, s := range slackTexts(e) {
		if strings.Contains(s, "degraded") {
			degraded++
		}
	}
	if degraded != 1 {
		t.Fatalf("slack %q: want one degraded warning", slackTexts(e))
	}
}

// Two deliveries of one message for one player that meet in one group
// commit: neither is acknowledged before the player is stored. Before, the
// second answered "duplicate" at once; when the group's commit failed the
// message was acknowledged (Pub/Sub takes any 2xx) and the player lost.
func TestDuplicateInAGroupWaitsForTheFirstCopy(t *testing.T) {
	f := apptest.NewFaults()
	// Subcollection only: no array merge writes the batch meanwhile.
	e := env(t, f, apptest.WithConfig(func(c *config.Config) { c.Batch.DualWrite = config.Off }))
	sub := e.Sub("nba-phase5-predictions-complete")
	const id = "grp"
	createBatch(t, e, id, 3)
	// Two players on one counter shard (a new 3-player batch has 16).
	var same []string
	for i := 0; len(same) < 2; i++ {
		p := fmt.Sprintf("player%04d", i)
		if len(same) == 0 || batch.ShardOf(p, batch.LegacyShards) == batch.ShardOf(same[0], batch.LegacyShards) {
			same = append(same, p)
		}
	}
	// Commits under the batch: its layout, the first player's (held), then
	// the group of the second player's two deliveries (failed).
	f.At(batch.Collection, 1, apptest.Hold)
	f.At(batch.Collection, 2, apptest.Fail)
	var wg sync.WaitGroup
	wg.Go(func() { e.PushOnce("PredictionCompletions", "w-0", worker(id, same[0])) })
	<-f.Held()
	codes := make([]int, 2)
	for i := range codes {
		wg.Go(func() { codes[i] = e.PushOnce("PredictionCompletions", "w-1", worker(id, same[1])) })
	}
	time.Sleep(500 * time.Millisecond) // both wait behind the held commit, in one group
	f.Release()
	wg.Wait()
	if slices.ContainsFunc(codes, func(c int) bool { return c < 300 }) {
		t.Logf("message w-1 acknowledged (answers %v): Pub/Sub will not deliver it again", codes)
	} else {
		e.Deliver("PredictionCompletions", "w-1", worker(id, same[1]))
	}
	e.Deliver("PredictionCompletions", "w-2", worker(id, "player9999"))
	sweepPast(t, e, 2)
	d := e.Doc(batch.Collection + "/" + docid.Encode(id) + "/completions/" + docid.Encode(same[1]))
	if d == nil {
		t.Fatalf("player %s lost (answers %v)", same[1], codes)
	}
	if msgs := sub.Drain(t, time.Second); len(msgs) != 1 {
		t.Fatalf("%d batch completions, want 1", len(msgs))
	}
}

func env(t *testing.T, f *apptest.Faults, more ...apptest.Option) *apptest.Env {
	if f != nil {
		more = append(more, f.Option(t))
	}
	return apptest.New(t, more...)
}

func createBatch(t *testing.T, e *apptest.Env, id string, expected int) {
	t.Helper()
	now := e.Clock.Now()
	doc := map[string]any{"batch_id": id, "game_date": date, "expected_players": expected, "completed_players": []string{},
		"total_predictions": 0, "is_complete": false, "start_time": now, "updated_at": now, "correlation_id": "corr-" + id}
	if expected < 0 { // a batch the coordinator wrote without its date
		delete(doc, "game_date")
		doc["expected_players"] = -expected
	}
	if _, err := e.App.FS.Collection(batch.Collection).Doc(docid.Encode(id)).Create(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
}

func worker(batchID, player string) map[string]any {
	return map[string]any{"player_lookup": player, "game_date": date, "predictions_generated": 3, "batch_id": batchID}
}

// countingTransport counts the HTTP requests a BigQuery client makes.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// A history row BigQuery can never take (its batch has no game date) is
// refused once and ends failed, with one alert, and Health counts it.
// Before, every sweep tried it again, without end.
func TestUnwritableRowEndsFailed(t *testing.T) {
	bq := bqtest.Start(t)
	bq.HistoryTable(t)
	calls := &countingTransport{}
	e := apptest.New(t, apptest.WithBigQuery(bq.Emu.Host, bqtest.Project),
		apptest.WithBigQueryOptions(option.WithHTTPClient(&http.Client{Transport: calls})),
		apptest.WithConfig(func(c *config.Config) { c.BigQuery.DataChecks = config.Off }))
	const id = "nodate"
	createBatch(t, e, id, -2)
	for i, p := range []string{"a", "b"} {
		e.Deliver("PredictionCompletions", fmt.Sprint("w-", i), worker(id, p))
	}
	sweepPast(t, e, 2)
	before := calls.n.Load()
	sweepPast(t, e, 3)
	if after := calls.n.Load(); after != before {
		t.Fatalf("three more sweeps sent %d BigQuery requests for a row it can never take", after-before)
	}
	var h struct {
		EffectsFailed *int64 `json:"effects_failed"`
	}
	rec := get(t, e, "Health")
	if err := json.Unmarshal(rec, &h); err != nil || h.EffectsFailed == nil || *h.EffectsFailed != 1 {
		t.Fatalf("Health %s: want effects_failed 1", rec)
	}
	var gaveUp int
	for _, s := range slackTexts(e) {
		if strings.Contains(s, "given up") {
			gaveUp++
		}
	}
	if gaveUp != 1 {
		t.Fatalf("slack %q: want one alert that the row was given up", slackTexts(e))
	}
}

func get(t *testing.T, e *apptest.Env, ep string) []byte {
	t.Helper()
	h, _ := e.App.Handler(ep)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+ep, nil))
	return rec.Body.Bytes()
}

// After its instances are gone, one sweep later the legacy array holds
// every completed player up to its cap. Before, the array was merged by a
// goroutine of the instance that recorded the players, which got no CPU
// after its answers and died with it.
func TestLegacyArrayAfterTheInstanceIsGone(t *testing.T) {
	f := apptest.NewFaults()
	e := env(t, f)
	const id = "arr"
	createBatch(t, e, id, 150)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 120 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			e.Deliver("PredictionCompletions", fmt.Sprint("w-", i), worker(id, fmt.Sprintf("p%03d", i)))
		})
	}
	wg.Wait()
	f.Kill() // scaled in right after its last answer
	e = e.On(e.Instance())
	time.Sleep(2500 * time.Millisecond) // the array's merges stay 2 s behind the newest completion
	sweepPast(t, e, 1)
	arr, _ := e.Doc(batch.Collection + "/" + id)["completed_players"].([]any)
	if len(arr) != 120 {
		t.Fatalf("completed_players holds %d of 120 players one sweep after", len(arr))
	}
}

// A sweep that cannot read what it owes is not a sweep: it answers 5xx
// and writes no heartbeat. Before, a failed outbox query was logged, and
// the sweep answered 2xx and said all was well.
func TestSweepWithUnreadableOutboxIsNotDone(t *testing.T) {
	opt, failed := apptest.FailQueries(t, "orchestrator_alerts", "orchestrator_history", "orchestrator_effects")
	e := apptest.New(t, opt)
	if c := e.PushOnce("Sweep", "s1", map[string]any{}); c < 500 {
		t.Fatalf("sweep answered %d with its outbox unreadable, want 5xx", c)
	}
	if failed.Load() == 0 {
		t.Fatal("no outbox query was made")
	}
	var h struct {
		LastSweepAt *time.Time `json:"last_sweep_at"`
	}
	if err := json.Unmarshal(get(t, e, "Health"), &h); err != nil || h.LastSweepAt != nil {
		t.Fatalf("Health says the sweep ran at %v (%v)", h.LastSweepAt, err)
	}
}

// One Slack route down with a backlog never starves another. Before, the
// sweep took the 50 oldest alerts of any route, and with the error route's
// breaker open they stayed the oldest for ever.
func TestOneRouteDownNeverStarvesAnother(t *testing.T) {
	down, up := slacktest.New(), slacktest.New()
	t.Cleanup(down.Close)
	t.Cleanup(up.Close)
	down.SetDefault(slacktest.Reply{Status: 500})
	up.SetDefault(slacktest.Reply{Status: 500})
	const openFor = 300 * time.Millisecond // each route's breaker: short, so the warning route's closes again
	e := apptest.New(t, apptest.WithSlackOptions(alert.WithBreaker(5, openFor)), apptest.WithConfig(func(c *config.Config) {
		c.Alerts.WebhookURLError, c.Alerts.WebhookURLWarning, c.Alerts.WebhookURL = down.Hook("error"), up.Hook("warning"), up.Hook("info")
		c.Alerts.SendBudget, c.Alerts.MaxElapsed, c.Alerts.RequestTimeout = 300*time.Millisecond, 400*time.Millisecond, 100*time.Millisecond
	}))
	first, _ := gamedate.Parse("2026-01-01")
	for i := range 55 { // 55 error alerts: a processor failed on 55 dates
		d := first.AddDays(-i).String()
		e.Deliver("Phase2To3", "f-"+d, apptest.Completion("NbacScheduleProcessor", d, "failed"))
	}
	e.Clock.Advance(time.Minute)
	e.Deliver("Phase2To3", "u-1", apptest.Completion("SomethingNewProcessor", date, "success")) // a warning
	up.SetDefault(slacktest.Reply{Status: 200})
	for range 3 {
		time.Sleep(2 * openFor)
		e.Clock.Advance(2 * time.Hour)
		e.PushOnce("Sweep", fmt.Sprint("s-", time.Now().UnixNano()), map[string]any{})
	}
	if !slices.ContainsFunc(up.Delivered(), func(p slacktest.Post) bool { return strings.Contains(p.Text, "unexpected processor") }) {
		t.Fatalf("the warning never reached its working route (%d posts there)", len(up.Delivered()))
	}
}

// A document the running system wrote and never triggered is reported
// overdue, and the trigger the sweep fires for one carries the night's
// correlation id (its processor entries'). Before, such a document (no
// _open, string timestamps) was never reported, and its trigger's
// correlation_id was empty.
func TestTakenOverDocumentOverdueAndCorrelated(t *testing.T) {
	t.Run("overdue", func(t *testing.T) {
		e := apptest.New(t)
		legacytest.Put(t, e.App.FS, "phase3_completion/"+date, "phase3_untriggered")
		e.Clock.Advance(4 * time.Hour)
		sweepPast(t, e, 1)
		if !slices.ContainsFunc(slackTexts(e), func(s string) bool { return strings.Contains(s, "overdue") && strings.Contains(s, "phase3_to_phase4") }) {
			t.Fatalf("slack %q: want the phase 3 gate reported overdue", slackTexts(e))
		}
		ctx := context.Background()
		if r := e.App.Health.Check(ctx); r.Overdue != 1 {
			t.Fatalf("Health overdue %d, want the taken-over gate", r.Overdue)
		}
		// The running system triggers it (it writes no _open): the warning
		// is resolved and Health counts it no more.
		if _, err := e.App.FS.Doc("phase3_completion/"+date).Update(ctx, []firestore.Update{{Path: "_triggered", Value: true}}); err != nil {
			t.Fatal(err)
		}
		sweepPast(t, e, 1)
		if !slices.ContainsFunc(slackTexts(e), func(s string) bool { return strings.Contains(s, "no longer overdue") }) {
			t.Fatalf("slack %q: want the warning resolved", slackTexts(e))
		}
		if r := e.App.Health.Check(ctx); r.Overdue != 0 {
			t.Fatalf("Health overdue %d after the trigger, want 0", r.Overdue)
		}
	})
	t.Run("correlation", func(t *testing.T) {
		e := apptest.New(t)
		sub := e.Sub("nba-predictions-trigger")
		legacytest.Put(t, e.App.FS, "phase4_completion/"+date, "phase4_untriggered")
		sweepPast(t, e, 1)
		msgs := sub.Drain(t, 2*time.Second)
		if len(msgs) != 1 {
			t.Fatalf("%d triggers, want tier3's", len(msgs))
		}
		var g gate.Message
		_ = json.Unmarshal(msgs[0].Data, &g)
		if g.CorrelationID != "p4-run-0119" {
			t.Fatalf("correlation_id %q, want the night's p4-run-0119", g.CorrelationID)
		}
	})
}

// Whatever phasegate keeps about its alerts and history rows expires once
// settled: each such document carries a field its collection's TTL policy
// (deploy/firestore.indexes.json) names. Before, orchestrator_alerts and
// orchestrator_history had none, and keys were kept "once ever".
func TestSettledRecordsExpire(t *testing.T) {
	b, err := os.ReadFile("../../deploy/firestore.indexes.json")
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		FieldOverrides []struct {
			CollectionGroup, FieldPath string
			TTL                        bool
		}
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	ttl := map[string]string{}
	for _, o := range idx.FieldOverrides {
		if o.TTL {
			ttl[o.CollectionGroup] = o.FieldPath
		}
	}
	e := apptest.New(t)
	deliverAll(t, e, "Phase2To3", date, "night", phase2[:5])
	e.Deliver("Phase2To3", "f", apptest.Completion(phase2[5], date, "failed"))
	deliverAll(t, e, "Phase2To3", date, "rerun", phase2[5:])
	sweepPast(t, e, 2)
	seen := 0
	for _, coll := range []string{"orchestrator_alerts", "orchestrator_history", "orchestrator_effects"} {
		docs, err := e.App.FS.Collection(coll).Documents(context.Background()).GetAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			seen++
			field, ok := ttl[coll]
			if !ok {
				t.Fatalf("%s has no TTL policy in deploy/firestore.indexes.json", coll)
			}
			if _, ok := d.Data()[field].(time.Time); !ok {
				t.Fatalf("%s/%s: no %s: it never expires: %v", coll, d.Ref.ID, field, d.Data())
			}
		}
	}
	if seen == 0 {
		t.Fatal("the night kept no record of its alerts")
	}
}
