package alert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/opstate"
)

// Collection holds one document per alert key.
const Collection = "orchestrator_alerts"

// FieldWaitingSince is set while a document owes a message: since when it
// has waited. Health counts and ages the outbox by it.
const FieldWaitingSince = "waiting_since"

// Values of the state and resolve_state fields.
const (
	StatePending = "pending" // recorded, not known to be delivered
	StateSent    = "sent"    // Slack accepted it (or it was logged)
	StateFailed  = "failed"  // Slack kept refusing it for alerts.keep_for
	StateSkipped = "skipped" // resolve of an alert that was never delivered
)

const (
	// DefaultFlushLimit bounds one Flush so that a backlog cannot hold a
	// sweep past its own deadline.
	DefaultFlushLimit = 50
	// A message Slack did not take waits flushBackoffBase after its first
	// failed sweep, twice as long after each further one, at most
	// flushBackoffMax: an outage of hours costs a few requests per alert,
	// and the first sweep after Slack is back still finds it within the hour.
	flushBackoffBase = 5 * time.Minute
	flushBackoffMax  = time.Hour
	// leaseMargin lengthens every claim beyond the sender's own time bound,
	// to cover Firestore latency and clock skew between instances: a sweep
	// must not take over a message its sender may still deliver.
	leaseMargin = 10 * time.Second
	// markTimeout bounds recording a delivery. It does not inherit the
	// request's cancellation, because a delivery left unrecorded is the one
	// way to send an alert twice.
	markTimeout = 10 * time.Second
)

// Service sends each alert key at most once, and its resolved follow-up at
// most once, across every instance. Slack's failures never reach the caller:
// what could not be delivered is left for Flush, kept until Slack takes it.
// The one error Raise and Resolve return is that the alert could not be
// recorded: the caller must then fail its event (or the sweep its pass) so
// that a retry raises the alert again, because an unrecorded alert is
// neither sent nor waiting.
type Service struct {
	fs         *firestore.Client
	coll       *firestore.CollectionRef
	names      config.Names
	n          *Notifier
	clk        clock.Clock
	cfg        config.Alerts
	log        *slog.Logger
	m          *metrics.Registry
	flushLimit int
}

// Waiting is the outbox as Health reports it.
type Waiting struct {
	Count  int64
	Oldest time.Time // zero when nothing waits
}

// ReadWaiting counts the messages owed and finds the oldest, in two
// bounded RPCs (a count aggregation bills one read per 1,000 entries).
func ReadWaiting(ctx context.Context, fs *firestore.Client, names config.Names) (Waiting, error) {
	q := fs.Collection(names.Coll(Collection)).Where(FieldWaitingSince, ">=", time.Unix(0, 0))
	n, err := opstate.Count(ctx, q)
	if err != nil {
		return Waiting{}, fmt.Errorf("alert: count waiting: %w", err)
	}
	w := Waiting{Count: n}
	if w.Count == 0 {
		return w, nil
	}
	snaps, err := q.OrderBy(FieldWaitingSince, firestore.Asc).Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return w, fmt.Errorf("alert: oldest waiting: %w", err)
	}
	if len(snaps) == 1 {
		w.Oldest, _ = snaps[0].Data()[FieldWaitingSince].(time.Time)
	}
	return w, nil
}

// ErrNotRecorded is returned (wrapped) by Raise and Resolve when Firestore
// did not take the alert's record.
var ErrNotRecorded = errors.New("alert: not recorded")

// NewService returns a Service recording alerts in fs's orchestrator_alerts.
func NewService(fs *firestore.Client, n *Notifier, clk clock.Clock, cfg config.Alerts, log *slog.Logger, m *metrics.Registry) *Service {
	return &Service{fs: fs, coll: fs.Collection(Collection), n: n, clk: clk, cfg: withDefaults(cfg), log: log, m: m, flushLimit: DefaultFlushLimit}
}

// In keeps the service's alerts where names says (shadow_orchestrator_alerts
// in shadow mode, each expiring).
func (s *Service) In(names config.Names) *Service {
	s.names, s.coll = names, s.fs.Collection(names.Coll(Collection))
	return s
}

// Notifier returns the notifier the service sends with (for Breakers).
func (s *Service) Notifier() *Notifier { return s.n }

