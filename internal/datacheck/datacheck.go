// Package datacheck counts, in BigQuery, the rows an upstream phase wrote
// for a game date, before a gate lets the next phase start (CONTRACT §10).
//
// One evaluation is one parameterised query: a UNION ALL of one COUNT(*)
// per table, each filtered on the table's date column, so that BigQuery
// prunes every table to one partition. The job carries a cap on bytes
// billed, so a filter that stopped pruning fails the query instead of
// billing a scan of the whole season. Results are kept per (check, tables,
// date) for a short time, so a burst of events and the sweep do not query
// the same thing again.
package datacheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"google.golang.org/api/iterator"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Statuses of an evaluation, as the gate records them in _data_check.
const (
	Passed  = "passed"
	Blocked = "blocked"
	Error   = "error"
)

// Result is one evaluation.
type Result struct {
	Check  string           // the check's name
	Status string           // passed | blocked | error
	Counts map[string]int64 // dataset.table → rows for the date
	// Missing lists the checked tables without rows, in configured order.
	Missing []string
	// Met is whether the thresholds hold; Status is Blocked when they do
	// not, even for a monitor-only check (the gate decides what follows).
	Met            bool
	BytesProcessed int64
	CheckedAt      time.Time
	Err            error // set with Status Error
}

// Verified is the trigger's data_freshness_verified: every checked table
// holds rows.
func (r Result) Verified() bool { return r.Status == Passed && len(r.Missing) == 0 }

// Judge applies a check's thresholds to the counts of the tables checked:
// the critical ones among them must hold rows, and at least MinTables of
// them (all when 0, never more than were checked).
func Judge(c *config.DataCheck, tables []config.CheckTable, counts map[string]int64) (met bool, missing []string) {
	with := 0
	critical := true
	for _, t := range tables {
		if counts[t.Table] > 0 {
			with++
			continue
		}
		missing = append(missing, t.Table)
		if slices.Contains(c.Critical, t.Table) {
			critical = false
		}
	}
	need := c.MinTables
	if need == 0 || need > len(tables) {
		need = len(tables)
	}
	return critical && with >= need, missing
}

// Query returns the SQL of one evaluation over tables in project: one
// COUNT(*) per table filtered on its date column against the DATE parameter
// @game_date. Table and column names are validated configuration
// (config.ValidTable), never input, because BigQuery cannot take them as
// parameters.
func Query(project string, tables []config.CheckTable) string {
	parts := make([]string, 0, len(tables))
	for _, t := range tables {
		parts = append(parts, fmt.Sprintf("SELECT '%s' AS table_name, COUNT(*) AS row_count FROM `%s.%s` WHERE %s = @game_date",
			t.Table, project, t.Table, t.DateColumn))
	}
	return strings.Join(parts, "\nUNION ALL\n")
}

// Checker runs checks against BigQuery.
type Checker struct {
	bq      *bigquery.Client
	project string
	cfg     config.BigQuery
	clock   clock.Clock
	log     *slog.Logger
	metrics *metrics.Registry

	mu    sync.Mutex
	cache map[string]Result
}

// New returns a Checker querying tables in project (the data project).
func New(bq *bigquery.Client, project string, cfg config.BigQuery, clk clock.Clock, log *slog.Logger, m *metrics.Registry) *Checker {
	return &Checker{bq: bq, project: project, cfg: cfg, clock: clk, log: log, metrics: m, cache: map[string]Result{}}
}

