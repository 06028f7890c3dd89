// Package bqtest gives tests a real BigQuery emulator (goccy's, built by
// `make bigquery-emulator`): one process per test, so every test has its own
// tables. Tests that need it skip, saying how to build it, when the binary
// is absent; `make test` then prints one line about it at the end.
package bqtest

import (
	"context"
	"os"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"

	"github.com/phasegate/phasegate/internal/bqclient"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/history"
)

// Env is one test's emulator and a client on it.
type Env struct {
	Emu      *emulator.BigQuery
	Client   *bigquery.Client
	datasets map[string]bool // created by this test
}

// Project is the emulator's project; tests use it as the data project.
const Project = "phasegate-bq"

// Start starts an emulator for t, or skips t when none is built.
func Start(t testing.TB) *Env {
	t.Helper()
	bin, ok := emulator.BigQueryBinary()
	if !ok {
		t.Skipf("BigQuery emulator not built (%s): run `make bigquery-emulator`", bin)
	}
	ctx := context.Background()
	e, err := emulator.StartBigQuery(ctx, bin, Project, os.Getenv("PHASEGATE_EMULATOR_LOGS"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	c, err := bqclient.New(ctx, Project, e.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Env{Emu: e, Client: c, datasets: map[string]bool{}}
}

// Ctx returns a context with a deadline: the client retries a 500 until its
// context ends, and the emulator answers 500 to some requests for good.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Check fails t, naming a dead emulator as such.
func (e *Env) Check(t testing.TB, err error, what string) {
	t.Helper()
	if err == nil {
		return
	}
	if died := e.Emu.Died(); died != nil {
		t.Fatalf("%s: %v (%v)", what, err, died)
	}
	t.Fatalf("%s: %v", what, err)
}

// Table creates dataset.table (and the dataset when missing) with a DATE
// column dateCol and a payload column.
func (e *Env) Table(t testing.TB, dataset, table, dateCol string) {
	t.Helper()
	ctx := Ctx(t)
	ds := e.Dataset(t, dataset)
	schema := bigquery.Schema{
		{Name: dateCol, Type: bigquery.DateFieldType, Required: true},
		{Name: "player_lookup", Type: bigquery.StringFieldType},
	}
	err := ds.Table(table).Create(ctx, &bigquery.TableMetadata{Schema: schema,
		TimePartitioning: &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: dateCol}})
	e.Check(t, err, "create table "+dataset+"."+table)
}

// Rows inserts n rows dated date into dataset.table.
func (e *Env) Rows(t testing.TB, dataset, table, dateCol string, date civil.Date, n int) {
	t.Helper()
	rows := make([]*bigquery.ValuesSaver, 0, n)
	schema := bigquery.Schema{{Name: dateCol, Type: bigquery.DateFieldType}, {Name: "player_lookup", Type: bigquery.StringFieldType}}
	for i := range n {
		rows = append(rows, &bigquery.ValuesSaver{Schema: schema, Row: []bigquery.Value{date, "player" + string(rune('a'+i%26))}})
	}
	e.Check(t, e.Client.Dataset(dataset).Table(table).Inserter().Put(Ctx(t), rows), "insert into "+dataset+"."+table)
}

// Dataset creates dataset the first time this test names it.
func (e *Env) Dataset(t testing.TB, dataset string) *bigquery.Dataset {
	t.Helper()
	ds := e.Client.Dataset(dataset)
	if !e.datasets[dataset] {
		e.Check(t, ds.Create(Ctx(t), &bigquery.DatasetMetadata{}), "create dataset "+dataset)
		e.datasets[dataset] = true
	}
	return ds
}

// Count runs a query whose one row has one integer column n.
func (e *Env) Count(t testing.TB, sql string, params ...bigquery.QueryParameter) int64 {
	t.Helper()
	q := e.Client.Query(sql)
	q.Parameters = params
	it, err := q.Read(Ctx(t))
	e.Check(t, err, "query")
	var row struct{ N int64 }
	e.Check(t, it.Next(&row), "read")
	return row.N
}

// HistoryTable creates nba_orchestration.phase_execution_log as the running
// system has it.
func (e *Env) HistoryTable(t testing.TB) {
	t.Helper()
	err := e.Dataset(t, "nba_orchestration").Table("phase_execution_log").
		Create(Ctx(t), &bigquery.TableMetadata{Schema: history.Schema})
	e.Check(t, err, "create phase_execution_log")
}

// HistoryRows counts phase_execution_log rows of phase with status.
func (e *Env) HistoryRows(t testing.TB, phase, status string) int64 {
	t.Helper()
	return e.Count(t, "SELECT COUNT(*) AS n FROM `"+Project+".nba_orchestration.phase_execution_log` WHERE phase_name = @p AND status = @s",
		bigquery.QueryParameter{Name: "p", Value: phase}, bigquery.QueryParameter{Name: "s", Value: status})
}