// DocID is the document id of key. Keys are free text; a hash keeps them
// valid ids of bounded length, and the key itself is stored in the document.
func DocID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// record is an alert document as read back.
type record struct {
	Key           string    `firestore:"key"`
	Severity      string    `firestore:"severity"`
	Title         string    `firestore:"title"`
	Phase         string    `firestore:"phase"`
	GameDate      string    `firestore:"game_date"`
	Reason        string    `firestore:"reason"`
	Completed     int64     `firestore:"completed"`
	Expected      int64     `firestore:"expected"`
	Missing       []string  `firestore:"missing"`
	ElapsedMS     int64     `firestore:"elapsed_ms"`
	Detail        string    `firestore:"detail"`
	State         string    `firestore:"state"`
	ResolveState  string    `firestore:"resolve_state"`
	ResolveDetail string    `firestore:"resolve_detail"`
	SendingUntil  time.Time `firestore:"sending_until"`
	Attempts      int64     `firestore:"attempts"`
	CreatedAt     time.Time `firestore:"created_at"`
	ResolveAt     time.Time `firestore:"resolve_requested_at"`
}

func (r record) alert() Alert {
	return Alert{
		Key: r.Key, Severity: ParseSeverity(r.Severity), Title: r.Title, Phase: r.Phase,
		GameDate: r.GameDate, Reason: r.Reason, Completed: int(r.Completed), Expected: int(r.Expected),
		Missing: r.Missing, Elapsed: time.Duration(r.ElapsedMS) * time.Millisecond, Detail: r.Detail,
	}
}

func (r record) resolvedAlert() Alert {
	a := r.alert()
	a.Resolved, a.Detail = true, r.ResolveDetail
	return a
}

// kind is the message a document still owes.
type kind int

const (
	none kind = iota
	raise
	resolve
)

func (k kind) String() string { return [...]string{"none", "raise", "resolve"}[k] }

func (r record) owes() kind {
	switch {
	case r.State == StatePending:
		return raise
	case r.State == StateSent && r.ResolveState == StatePending:
		return resolve
	}
	return none
}

func (s *Service) now() time.Time { return s.clk.Now().UTC() }

// Raise records a and sends it unless an alert with a.Key was raised before.
// The Create decides which of several concurrent raisers sends; the winner
// holds a lease (sending_until) for its send budget so that Flush leaves it
// alone meanwhile. It returns an error wrapping ErrNotRecorded only when the
// record could not be written.
func (s *Service) Raise(ctx context.Context, a Alert) error {
	a.Resolved = false
	log := s.log.With("alert_key", a.Key, "alert_severity", a.Severity.String())
	if a.Key == "" {
		s.m.Inc("alerts.invalid")
		log.ErrorContext(ctx, "alert without a key dropped", "title", a.Title)
		return nil
	}
	now := s.now()
	ref := s.coll.Doc(DocID(a.Key))
	doc := map[string]any{
		"key": a.Key, "severity": a.Severity.String(), "title": a.Title, "phase": a.Phase,
		"game_date": a.GameDate, "reason": a.Reason, "completed": a.Completed, "expected": a.Expected,
		"missing": nonNil(a.Missing), "elapsed_ms": a.Elapsed.Milliseconds(), "detail": a.Detail,
		"state": StatePending, "created_at": now, "attempts": 0, FieldWaitingSince: now,
		"sending_until": now.Add(s.cfg.SendBudget + leaseMargin),
	}
	if exp, ok := s.names.Expires(now); ok {
		doc[config.ExpiresField] = exp
	}
	_, err := ref.Create(ctx, doc)
	switch {
	case status.Code(err) == codes.AlreadyExists:
		s.m.Inc("alerts.suppressed_duplicate")
		log.InfoContext(ctx, "alert already raised; not sent again")
		return nil
	case err != nil:
		// Sending without a record could repeat the alert on every
		// redelivery of the event; the caller's retry raises it again.
		s.m.Inc("alerts.store_failed")
		log.ErrorContext(ctx, "alert not recorded, so not sent; the caller retries", "error", err.Error())
		return fmt.Errorf("%w: %s: %w", ErrNotRecorded, a.Key, err)
	}
	s.m.Inc("alerts.raised")
	log.InfoContext(ctx, "alert raised", "alert_event", "raised", "title", a.Title, "game_date", a.GameDate,
		"phase", a.Phase, "reason", a.Reason)
	s.sendAndMark(ctx, ref, a, raise, log)
	return nil
}

