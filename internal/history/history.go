// Package history appends the night's phase boundaries — triggers, blocked
// data checks, batch completions — to the running system's BigQuery table
// nba_orchestration.phase_execution_log, which the operators' dashboards
// read (CONTRACT §10).
//
// A row is first recorded in Firestore (orchestrator_history/{key}) by a
// Create, which is what makes it at most one row per key: a redelivery or a
// second sweep finds the document and adds nothing. The insert into
// BigQuery is then tried within a short budget; what fails stays recorded as
// owed, and the sweep's Flush inserts it later, so BigQuery never delays or
// fails an orchestration event. The BigQuery emulator does not de-duplicate
// insertIds (and BigQuery does so only best-effort), so an insert that may
// have reached BigQuery before its sender died is first looked for, by its
// key in metadata, in the date's partition.
package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/docid"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Collection holds one document per row owed or written.
const Collection = "orchestrator_history"

// Values of the state field.
const (
	StatePending = "pending"
	StateWritten = "written"
)

const (
	flushLimit = 50
	// leaseMargin keeps a sweep off a row whose sender may still insert it.
	leaseMargin = 10 * time.Second
)

// Row is one phase_execution_log row in the running system's schema, plus
// the key that de-duplicates it (carried in metadata as history_key).
type Row struct {
	Key                string // trigger_id, batch id, or <phase>:<date>:blocked
	ExecutionTimestamp time.Time
	PhaseName          string // phase2_to_phase3 … prediction_batch
	GameDate           gamedate.Date
	StartTime          time.Time // zero: NULL
	DurationSeconds    float64
	Status             string // complete, partial, blocked, or the trigger reason
	CorrelationID      string
	Metadata           map[string]any
}

// Schema is phase_execution_log's (the running system's logger writes it).
var Schema = bigquery.Schema{
	{Name: "execution_timestamp", Type: bigquery.TimestampFieldType},
	{Name: "phase_name", Type: bigquery.StringFieldType},
	{Name: "game_date", Type: bigquery.DateFieldType},
	{Name: "start_time", Type: bigquery.TimestampFieldType},
	{Name: "duration_seconds", Type: bigquery.FloatFieldType},
	{Name: "games_processed", Type: bigquery.IntegerFieldType},
	{Name: "status", Type: bigquery.StringFieldType},
	{Name: "correlation_id", Type: bigquery.StringFieldType},
	{Name: "metadata", Type: bigquery.StringFieldType},
	{Name: "created_at", Type: bigquery.TimestampFieldType},
}

// record is the outbox document.
type record struct {
	Key                string    `firestore:"key"`
	ExecutionTimestamp time.Time `firestore:"execution_timestamp"`
	PhaseName          string    `firestore:"phase_name"`
	GameDate           string    `firestore:"game_date"`
	StartTime          time.Time `firestore:"start_time"`
	DurationSeconds    float64   `firestore:"duration_seconds"`
	Status             string    `firestore:"status"`
	CorrelationID      string    `firestore:"correlation_id"`
	Metadata           string    `firestore:"metadata"` // JSON, as the column holds it
	State              string    `firestore:"state"`
	PendingUntil       time.Time `firestore:"pending_until,omitempty"`
	Attempts           int64     `firestore:"attempts"`
	CreatedAt          time.Time `firestore:"created_at"`
}

// Log writes rows.
type Log struct {
	coll    *firestore.CollectionRef
	bq      *bigquery.Client
	table   *bigquery.Table
	project string
	cfg     config.BigQuery
	clock   clock.Clock
	log     *slog.Logger
	metrics *metrics.Registry
}

// New returns a Log writing cfg.HistoryTable through bq.
func New(fs *firestore.Client, bq *bigquery.Client, cfg config.BigQuery, clk clock.Clock, log *slog.Logger, m *metrics.Registry) *Log {
	ds, tb := splitTable(cfg.HistoryTable)
	return &Log{coll: fs.Collection(Collection), bq: bq, table: bq.Dataset(ds).Table(tb), project: bq.Project(),
		cfg: cfg, clock: clk, log: log, metrics: m}
}

func splitTable(s string) (string, string) {
	for i := range len(s) {
		if s[i] == '.' {
			return s[:i], s[i+1:]
		}
	}
	return "", s
}

// Owe returns the write that records r as owed, for a caller to commit with
// its own (the gate's confirm): the row exists if and only if that commit
// does. Committing it twice fails with AlreadyExists.
func (l *Log) Owe(r Row) (*firestore.DocumentRef, map[string]any) {
	meta := map[string]any{"history_key": r.Key}
	for k, v := range r.Metadata {
		meta[k] = v
	}
	b, _ := json.Marshal(meta) // plain values: cannot fail
	now := l.clock.Now().UTC()
	return l.ref(r.Key), map[string]any{
		"key": r.Key, "execution_timestamp": r.ExecutionTimestamp.UTC(), "phase_name": r.PhaseName,
		"game_date": r.GameDate.String(), "start_time": r.StartTime.UTC(), "duration_seconds": r.DurationSeconds,
		"status": r.Status, "correlation_id": r.CorrelationID, "metadata": string(b),
		"state": StatePending, "pending_until": now.Add(l.cfg.HistoryBudget + leaseMargin), "attempts": int64(0),
		"created_at": now,
	}
}

func (l *Log) ref(key string) *firestore.DocumentRef { return l.coll.Doc(docid.Encode(key)) }

