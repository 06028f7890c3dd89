package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/logging"
)

// startRetry spaces the starts an instance tries after a failed one, so
// that a dependency down at cold start does not turn every request into a
// new start. It is a rate limit, so it runs on the real clock.
const startRetry = time.Second

// startTimeout bounds one start: a dependency that hangs at cold start
// (a metadata server, a DNS lookup) must not hold the instance's requests
// behind it until their own timeouts (60 s for the shortest).
const startTimeout = 15 * time.Second

// starter builds an instance's App on its first request, so that init does
// no network I/O, and keeps it. A failed start is not kept: one transient
// error at cold start (a dependency not ready yet) would otherwise make
// every request of that instance fail for its whole life. Requests that
// arrive during a start wait for it, each no longer than its own context.
type starter struct {
	build   func(ctx context.Context) (*App, error)
	retry   time.Duration
	timeout time.Duration

	mu      sync.Mutex
	app     *App
	err     error
	next    time.Time     // no new start before
	running chan struct{} // closed when the start under way ends
}

func (s *starter) get(ctx context.Context) (*App, error) {
	for {
		s.mu.Lock()
		if s.app != nil {
			defer s.mu.Unlock()
			return s.app, nil
		}
		if ch := s.running; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("app: waiting for the instance to start: %w", ctx.Err())
			}
		}
		if s.err != nil && time.Now().Before(s.next) {
			defer s.mu.Unlock()
			return nil, s.err
		}
		ch := make(chan struct{})
		s.running = ch
		s.mu.Unlock()

		a, err := s.start(ctx)

		s.mu.Lock()
		s.running = nil
		if err != nil {
			s.err, s.next = fmt.Errorf("%w (the next request tries again)", err), time.Now().Add(s.retry)
		} else {
			s.app, s.err = a, nil
		}
		err = s.err
		s.mu.Unlock()
		close(ch)
		return a, err
	}
}

// start builds the App on a context that outlives the request (its clients
// keep it) and is cancelled only when the start takes longer than
// s.timeout; a start that ran out of time is not kept.
func (s *starter) start(ctx context.Context) (*App, error) {
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	timer := time.AfterFunc(s.timeout, cancel)
	a, err := s.build(bctx)
	if !timer.Stop() {
		err = errors.Join(err, fmt.Errorf("app: start took longer than %v", s.timeout))
		if a != nil {
			a.Close()
			a = nil
		}
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return a, nil
}

// shared is the one App of a deployed function instance.
var shared = &starter{retry: startRetry, timeout: startTimeout, build: func(ctx context.Context) (*App, error) {
	cfg, err := config.Load(ctx)
	if err != nil {
		return nil, err
	}
	return New(ctx, cfg, Options{})
}}

// EntryPoint returns the functions-framework handler of entryPoint. It
// validates the configuration at once: an invalid one stops the instance at
// start-up with a message naming the field, rather than failing requests.
func EntryPoint(entryPoint string) func(http.ResponseWriter, *http.Request) {
	if _, err := config.Load(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := shared.get(r.Context())
		if err != nil {
			logging.New(os.Stdout, slog.LevelInfo).ErrorContext(r.Context(), "phasegate cannot start", "error", err.Error())
			http.Error(w, "phasegate cannot start", http.StatusInternalServerError)
			return
		}
		h, ok := a.Handler(entryPoint)
		if !ok {
			http.Error(w, "unknown entry point "+entryPoint, http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	}
}