// Run evaluates check over tables for date. A BigQuery failure is a Result
// with Status Error, never a pass: the caller holds the trigger and retries.
func (c *Checker) Run(ctx context.Context, check *config.DataCheck, tables []config.CheckTable, date gamedate.Date) Result {
	key := cacheKey(check, tables, date)
	now := c.clock.Now()
	c.mu.Lock()
	if r, ok := c.cache[key]; ok && now.Sub(r.CheckedAt) < c.cfg.CacheTTL {
		c.mu.Unlock()
		c.metrics.Inc("datacheck.cache_hits")
		return r
	}
	c.mu.Unlock()

	r := Result{Check: check.Name, CheckedAt: now.UTC()}
	counts, bytes, err := c.count(ctx, tables, date)
	c.metrics.Inc("datacheck.queries")
	c.metrics.Add("datacheck.bytes_processed", bytes)
	r.BytesProcessed = bytes
	if err != nil {
		c.metrics.Inc("datacheck.errors")
		r.Status, r.Err = Error, err
		r.Missing = tableNames(tables)
		c.log.ErrorContext(ctx, "data check query failed", "check", check.Name, "game_date", date.String(), "error", err.Error())
		return r
	}
	r.Counts = counts
	r.Met, r.Missing = Judge(check, tables, counts)
	r.Status = Passed
	if !r.Met {
		r.Status = Blocked
	}
	c.log.InfoContext(ctx, "data check evaluated", "check", check.Name, "game_date", date.String(),
		"status", r.Status, "missing_tables", r.Missing, "bytes_processed", bytes, "tables", len(tables))
	c.mu.Lock()
	for k, old := range c.cache { // keep the map from growing over a season
		if now.Sub(old.CheckedAt) >= c.cfg.CacheTTL {
			delete(c.cache, k)
		}
	}
	c.cache[key] = r
	c.mu.Unlock()
	return r
}

func cacheKey(check *config.DataCheck, tables []config.CheckTable, date gamedate.Date) string {
	return check.Name + "|" + date.String() + "|" + strings.Join(tableNames(tables), ",")
}

func tableNames(tables []config.CheckTable) []string {
	out := make([]string, 0, len(tables))
	for _, t := range tables {
		out = append(out, t.Table)
	}
	return out
}

// Job returns the query job of one evaluation, configured but not run: the
// parameter, the bytes cap. Tests inspect it.
func (c *Checker) Job(tables []config.CheckTable, date gamedate.Date) *bigquery.Query {
	q := c.bq.Query(Query(c.project, tables))
	q.Parameters = []bigquery.QueryParameter{{Name: "game_date", Value: civil.Date(date)}}
	q.MaxBytesBilled = c.cfg.MaxBytesBilled
	return q
}

// ErrNoTables is returned for a check whose mode leaves nothing to count.
var ErrNoTables = errors.New("datacheck: no tables to check")

func (c *Checker) count(ctx context.Context, tables []config.CheckTable, date gamedate.Date) (map[string]int64, int64, error) {
	if len(tables) == 0 {
		return nil, 0, ErrNoTables
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.QueryTimeout)
	defer cancel()
	job, err := c.Job(tables, date).Run(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("datacheck: start query: %w", err)
	}
	st, err := job.Wait(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("datacheck: query job %s: %w", job.ID(), err)
	}
	var bytes int64
	if st.Statistics != nil {
		bytes = st.Statistics.TotalBytesProcessed
	}
	if err := st.Err(); err != nil {
		return nil, bytes, fmt.Errorf("datacheck: query job %s: %w", job.ID(), err)
	}
	it, err := job.Read(ctx)
	if err != nil {
		return nil, bytes, fmt.Errorf("datacheck: read job %s: %w", job.ID(), err)
	}
	counts := make(map[string]int64, len(tables))
	for {
		var row struct {
			Table string `bigquery:"table_name"`
			Count int64  `bigquery:"row_count"`
		}
		err := it.Next(&row)
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, bytes, fmt.Errorf("datacheck: rows of job %s: %w", job.ID(), err)
		}
		counts[row.Table] = row.Count
	}
	for _, t := range tables {
		if _, ok := counts[t.Table]; !ok {
			return nil, bytes, fmt.Errorf("datacheck: job %s returned no count for %s", job.ID(), t.Table)
		}
	}
	return counts, bytes, nil
}
