package bus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/metrics"
)

type scripted struct {
	fail  bool
	calls int
}

func (s *scripted) Publish(context.Context, string, []byte, map[string]string) (string, error) {
	s.calls++
	if s.fail {
		return "", errors.New("unavailable")
	}
	return "id", nil
}

func TestBreaker(t *testing.T) {
	next := &scripted{fail: true}
	m := &metrics.Registry{}
	b := NewBreaker(next, 3, 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), m, nil)
	for range 3 {
		if _, err := b.Publish(context.Background(), "t", nil, nil); err == nil || errors.Is(err, ErrOpen) {
			t.Fatalf("err = %v, want Pub/Sub's own error", err)
		}
	}
	if _, err := b.Publish(context.Background(), "t", nil, nil); !errors.Is(err, ErrOpen) || next.calls != 3 || b.State() != "open" {
		t.Fatalf("after 3 failures: err %v, calls %d, state %s", err, next.calls, b.State())
	}
	next.fail = false
	time.Sleep(60 * time.Millisecond)
	if id, err := b.Publish(context.Background(), "t", nil, nil); err != nil || id != "id" || b.State() != "closed" {
		t.Fatalf("half-open probe: %q %v, state %s", id, err, b.State())
	}
	if m.Get("pubsub.breaker_to_open") != 1 {
		t.Fatalf("state changes not counted: %v", m.Snapshot())
	}
}
