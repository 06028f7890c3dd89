// Package testenv gives integration tests the real Firestore and Pub/Sub
// emulators: those named by FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST
// when set (make test starts one pair for the whole run), otherwise a pair
// started for the test binary. Each test gets its own project id, which
// isolates its state in both emulators.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/indexcheck"
)

// Main runs a package's tests, starting emulators first when the
// environment names none. Use it as the package's TestMain. Unless a runner
// above does (phasegate emulators --check-indexes), it then fails the
// package when a Firestore query the tests sent has no index in
// deploy/firestore.indexes.json.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("FIRESTORE_EMULATOR_HOST") == "" || os.Getenv("PUBSUB_EMULATOR_HOST") == "" {
		e, err := emulator.Start(context.Background(), "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
			return 1
		}
		defer e.Stop()
		os.Setenv("FIRESTORE_EMULATOR_HOST", e.FirestoreHost)
		os.Setenv("PUBSUB_EMULATOR_HOST", e.PubSubHost)
	}
	check, err := indexcheck.Begin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	code := m.Run()
	if err := check(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = max(code, 1)
	}
	return code
}

var seq atomic.Int64

var nonID = regexp.MustCompile(`[^a-z0-9]+`)

// Project returns a fresh project id for t.
func Project(t testing.TB) string {
	name := nonID.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(name) > 18 {
		name = name[len(name)-18:]
	}
	return strings.Trim(fmt.Sprintf("t%d-%d-%s", time.Now().UnixNano()%1e6, seq.Add(1), name), "-")
}

// Firestore returns a client for project, closed when t ends.
func Firestore(t testing.TB, project string) *firestore.Client {
	t.Helper()
	c, err := emulator.NewFirestore(context.Background(), project)
	if err != nil {
		t.Fatalf("firestore client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Sub is a pull subscription a test reads a topic's messages from: the
// downstream consumer's view of what phasegate published.
type Sub struct{ s *bus.Subscription }

// Subscribe creates topic (if missing) and a pull subscription on it. Create
// it before the messages it should see are published.
func Subscribe(t testing.TB, b *bus.Bus, topic string) *Sub {
	t.Helper()
	s, err := b.Subscribe(context.Background(), topic, fmt.Sprintf("%s-sub%d", topic, seq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return &Sub{s}
}

// Drain returns every message that arrives until quiet passes with none.
func (s *Sub) Drain(t testing.TB, quiet time.Duration) []*pubsubpb.PubsubMessage {
	t.Helper()
	out, err := s.s.Drain(context.Background(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Push delivers one message to h as a Pub/Sub push subscription would and
// returns the HTTP status.
func Push(h http.Handler, id string, data []byte, attrs map[string]string) int {
	body := envelope.PushBody(id, data, attrs, time.Now())
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

// Deliver pushes like Pub/Sub: a 5xx is redelivered (after a short,
// growing pause) until the handler acknowledges or attempts run out. It
// returns the number of attempts and the last status.
func Deliver(h http.Handler, id string, data []byte, attrs map[string]string, attempts int) (int, int) {
	pause := 20 * time.Millisecond
	code := 0
	for i := 1; i <= attempts; i++ {
		code = Push(h, id, data, attrs)
		if code < 500 {
			return i, code
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Second)
	}
	return attempts, code
}