// Resolve sends the short follow-up for the alert a.Key names, once, and only
// if that alert was raised. The open → resolving transition is written with
// an update-time precondition, so of two resolvers only one goes on to send.
// If the alert itself is still undelivered, its follow-up waits for Flush,
// which keeps them in order. Like Raise, it fails only when the request
// could not be recorded.
func (s *Service) Resolve(ctx context.Context, a Alert) error {
	log := s.log.With("alert_key", a.Key)
	if a.Key == "" {
		return nil
	}
	ref := s.coll.Doc(DocID(a.Key))
	notRecorded := func(err error) error {
		s.m.Inc("alerts.store_failed")
		log.ErrorContext(ctx, "alert resolve not recorded; the caller retries", "error", err.Error())
		return fmt.Errorf("%w: resolve %s: %w", ErrNotRecorded, a.Key, err)
	}
	for try := 0; try < 5; try++ {
		snap, err := ref.Get(ctx)
		if status.Code(err) == codes.NotFound {
			s.m.Inc("alerts.resolve_unraised")
			log.DebugContext(ctx, "resolve of an alert never raised ignored")
			return nil
		}
		if err != nil {
			return notRecorded(err)
		}
		var rec record
		if err := snap.DataTo(&rec); err != nil {
			// A document this version cannot read will not become readable
			// by retrying.
			s.m.Inc("alerts.store_failed")
			log.ErrorContext(ctx, "alert document unreadable", "error", err.Error())
			return nil
		}
		if rec.ResolveState != "" {
			s.m.Inc("alerts.suppressed_duplicate")
			log.InfoContext(ctx, "alert already resolved; not sent again", "resolve_state", rec.ResolveState)
			return nil
		}
		now := s.now()
		state := StatePending
		if rec.State == StateFailed {
			state = StateSkipped // nobody saw the alert; a follow-up would confuse
		}
		upd := []firestore.Update{
			{Path: "resolve_state", Value: state},
			{Path: "resolve_requested_at", Value: now},
			{Path: "resolve_detail", Value: a.Detail},
		}
		sendNow := rec.State == StateSent
		if sendNow {
			upd = append(upd, firestore.Update{Path: "sending_until", Value: now.Add(s.cfg.SendBudget + leaseMargin)},
				firestore.Update{Path: "attempts", Value: 0}, firestore.Update{Path: FieldWaitingSince, Value: now})
		}
		_, err = ref.Update(ctx, upd, firestore.LastUpdateTime(snap.UpdateTime))
		if status.Code(err) == codes.FailedPrecondition {
			continue // changed under us: read again and decide again
		}
		if err != nil {
			return notRecorded(err)
		}
		s.m.Inc("alerts.resolved")
		log.InfoContext(ctx, "alert resolved", "alert_event", "resolved", "alert_severity", rec.Severity, "state", rec.State)
		if !sendNow {
			log.InfoContext(ctx, "alert resolve recorded; follow-up left for the sweep", "state", rec.State)
			return nil
		}
		s.sendAndMark(ctx, ref, rec.resolvedAlert(), resolve, log)
		return nil
	}
	return notRecorded(errors.New("the document kept changing"))
}

// sendAndMark sends within the request's send budget and records success;
// a failure leaves the document pending, with the caller's lease, for Flush.
func (s *Service) sendAndMark(ctx context.Context, ref *firestore.DocumentRef, a Alert, k kind, log *slog.Logger) {
	sendCtx, cancel := context.WithTimeout(ctx, s.cfg.SendBudget)
	err := s.n.Post(sendCtx, a)
	cancel()
	if err != nil {
		s.m.Inc("alerts.left_pending")
		log.WarnContext(ctx, "alert not delivered in time; left for the sweep", "message", k.String(), "error", err.Error())
		return
	}
	if err := s.mark(ctx, ref, k); err != nil {
		s.m.Inc("alerts.store_failed")
		log.ErrorContext(ctx, "alert delivered but not recorded; the sweep may send it again",
			"message", k.String(), "error", err.Error())
	}
}

