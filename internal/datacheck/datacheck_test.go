package datacheck_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/phasegate/phasegate/internal/bqclient"
	"github.com/phasegate/phasegate/internal/bqtest"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/datacheck"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/rules"
)

var date = gamedate.Date{Year: 2026, Month: 1, Day: 19}

func check(t *testing.T, phase string) *config.DataCheck {
	t.Helper()
	p, ok := config.Default().Phase(phase)
	if !ok || p.DataCheck == nil {
		t.Fatalf("no default data check on %s", phase)
	}
	return p.DataCheck
}

func counts(c *config.DataCheck, withRows ...string) map[string]int64 {
	m := map[string]int64{}
	for _, t := range c.Tables {
		m[t.Table] = 0
		if slices.Contains(withRows, t.Table) {
			m[t.Table] = 42
		}
	}
	return m
}

func TestJudgeDefaults(t *testing.T) {
	r006, r008 := check(t, "phase4_to_phase5"), check(t, "phase3_to_phase4")
	const (
		fs  = "nba_predictions.ml_feature_store_v2"
		pdc = "nba_precompute.player_daily_cache"
		pcf = "nba_precompute.player_composite_factors"
		psz = "nba_precompute.player_shot_zone_analysis"
		tdz = "nba_precompute.team_defense_zone_analysis"
	)
	for _, tc := range []struct {
		name    string
		check   *config.DataCheck
		rows    []string
		met     bool
		missing int
	}{
		{"R-006 all five", r006, []string{fs, pdc, pcf, psz, tdz}, true, 0},
		{"R-006 three with both critical (degraded)", r006, []string{fs, pdc, pcf}, true, 2},
		{"R-006 only two of five", r006, []string{fs, pdc}, false, 3},
		{"R-006 critical player_daily_cache empty", r006, []string{fs, pcf, psz, tdz}, false, 1},
		{"R-006 critical feature store empty", r006, []string{pdc, pcf, psz, tdz}, false, 1},
		{"R-006 nothing", r006, nil, false, 5},
		{"R-008 every table", r008, tablesOf(r008), true, 0},
		{"R-008 one empty", r008, tablesOf(r008)[1:], false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			met, missing := datacheck.Judge(tc.check, tc.check.Tables, counts(tc.check, tc.rows...))
			if met != tc.met || len(missing) != tc.missing {
				t.Fatalf("met=%v missing=%v, want met=%v and %d missing", met, missing, tc.met, tc.missing)
			}
		})
	}
}

func tablesOf(c *config.DataCheck) []string {
	var out []string
	for _, t := range c.Tables {
		out = append(out, t.Table)
	}
	return out
}

// TestSameDayChecksOnlyRequiredTables: same-day and tomorrow runs of phase
// 3 produce only the upcoming_* context, so R-008 must not count the box
// score summaries of games not yet played.
func TestSameDayChecksOnlyRequiredTables(t *testing.T) {
	p, _ := config.Default().Phase("phase3_to_phase4")
	for _, mode := range []string{rules.ModeSameDay, rules.ModeTomorrow} {
		got := tablesOf(&config.DataCheck{Tables: p.DataCheck.TablesFor(rules.Required(p, mode))})
		if want := []string{"nba_analytics.upcoming_player_game_context"}; !slices.Equal(got, want) {
			t.Errorf("%s: checks %v, want %v", mode, got, want)
		}
	}
	if got := p.DataCheck.TablesFor(rules.Required(p, rules.ModeOvernight)); len(got) != 5 {
		t.Errorf("overnight checks %d tables, want 5", len(got))
	}
}

