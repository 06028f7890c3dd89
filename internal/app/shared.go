package app

import (
	"context"
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

// starter builds an instance's App on its first request, so that init does
// no network I/O, and keeps it. A failed start is not kept: one transient
// error at cold start (a dependency not ready yet) would otherwise make
// every request of that instance fail for its whole life.
type starter struct {
	build func(ctx context.Context) (*App, error)
	retry time.Duration

	mu   sync.Mutex
	app  *App
	err  error
	next time.Time // no new start before
}

func (s *starter) get(ctx context.Context) (*App, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.app != nil:
		return s.app, nil
	case s.err != nil && time.Now().Before(s.next):
		return nil, s.err
	}
	a, err := s.build(context.WithoutCancel(ctx))
	if err != nil {
		s.err, s.next = fmt.Errorf("%w (the next request tries again)", err), time.Now().Add(s.retry)
		return nil, s.err
	}
	s.app, s.err = a, nil
	return a, nil
}

// shared is the one App of a deployed function instance.
var shared = &starter{retry: startRetry, build: func(ctx context.Context) (*App, error) {
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