// mark records that k was delivered. It runs in a transaction because
// whether the document still owes a follow-up (and so keeps sending_until,
// which is what Flush looks for) depends on what others wrote meanwhile.
func (s *Service) mark(ctx context.Context, ref *firestore.DocumentRef, k kind) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	return s.fs.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		var rec record
		if err := snap.DataTo(&rec); err != nil {
			return err
		}
		now := s.now()
		var upd []firestore.Update
		switch k {
		case raise:
			upd = []firestore.Update{{Path: "state", Value: StateSent}, {Path: "sent_at", Value: now}, {Path: "attempts", Value: 0}}
			if rec.ResolveState == StatePending {
				upd = append(upd, firestore.Update{Path: "sending_until", Value: now}, // due now
					firestore.Update{Path: FieldWaitingSince, Value: rec.ResolveAt})
			} else {
				upd = append(upd, firestore.Update{Path: "sending_until", Value: firestore.Delete},
					firestore.Update{Path: FieldWaitingSince, Value: firestore.Delete})
			}
		case resolve:
			upd = []firestore.Update{{Path: "resolve_state", Value: StateSent}, {Path: "resolved_at", Value: now},
				{Path: "sending_until", Value: firestore.Delete}, {Path: FieldWaitingSince, Value: firestore.Delete}}
		}
		return tx.Update(ref, upd)
	})
}

// Flush sends what requests left undelivered: documents whose
// sending_until has passed, oldest first, at most DefaultFlushLimit per
// call. Each is claimed with an update-time precondition before sending, so
// two concurrent sweeps never both send one. A message Slack did not take
// waits longer after each failed try (flushBackoffBase doubling up to
// flushBackoffMax); one its breaker refused without asking Slack is no
// try at all and stays due. Nothing is given up while Slack is down: only a
// message Slack itself kept refusing (a 4xx) for cfg.KeepFor is marked
// failed. Flush returns the number of messages delivered; the error reports
// Firestore failures only.
func (s *Service) Flush(ctx context.Context) (int, error) {
	snaps, err := s.coll.Where("sending_until", "<=", s.now()).
		OrderBy("sending_until", firestore.Asc).Limit(s.flushLimit).Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("alert: query pending alerts: %w", err)
	}
	sent := 0
	var errs []error
	for _, snap := range snaps {
		if ctx.Err() != nil {
			break // unclaimed documents stay for the next sweep
		}
		n, err := s.flushOne(ctx, snap)
		sent += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if sent > 0 {
		s.m.Add("alerts.flushed", int64(sent))
	}
	return sent, errors.Join(errs...)
}

// flushOne delivers what one document owes: the alert, then its follow-up
// if that was requested meanwhile.
func (s *Service) flushOne(ctx context.Context, snap *firestore.DocumentSnapshot) (int, error) {
	ref := snap.Ref
	sent := 0
	for range 2 {
		var rec record
		if err := snap.DataTo(&rec); err != nil {
			return sent, fmt.Errorf("alert: decode %s: %w", ref.ID, err)
		}
		log := s.log.With("alert_key", rec.Key, "alert_severity", rec.Severity)
		now := s.now()
		k := rec.owes()
		if k == none || rec.SendingUntil.After(now) {
			if k == none && !rec.SendingUntil.IsZero() {
				// A stale lease would match every sweep's query forever.
				_, _ = ref.Update(ctx, []firestore.Update{{Path: "sending_until", Value: firestore.Delete},
					{Path: FieldWaitingSince, Value: firestore.Delete}}, firestore.LastUpdateTime(snap.UpdateTime))
			}
			return sent, nil
		}
		a := rec.alert()
		if k == resolve {
			a = rec.resolvedAlert()
		}
		if s.n.Refuses(a) {
			// Slack's breaker is open: asking would not reach Slack, so the
			// message stays due, untouched, for the next sweep.
			s.m.Inc("alerts.flush_breaker_open")
			return sent, nil
		}
		claim, err := ref.Update(ctx, []firestore.Update{
			{Path: "sending_until", Value: now.Add(s.cfg.MaxElapsed + leaseMargin)},
		}, firestore.LastUpdateTime(snap.UpdateTime))
		if status.Code(err) == codes.FailedPrecondition {
			s.m.Inc("alerts.claim_lost")
			log.DebugContext(ctx, "pending alert claimed by another sweep")
			return sent, nil
		}
		if err != nil {
			return sent, fmt.Errorf("alert: claim %s: %w", ref.ID, err)
		}
		// Post bounds itself by MaxElapsed, inside the lease just taken.
		if err := s.n.Post(ctx, a); err != nil {
			s.m.Inc("alerts.left_pending")
			return sent, s.failed(ctx, ref, claim.UpdateTime, rec, k, err, log)
		}
		sent++
		if err := s.mark(ctx, ref, k); err != nil {
			s.m.Inc("alerts.store_failed")
			log.ErrorContext(ctx, "alert delivered but not recorded; a later sweep may send it again",
				"message", k.String(), "error", err.Error())
			return sent, fmt.Errorf("alert: record delivery of %s: %w", ref.ID, err)
		}
		log.InfoContext(ctx, "pending alert delivered by the sweep", "message", k.String())
		if k == resolve {
			return sent, nil
		}
		if snap, err = ref.Get(ctx); err != nil {
			return sent, fmt.Errorf("alert: reread %s: %w", ref.ID, err)
		}
	}
	return sent, nil
}

