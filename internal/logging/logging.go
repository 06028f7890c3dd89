// Package logging writes log/slog records as the JSON that Cloud Logging
// parses from a Cloud Run container's stdout: `severity`, `message`, `time`,
// `logging.googleapis.com/trace` and `logging.googleapis.com/labels`.
//
// Fields that identify an event (game_date, phase, correlation_id, processor,
// batch_id …) travel in the context, so every line logged while handling the
// event carries them without each call site repeating them.
package logging

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
)

const (
	labelsKey = "logging.googleapis.com/labels"
	traceKey  = "logging.googleapis.com/trace"
)

type ctxKey int

const (
	labelsCtx ctxKey = iota
	traceCtx
)

// New returns a logger writing Cloud Logging JSON to w at level and above.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: replace})
	return slog.New(&handler{inner: h})
}

func replace(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.LevelKey:
		a.Key = "severity"
		a.Value = slog.StringValue(severity(a.Value.Any().(slog.Level)))
	}
	return a
}

func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}

type labelSet struct {
	mu sync.Mutex
	m  map[string]string
}

// WithLabels returns a context with a new label scope: the parent's labels
// plus kv (key, value pairs; empty values are skipped). Give each goroutine
// that handles its own unit of work (a gate in a sweep) its own scope.
func WithLabels(ctx context.Context, kv ...string) context.Context {
	s := &labelSet{m: Labels(ctx)}
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.add(kv)
	return context.WithValue(ctx, labelsCtx, s)
}

// Annotate adds labels to ctx's current scope, so that lines logged later
// with this context — the edge's outcome line included — carry them. It is a
// no-op without a scope.
func Annotate(ctx context.Context, kv ...string) {
	if s, ok := ctx.Value(labelsCtx).(*labelSet); ok {
		s.add(kv)
	}
}

func (s *labelSet) add(kv []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			s.m[kv[i]] = kv[i+1]
		}
	}
}

// Labels returns a copy of the labels carried by ctx.
func Labels(ctx context.Context) map[string]string {
	s, ok := ctx.Value(labelsCtx).(*labelSet)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

// WithTrace attaches the request's trace, read from the W3C traceparent or
// X-Cloud-Trace-Context header, so Cloud Logging groups an event's lines.
func WithTrace(ctx context.Context, r *http.Request, projectID string) context.Context {
	trace := ""
	if tp := r.Header.Get("traceparent"); tp != "" {
		if parts := strings.Split(tp, "-"); len(parts) == 4 {
			trace = parts[1]
		}
	} else if xc := r.Header.Get("X-Cloud-Trace-Context"); xc != "" {
		trace, _, _ = strings.Cut(xc, "/")
	}
	if trace == "" || projectID == "" {
		return ctx
	}
	return context.WithValue(ctx, traceCtx, "projects/"+projectID+"/traces/"+trace)
}

type handler struct {
	inner slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if t, ok := ctx.Value(traceCtx).(string); ok {
		r.AddAttrs(slog.String(traceKey, t))
	}
	if m := Labels(ctx); len(m) > 0 {
		attrs := make([]any, 0, len(m))
		for k, v := range m {
			attrs = append(attrs, slog.String(k, v))
		}
		r.AddAttrs(slog.Group(labelsKey, attrs...))
	}
	return h.inner.Handle(ctx, r)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{inner: h.inner.WithAttrs(as)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{inner: h.inner.WithGroup(name)}
}