// Append records r unless its key was recorded before, then sends it. It
// never fails the caller: what it cannot do is logged, and an owed row is
// sent by the sweep.
func (l *Log) Append(ctx context.Context, r Row) {
	ref, doc := l.Owe(r)
	_, err := ref.Create(ctx, doc)
	if status.Code(err) == codes.AlreadyExists {
		return // recorded before: sent, or owed to the sweep
	}
	if err != nil {
		l.metrics.Inc("history.record_failed")
		l.log.ErrorContext(ctx, "history row not recorded", "history_key", r.Key, "error", err.Error())
		return
	}
	l.Send(ctx, r.Key)
}

// Send inserts the owed row key now, within the request's budget.
func (l *Log) Send(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.HistoryBudget)
	defer cancel()
	snap, err := l.ref(key).Get(ctx)
	if err == nil {
		err = l.insert(ctx, snap, false)
	}
	if err != nil {
		l.metrics.Inc("history.left_pending")
		l.log.WarnContext(ctx, "history row left for the sweep", "history_key", key, "error", err.Error())
	}
}

// Flush inserts the rows requests left owed, oldest first, each claimed
// with an update-time precondition so that concurrent sweeps never both
// insert one. It returns the rows written.
func (l *Log) Flush(ctx context.Context) (int, error) {
	snaps, err := l.coll.Where("pending_until", "<=", l.clock.Now().UTC()).
		OrderBy("pending_until", firestore.Asc).Limit(flushLimit).Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("history: query owed rows: %w", err)
	}
	n := 0
	var errs []error
	for _, snap := range snaps {
		if ctx.Err() != nil {
			break
		}
		_, err := snap.Ref.Update(ctx, []firestore.Update{
			{Path: "pending_until", Value: l.clock.Now().UTC().Add(l.cfg.QueryTimeout + l.cfg.HistoryBudget + leaseMargin)},
			{Path: "attempts", Value: firestore.Increment(1)},
		}, firestore.LastUpdateTime(snap.UpdateTime))
		if status.Code(err) == codes.FailedPrecondition {
			continue // another sweep has it
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("history: claim %s: %w", snap.Ref.ID, err))
			continue
		}
		if err := l.insert(ctx, snap, true); err != nil {
			l.metrics.Inc("history.left_pending")
			l.log.WarnContext(ctx, "history row still not written", "history_key", snap.Ref.ID, "error", err.Error())
			continue
		}
		n++
	}
	if n > 0 {
		l.metrics.Add("history.flushed", int64(n))
	}
	return n, errors.Join(errs...)
}

// insert writes the row of snap to BigQuery and marks it written. retry
// says an earlier attempt may have reached BigQuery: the row is then looked
// for first.
func (l *Log) insert(ctx context.Context, snap *firestore.DocumentSnapshot, retry bool) error {
	var rec record
	if err := snap.DataTo(&rec); err != nil {
		return fmt.Errorf("history: decode %s: %w", snap.Ref.ID, err)
	}
	if rec.State == StateWritten {
		return nil
	}
	date, err := gamedate.Parse(rec.GameDate)
	if err != nil {
		return fmt.Errorf("history: %s: %w", snap.Ref.ID, err)
	}
	found := false
	if retry || rec.Attempts > 0 {
		if found, err = l.exists(ctx, rec, date); err != nil {
			return err
		}
	}
	if !found {
		start := bigquery.NullTimestamp{Timestamp: rec.StartTime, Valid: !rec.StartTime.IsZero() && rec.StartTime.Unix() > 0}
		row := &bigquery.ValuesSaver{Schema: Schema, InsertID: rec.Key, Row: []bigquery.Value{
			rec.ExecutionTimestamp, rec.PhaseName, civil.Date(date), start, rec.DurationSeconds,
			bigquery.NullInt64{}, rec.Status, rec.CorrelationID, rec.Metadata, l.clock.Now().UTC(),
		}}
		if err := l.table.Inserter().Put(ctx, row); err != nil {
			return fmt.Errorf("history: insert %s: %w", rec.Key, err)
		}
		l.metrics.Inc("history.rows_written")
	} else {
		l.metrics.Inc("history.already_written")
	}
	_, err = snap.Ref.Update(ctx, []firestore.Update{
		{Path: "state", Value: StateWritten},
		{Path: "pending_until", Value: firestore.Delete},
		{Path: "written_at", Value: l.clock.Now().UTC()},
	})
	if err != nil {
		return fmt.Errorf("history: %s inserted but not marked; the next attempt finds it: %w", rec.Key, err)
	}
	return nil
}

// exists looks for the row in its date's partition by the key its metadata
// carries; the emulator has no JSON_VALUE, and a substring is as exact here
// because the key is written by json.Marshal without escapes.
func (l *Log) exists(ctx context.Context, rec record, date gamedate.Date) (bool, error) {
	q := l.bq.Query(fmt.Sprintf(
		"SELECT COUNT(*) AS n FROM `%s.%s.%s` WHERE game_date = @game_date AND phase_name = @phase AND STRPOS(metadata, @needle) > 0",
		l.project, l.table.DatasetID, l.table.TableID))
	needle, _ := json.Marshal(map[string]string{"history_key": rec.Key})
	q.Parameters = []bigquery.QueryParameter{
		{Name: "game_date", Value: civil.Date(date)},
		{Name: "phase", Value: rec.PhaseName},
		{Name: "needle", Value: string(needle[1 : len(needle)-1])},
	}
	q.MaxBytesBilled = l.cfg.MaxBytesBilled
	ctx, cancel := context.WithTimeout(ctx, l.cfg.QueryTimeout)
	defer cancel()
	it, err := q.Read(ctx)
	if err != nil {
		return false, fmt.Errorf("history: look for %s: %w", rec.Key, err)
	}
	var row struct{ N int64 }
	if err := it.Next(&row); err != nil && !errors.Is(err, iterator.Done) {
		return false, fmt.Errorf("history: look for %s: %w", rec.Key, err)
	}
	return row.N > 0, nil
}
