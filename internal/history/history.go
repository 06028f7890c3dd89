// Package history appends the night's phase boundaries — triggers, blocked
// data checks, batch completions — to the running system's BigQuery table
// nba_orchestration.phase_execution_log, which the operators' dashboards
// read (CONTRACT §10).
//
// A row is an effect (internal/effect): owed in the same Firestore commit
// as the decision it records, keyed by what it records (a trigger_id, a
// batch id, a block), inserted after it by the request or by the sweep, so
// BigQuery never delays or fails an orchestration event and there is at
// most one row per key. The BigQuery emulator does not de-duplicate
// insertIds (and BigQuery does so only best-effort), so an insert that may
// have reached BigQuery before its try ended is first looked for, by its
// key in metadata, in the date's partition. A row BigQuery rejects as
// invalid is refused at once: retrying the same row cannot help.
package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"cloud.google.com/go/firestore"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/metrics"
)

// Collection is where revisions before the effect log kept one document
// per row owed or written (their outbox).
const Collection = "orchestrator_history"

// StateWritten marks an outbox row an earlier revision inserted.
const StateWritten = "written"

// outboxIncarnation stands for the incarnation of rows an earlier revision
// recorded, keyed once ever.
const outboxIncarnation = "outbox"

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

// Effect is the effect that inserts r once for the deciding document's
// incarnation inc.
func Effect(r Row, table, inc string) effect.Effect {
	meta := map[string]any{}
	for k, v := range r.Metadata {
		meta[k] = v
	}
	// The key names the decision; the incarnation tells a deleted and
	// re-created document's decision from its predecessor's (a second
	// block of one date), which the insert id and the look-up keep apart.
	meta["history_key"], meta["incarnation"] = r.Key, inc
	m, _ := json.Marshal(meta) // plain values: cannot fail
	b, _ := json.Marshal(stored{
		Key: r.Key, ExecutionTimestamp: r.ExecutionTimestamp.UTC(), PhaseName: r.PhaseName, GameDate: r.GameDate.String(),
		StartTime: r.StartTime.UTC(), DurationSeconds: r.DurationSeconds, Status: r.Status, CorrelationID: r.CorrelationID,
		Metadata: string(m),
	})
	return effect.Effect{Kind: effect.Row, Key: "row:" + r.Key, Incarnation: inc, Destination: table, Data: b,
		GameDate: r.GameDate.String(), Subject: r.PhaseName}
}

// stored is a row as its effect carries it: the columns, metadata already
// the JSON string the column holds.
type stored struct {
	Key                string    `json:"key"`
	ExecutionTimestamp time.Time `json:"execution_timestamp"`
	PhaseName          string    `json:"phase_name"`
	GameDate           string    `json:"game_date"`
	StartTime          time.Time `json:"start_time"`
	DurationSeconds    float64   `json:"duration_seconds"`
	Status             string    `json:"status"`
	CorrelationID      string    `json:"correlation_id"`
	Metadata           string    `json:"metadata"`
}

// Sink inserts rows into the history table.
type Sink struct {
	bq      *bigquery.Client
	table   *bigquery.Table
	name    string
	project string
	cfg     config.BigQuery
	clock   clock.Clock
	metrics *metrics.Registry
}

// NewSink returns the Sink of cfg.HistoryTable through bq.
func NewSink(bq *bigquery.Client, cfg config.BigQuery, clk clock.Clock, m *metrics.Registry) *Sink {
	ds, tb := splitTable(cfg.HistoryTable)
	return &Sink{bq: bq, table: bq.Dataset(ds).Table(tb), name: cfg.HistoryTable, project: bq.Project(), cfg: cfg,
		clock: clk, metrics: m}
}

// Table is the lane of row effects.
func (s *Sink) Table() string { return s.name }

// Lanes is the history table.
func (s *Sink) Lanes() []string { return []string{s.name} }

