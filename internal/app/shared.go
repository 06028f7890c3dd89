package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/logging"
)

// shared is the one App of a deployed function instance, built on its first
// request so that init does no network I/O.
var shared = sync.OnceValues(func() (*App, error) {
	cfg, err := config.Load(context.Background())
	if err != nil {
		return nil, err
	}
	return New(context.Background(), cfg, Options{})
})

// EntryPoint returns the functions-framework handler of entryPoint. It
// validates the configuration at once: an invalid one stops the instance at
// start-up with a message naming the field, rather than failing requests.
func EntryPoint(entryPoint string) func(http.ResponseWriter, *http.Request) {
	if _, err := config.Load(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := shared()
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