// TestEveryQueryFiltersItsPartitionAndCapsBytes builds the job of every
// default check in every mode and requires, per table, the equality filter
// on its date column against the DATE parameter, and a bytes cap.
func TestEveryQueryFiltersItsPartitionAndCapsBytes(t *testing.T) {
	cfg := config.Default()
	bq, err := bqclient.New(context.Background(), "p", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer bq.Close()
	c := datacheck.New(bq, "p", cfg.BigQuery, clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)), &metrics.Registry{})
	n := 0
	for _, p := range cfg.Phases {
		if p.DataCheck == nil {
			continue
		}
		for _, mode := range []string{rules.ModeDefault, rules.ModeOvernight, rules.ModeSameDay, rules.ModeTomorrow} {
			tables := p.DataCheck.TablesFor(rules.Required(&p, mode))
			q := c.Job(tables, date)
			n++
			if q.MaxBytesBilled <= 0 {
				t.Errorf("%s %s: no bytes cap", p.Name, mode)
			}
			if len(q.Parameters) != 1 || q.Parameters[0].Name != "game_date" {
				t.Fatalf("%s %s: parameters %v", p.Name, mode, q.Parameters)
			}
			if _, ok := q.Parameters[0].Value.(civil.Date); !ok {
				t.Errorf("%s %s: game_date is %T, want a DATE", p.Name, mode, q.Parameters[0].Value)
			}
			selects := strings.Split(q.Q, "UNION ALL")
			if len(selects) != len(tables) {
				t.Fatalf("%s %s: %d selects for %d tables", p.Name, mode, len(selects), len(tables))
			}
			for i, tb := range tables {
				re := regexp.MustCompile(fmt.Sprintf("FROM `p\\.%s` WHERE %s = @game_date\\s*$",
					regexp.QuoteMeta(tb.Table), regexp.QuoteMeta(tb.DateColumn)))
				if !re.MatchString(selects[i]) {
					t.Errorf("%s %s: %q lacks the partition filter %s", p.Name, mode, selects[i], re)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no default checks")
	}
}

func newChecker(t *testing.T, bq *bigquery.Client, clk clock.Clock, m *metrics.Registry) *datacheck.Checker {
	cfg := config.Default().BigQuery
	cfg.QueryTimeout = 20 * time.Second
	return datacheck.New(bq, bqtest.Project, cfg, clk, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
}

// seed creates every table of c and gives rows for date to those named.
func seed(t *testing.T, e *bqtest.Env, c *config.DataCheck, withRows ...string) {
	for _, tb := range c.Tables {
		ds, name, _ := strings.Cut(tb.Table, ".")
		e.Table(t, ds, name, tb.DateColumn)
		// A row on another date: the filter, not an empty table, makes a zero.
		e.Rows(t, ds, name, tb.DateColumn, civil.Date(date.AddDays(-1)), 2)
		if slices.Contains(withRows, tb.Table) {
			e.Rows(t, ds, name, tb.DateColumn, civil.Date(date), 3)
		}
	}
}

func TestDefaultChecksPassWithRowsOnEmulator(t *testing.T) {
	for _, phase := range []string{"phase2_to_phase3", "phase3_to_phase4", "phase4_to_phase5"} {
		t.Run(phase, func(t *testing.T) {
			e := bqtest.Start(t)
			c := check(t, phase)
			seed(t, e, c, tablesOf(c)...)
			m := &metrics.Registry{}
			r := newChecker(t, e.Client, clock.Real{}, m).Run(bqtest.Ctx(t), c, c.Tables, date)
			if r.Err != nil {
				e.Check(t, r.Err, "check")
			}
			if r.Status != datacheck.Passed || !r.Verified() || len(r.Missing) != 0 {
				t.Fatalf("result %+v, want passed with every table", r)
			}
			for _, tb := range c.Tables {
				if r.Counts[tb.Table] != 3 {
					t.Errorf("%s: %d rows, want 3 (the other date's 2 filtered out)", tb.Table, r.Counts[tb.Table])
				}
			}
			if m.Get("datacheck.queries") != 1 {
				t.Errorf("%d queries, want one for all %d tables", m.Get("datacheck.queries"), len(c.Tables))
			}
		})
	}
}

func TestR006BlocksOnEmulator(t *testing.T) {
	e := bqtest.Start(t)
	c := check(t, "phase4_to_phase5")
	// player_daily_cache (critical) empty for the date, the other four full.
	seed(t, e, c, "nba_predictions.ml_feature_store_v2", "nba_precompute.player_composite_factors",
		"nba_precompute.player_shot_zone_analysis", "nba_precompute.team_defense_zone_analysis")
	ck := newChecker(t, e.Client, clock.Real{}, &metrics.Registry{})
	r := ck.Run(bqtest.Ctx(t), c, c.Tables, date)
	e.Check(t, r.Err, "check")
	if r.Status != datacheck.Blocked || !slices.Equal(r.Missing, []string{"nba_precompute.player_daily_cache"}) {
		t.Fatalf("critical empty: %+v, want blocked on player_daily_cache", r)
	}
	// Only two of five: the critical pair, nothing else.
	other := date.AddDays(3)
	for _, tb := range c.Tables[:2] {
		ds, name, _ := strings.Cut(tb.Table, ".")
		e.Rows(t, ds, name, tb.DateColumn, civil.Date(other), 1)
	}
	r = ck.Run(bqtest.Ctx(t), c, c.Tables, other)
	e.Check(t, r.Err, "check")
	if r.Status != datacheck.Blocked || len(r.Missing) != 3 {
		t.Fatalf("2 of 5: %+v, want blocked with 3 missing", r)
	}
}

func TestCacheSavesRequeries(t *testing.T) {
	e := bqtest.Start(t)
	c := check(t, "phase4_to_phase5")
	seed(t, e, c, tablesOf(c)...)
	clk := clock.NewFake(time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC))
	m := &metrics.Registry{}
	ck := newChecker(t, e.Client, clk, m)
	for range 3 {
		e.Check(t, ck.Run(bqtest.Ctx(t), c, c.Tables, date).Err, "check")
	}
	if got := m.Get("datacheck.queries"); got != 1 {
		t.Fatalf("%d queries within the TTL, want 1", got)
	}
	clk.Advance(config.Default().BigQuery.CacheTTL)
	e.Check(t, ck.Run(bqtest.Ctx(t), c, c.Tables, date).Err, "check")
	if got := m.Get("datacheck.queries"); got != 2 {
		t.Fatalf("%d queries after the TTL, want 2", got)
	}
}

// TestServiceFailuresAreErrors: what BigQuery answers when it is down or
// out of quota is an error result, never a pass, and is not cached. The
// fake answers every request; no SQL runs in it.
func TestServiceFailuresAreErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"quota", http.StatusForbidden, `{"error":{"code":403,"message":"Quota exceeded","errors":[{"reason":"quotaExceeded"}]}}`},
		{"bytes cap", http.StatusBadRequest, `{"error":{"code":400,"message":"Query exceeded limit for bytes billed","errors":[{"reason":"bytesBilledLimitExceeded"}]}}`},
		{"server error until the deadline", http.StatusInternalServerError, `{"error":{"code":500,"message":"backend"}}`},
		{"hang until the deadline", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			stop := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if tc.status == 0 {
					select {
					case <-r.Context().Done():
					case <-stop:
					}
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			defer close(stop)
			bq, err := bqclient.New(context.Background(), "p", srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer bq.Close()
			cfg := config.Default().BigQuery
			cfg.QueryTimeout = 2 * time.Second
			m := &metrics.Registry{}
			ck := datacheck.New(bq, "p", cfg, clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
			c := check(t, "phase4_to_phase5")
			for range 2 {
				r := ck.Run(context.Background(), c, c.Tables, date)
				if r.Status != datacheck.Error || r.Err == nil || r.Verified() || len(r.Missing) != len(c.Tables) {
					t.Fatalf("result %+v, want an error holding every table as unverified", r)
				}
			}
			if m.Get("datacheck.queries") != 2 || m.Get("datacheck.errors") != 2 {
				t.Fatalf("metrics %v: errors must not be cached", m.Snapshot())
			}
			if calls.Load() == 0 {
				t.Fatal("the fake was never asked")
			}
		})
	}
}