// Perform inserts r's row, unless an earlier try whose outcome is unknown
// already did.
func (s *Sink) Perform(ctx context.Context, r *effect.Record) effect.Result {
	var row stored
	if err := json.Unmarshal(r.Data, &row); err != nil {
		return effect.Result{Outcome: effect.Refused, Err: fmt.Errorf("history: decode %s: %w", r.Key, err)}
	}
	date, err := gamedate.Parse(row.GameDate)
	if err != nil {
		// No partition can take it: BigQuery would refuse it on every try.
		return effect.Result{Outcome: effect.Refused, Err: fmt.Errorf("history: %s: %w", row.Key, err)}
	}
	// A try before this one, or the earlier revision that recorded it, may
	// have inserted it.
	if r.Tries > 1 || r.Ambiguous > 0 || r.Incarnation == outboxIncarnation {
		found, err := s.exists(ctx, row, r.Incarnation, date)
		if err != nil {
			return effect.Result{Outcome: effect.Unavailable, Err: err}
		}
		if found {
			s.metrics.Inc("history.already_written")
			return effect.Result{Outcome: effect.Performed, Ref: "found"}
		}
	}
	start := bigquery.NullTimestamp{Timestamp: row.StartTime, Valid: !row.StartTime.IsZero() && row.StartTime.Unix() > 0}
	err = s.table.Inserter().Put(ctx, &bigquery.ValuesSaver{Schema: Schema, InsertID: insertID(row, r.Incarnation), Row: []bigquery.Value{
		row.ExecutionTimestamp, row.PhaseName, civil.Date(date), start, row.DurationSeconds,
		bigquery.NullInt64{}, row.Status, row.CorrelationID, row.Metadata, s.clock.Now().UTC(),
	}})
	if err != nil {
		var multi bigquery.PutMultiError
		if errors.As(err, &multi) && invalid(multi) {
			// The table answered and named what is wrong with the row.
			return effect.Result{Outcome: effect.Refused, Err: fmt.Errorf("history: insert %s: %w", row.Key, err)}
		}
		var api *googleapi.Error
		if errors.As(err, &api) && api.Code == http.StatusBadRequest {
			return effect.Result{Outcome: effect.Refused, Err: fmt.Errorf("history: insert %s: %w", row.Key, err)}
		}
		return effect.Result{Outcome: effect.Unavailable, Err: fmt.Errorf("history: insert %s: %w", row.Key, err),
			Ambiguous: ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)}
	}
	s.metrics.Inc("history.rows_written")
	return effect.Result{Outcome: effect.Performed, Ref: "inserted"}
}

// invalid reports whether BigQuery refused the rows for what they hold:
// every row error's reason is "invalid". Any other ("backendError",
// "timeout", "stopped") is the table's trouble, tried again.
func invalid(multi bigquery.PutMultiError) bool {
	for _, re := range multi {
		for _, err := range re.Errors {
			var be *bigquery.Error
			if !errors.As(err, &be) || be.Reason != "invalid" {
				return false
			}
		}
	}
	return len(multi) > 0
}

func splitTable(s string) (string, string) {
	for i := range len(s) {
		if s[i] == '.' {
			return s[:i], s[i+1:]
		}
	}
	return "", s
}

