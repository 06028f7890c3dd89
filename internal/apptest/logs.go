package apptest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"sync"
	"testing"
)

// Logs collects an App's log lines (Cloud Logging JSON, one per line).
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// WithLogs makes the App log every level to l instead of discarding it.
func WithLogs(l *Logs) Option { return func(s *setup) { s.logs = l } }

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Text is everything logged so far.
func (l *Logs) Text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Lines decodes every line logged so far.
func (l *Logs) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader([]byte(l.Text())))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %.200s", err, sc.Bytes())
		}
		out = append(out, m)
	}
	return out
}
