package bus

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/phasegate/phasegate/internal/metrics"
)

// Publisher is what the breaker guards.
type Publisher interface {
	Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error)
}

// Breaker is a circuit breaker around publishing, per instance. While
// Pub/Sub fails, it fails publishes at once instead of letting each request
// wait out its timeout: the gate releases its claim and answers 5xx at once,
// and the redelivery (or the sweep) publishes once Pub/Sub is back.
type Breaker struct {
	next Publisher
	cb   *gobreaker.CircuitBreaker[string]
	rec  Recorder
}

// Recorder keeps breaker transitions where every instance's Health sees
// them. BreakerChanged is called under the breaker's lock and must not
// block; WriteTransitions runs at the end of the publish that drove it.
type Recorder interface {
	BreakerChanged(name string, openFor time.Duration, to string)
	WriteTransitions(ctx context.Context)
}

// BreakerName is the name the breaker is recorded under.
const BreakerName = "pubsub"

// ErrOpen is returned while the breaker is open.
var ErrOpen = errors.New("bus: circuit breaker open: Pub/Sub failing")

// NewBreaker trips after failures consecutive failed publishes and tries
// again after openFor. rec, when not nil, records its transitions.
func NewBreaker(next Publisher, failures uint32, openFor time.Duration, log *slog.Logger, m *metrics.Registry, rec Recorder) *Breaker {
	b := &Breaker{next: next, rec: rec}
	b.cb = gobreaker.NewCircuitBreaker[string](gobreaker.Settings{
		Name:        BreakerName,
		Timeout:     openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// A caller that gave up (its request ended) says nothing about Pub/Sub.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelError
			}
			m.Inc("pubsub.breaker_to_" + strings.ReplaceAll(to.String(), "-", "_"))
			log.Log(context.Background(), level, "pubsub circuit breaker changed state",
				"breaker", name, "from", from.String(), "to", to.String())
			if rec != nil {
				rec.BreakerChanged(name, openFor, to.String())
			}
		},
	})
	return b
}

// Publish publishes through the breaker.
func (b *Breaker) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	if b.rec != nil {
		defer b.rec.WriteTransitions(ctx)
	}
	id, err := b.cb.Execute(func() (string, error) { return b.next.Publish(ctx, topic, data, attrs) })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return "", ErrOpen
	}
	return id, err
}

// State is the breaker's state: closed, open or half-open.
func (b *Breaker) State() string { return b.cb.State().String() }
