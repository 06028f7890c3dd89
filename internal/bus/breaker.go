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
}

// ErrOpen is returned while the breaker is open.
var ErrOpen = errors.New("bus: circuit breaker open: Pub/Sub failing")

// NewBreaker trips after failures consecutive failed publishes and tries
// again after openFor.
func NewBreaker(next Publisher, failures uint32, openFor time.Duration, log *slog.Logger, m *metrics.Registry) *Breaker {
	return &Breaker{next: next, cb: gobreaker.NewCircuitBreaker[string](gobreaker.Settings{
		Name:        "pubsub",
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
		},
	})}
}

// Publish publishes through the breaker.
func (b *Breaker) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	id, err := b.cb.Execute(func() (string, error) { return b.next.Publish(ctx, topic, data, attrs) })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return "", ErrOpen
	}
	return id, err
}

// State is the breaker's state: closed, open or half-open.
func (b *Breaker) State() string { return b.cb.State().String() }