// exists looks for the row in its date's partition by the key its metadata
// carries; the emulator has no JSON_VALUE, and a substring is as exact here
// because the key is written by json.Marshal without escapes.
func (s *Sink) exists(ctx context.Context, rec stored, inc string, date gamedate.Date) (bool, error) {
	incNeedle := ""
	if !keyOnly(rec, inc) {
		incNeedle = needle("incarnation", inc)
	}
	q := s.bq.Query(fmt.Sprintf(
		"SELECT COUNT(*) AS n FROM `%s.%s.%s` WHERE game_date = @game_date AND phase_name = @phase"+
			" AND STRPOS(metadata, @key) > 0 AND STRPOS(metadata, @inc) > 0",
		s.project, s.table.DatasetID, s.table.TableID))
	q.Parameters = []bigquery.QueryParameter{
		{Name: "game_date", Value: civil.Date(date)},
		{Name: "phase", Value: rec.PhaseName},
		{Name: "key", Value: needle("history_key", rec.Key)},
		{Name: "inc", Value: incNeedle},
	}
	q.MaxBytesBilled = s.cfg.MaxBytesBilled
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
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

// needle is `"field":"value"` as json.Marshal writes it into metadata.
func needle(field, value string) string {
	b, _ := json.Marshal(map[string]string{field: value})
	return string(b[1 : len(b)-1])
}

// insertID de-duplicates a row's inserts for BigQuery (best-effort, for
// about a minute): one per decision and incarnation, or the key alone for
// a row an earlier revision owed.
func insertID(rec stored, inc string) string {
	if keyOnly(rec, inc) {
		return rec.Key
	}
	return rec.Key + "@" + inc
}

// keyOnly reports whether rec was made by a revision that named rows by
// their key alone: an earlier revision's outbox, or an effect owed before
// rows carried their incarnation (its metadata has none). Such a row is
// looked for, and de-duplicated, by its key, as that revision did.
func keyOnly(rec stored, inc string) bool {
	return inc == outboxIncarnation || !strings.Contains(rec.Metadata, `"incarnation":`)
}

// outboxRecord is a row an earlier revision's outbox held.
type outboxRecord struct {
	Key                string    `firestore:"key"`
	ExecutionTimestamp time.Time `firestore:"execution_timestamp"`
	PhaseName          string    `firestore:"phase_name"`
	GameDate           string    `firestore:"game_date"`
	StartTime          time.Time `firestore:"start_time"`
	DurationSeconds    float64   `firestore:"duration_seconds"`
	Status             string    `firestore:"status"`
	CorrelationID      string    `firestore:"correlation_id"`
	Metadata           string    `firestore:"metadata"`
	State              string    `firestore:"state"`
}

// takeOverLimit bounds one sweep's share of an old outbox.
const takeOverLimit = 50

// TakeOver moves into the effect log the rows an earlier revision's outbox
// still owes (pending, its sender's lease passed): each row's effect is
// created in the commit that clears the old document's lease, conditional
// on the document being unchanged, so an old revision still flushing it
// during a rollout and this one never both insert it (and an insert that
// may have happened is looked for before it is repeated: see Sink). The
// rows are due at once, for the sweep's lanes. It returns the rows taken
// over.
func TakeOver(ctx context.Context, fs *firestore.Client, names config.Names, eng *effect.Engine, table string) (int, error) {
	now := eng.Clock.Now()
	snaps, err := fs.Collection(names.Coll(Collection)).Where("pending_until", "<=", now).
		OrderBy("pending_until", firestore.Asc).Limit(takeOverLimit).Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("history: query the earlier outbox: %w", err)
	}
	n := 0
	var errs []error
	for _, snap := range snaps {
		var rec outboxRecord
		if err := snap.DataTo(&rec); err != nil {
			errs = append(errs, fmt.Errorf("history: decode %s: %w", snap.Ref.ID, err))
			continue
		}
		ups := []firestore.Update{{Path: "pending_until", Value: firestore.Delete}, {Path: "moved_to_effects_at", Value: now}}
		var effs []effect.Effect
		if rec.State != StateWritten {
			b, _ := json.Marshal(stored{Key: rec.Key, ExecutionTimestamp: rec.ExecutionTimestamp, PhaseName: rec.PhaseName,
				GameDate: rec.GameDate, StartTime: rec.StartTime, DurationSeconds: rec.DurationSeconds, Status: rec.Status,
				CorrelationID: rec.CorrelationID, Metadata: rec.Metadata})
			effs = append(effs, effect.Effect{Kind: effect.Row, Key: "row:" + rec.Key, Destination: table,
				Data: b, GameDate: rec.GameDate, Subject: rec.PhaseName, Incarnation: outboxIncarnation})
		}
		ws := append([]effect.Write{{Ref: snap.Ref, Update: ups, Pre: []firestore.Precondition{firestore.LastUpdateTime(snap.UpdateTime)}}},
			eng.Handoff(now, effs...)...)
		_, err := effect.Commit(ctx, fs, ws...)
		if errors.Is(err, effect.ErrConflict) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("history: take over %s: %w", rec.Key, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