// failed records a flush that did not deliver k: when it is due again, and
// whether it is given up. claimed is the update time of this sweep's claim,
// so a sweep that took the message over meanwhile wins.
func (s *Service) failed(ctx context.Context, ref *firestore.DocumentRef, claimed time.Time, rec record, k kind, postErr error, log *slog.Logger) error {
	now := s.now()
	since := rec.CreatedAt
	if k == resolve {
		since = rec.ResolveAt
	}
	waited := now.Sub(since)
	if errors.Is(postErr, ErrNotAsked) {
		// The breaker opened under us: no try, due again at the next sweep.
		_, err := ref.Update(ctx, []firestore.Update{{Path: "sending_until", Value: now}}, firestore.LastUpdateTime(claimed))
		log.WarnContext(ctx, "pending alert not sent: slack circuit breaker open", "message", k.String(), "waiting_s", int64(waited.Seconds()))
		return ignorePrecondition(err)
	}
	attempts := rec.Attempts + 1
	if errors.Is(postErr, ErrRejected) && !since.IsZero() && waited >= s.cfg.KeepFor {
		field := "state"
		if k == resolve {
			field = "resolve_state"
		}
		_, err := ref.Update(ctx, []firestore.Update{{Path: field, Value: StateFailed}, {Path: "attempts", Value: attempts},
			{Path: "sending_until", Value: firestore.Delete}, {Path: FieldWaitingSince, Value: firestore.Delete}},
			firestore.LastUpdateTime(claimed))
		if err == nil {
			s.m.Inc("alerts.abandoned")
			log.ErrorContext(ctx, "alert abandoned: slack kept refusing it", "alert_event", "abandoned", "message", k.String(),
				"attempts", attempts, "waiting_s", int64(waited.Seconds()), "error", postErr.Error())
		}
		return ignorePrecondition(err)
	}
	next := now.Add(flushBackoff(attempts))
	_, err := ref.Update(ctx, []firestore.Update{{Path: "attempts", Value: attempts}, {Path: "sending_until", Value: next}},
		firestore.LastUpdateTime(claimed))
	log.WarnContext(ctx, "pending alert still not delivered", "message", k.String(), "attempt", attempts,
		"waiting_s", int64(waited.Seconds()), "next_try", next.Format(time.RFC3339), "error", postErr.Error())
	return ignorePrecondition(err)
}

// flushBackoff is how long a message waits after its n-th failed sweep.
func flushBackoff(n int64) time.Duration {
	d := flushBackoffBase
	for i := int64(1); i < n && d < flushBackoffMax; i++ {
		d *= 2
	}
	return min(d, flushBackoffMax)
}

func ignorePrecondition(err error) error {
	if status.Code(err) == codes.FailedPrecondition {
		return nil
	}
	return err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
