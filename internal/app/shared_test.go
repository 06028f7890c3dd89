package app

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The handler a deployed function registers builds the shared App from the
// environment on its first request and serves its entry point.
func TestEntryPointFromEnvironment(t *testing.T) {
	t.Setenv("GCP_PROJECT", testenv.Project(t))
	body := envelope.PushBody("m1", []byte(`{"processor_name":"NbacScheduleProcessor","game_date":"2026-01-19","status":"success"}`), nil, time.Now())
	for ep, want := range map[string]int{"Phase2To3": http.StatusNoContent, "NoSuchEntryPoint": http.StatusNotFound} {
		w := httptest.NewRecorder()
		EntryPoint(ep)(w, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
		if w.Code != want {
			t.Errorf("%s: status %d, want %d", ep, w.Code, want)
		}
	}
}

// A start that fails once (a dependency not ready at cold start) is tried
// again by a later request instead of failing every request of the
// instance for its life, as a cached failure did.
func TestFailedStartIsRetried(t *testing.T) {
	builds := 0
	want := &App{}
	s := &starter{retry: 50 * time.Millisecond, timeout: time.Minute, build: func(context.Context) (*App, error) {
		builds++
		if builds == 1 {
			return nil, errors.New("injected: firestore not ready")
		}
		return want, nil
	}}
	ctx := context.Background()
	if _, err := s.get(ctx); err == nil {
		t.Fatal("the first start did not fail")
	}
	if _, err := s.get(ctx); err == nil || builds != 1 {
		t.Fatalf("a request right after a failed start started again (%d starts): retries must be spaced", builds)
	}
	time.Sleep(60 * time.Millisecond)
	a, err := s.get(ctx)
	if err != nil || a != want || builds != 2 {
		t.Fatalf("after the retry interval: %v, %v after %d starts", a, err, builds)
	}
	if a, _ := s.get(ctx); a != want || builds != 2 {
		t.Fatalf("a started App was built again (%d starts)", builds)
	}
}

// A start that hangs is cut off at its timeout, its context cancelled, and
// the instance's next request starts again; a start that finished in time
// keeps its context alive (its clients hold it).
func TestHangingStartIsCutOff(t *testing.T) {
	var kept context.Context
	hang := true
	s := &starter{retry: time.Millisecond, timeout: 100 * time.Millisecond, build: func(ctx context.Context) (*App, error) {
		if hang {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		kept = ctx
		return &App{}, nil
	}}
	ctx := context.Background()
	if _, err := s.get(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("a hanging start: %v, want it cancelled", err)
	}
	hang = false
	time.Sleep(5 * time.Millisecond)
	if a, err := s.get(ctx); a == nil || err != nil {
		t.Fatalf("the next start: %v %v", a, err)
	}
	time.Sleep(150 * time.Millisecond)
	if kept.Err() != nil {
		t.Fatalf("a started App's context was cancelled: %v", kept.Err())
	}
}

// A request that arrives while a start is under way waits for it no longer
// than its own context allows; the start goes on for the others.
func TestWaiterLeavesAHangingStart(t *testing.T) {
	release := make(chan struct{})
	s := &starter{retry: time.Millisecond, timeout: time.Minute, build: func(context.Context) (*App, error) {
		<-release
		return &App{}, nil
	}}
	first := make(chan error, 1)
	go func() {
		_, err := s.get(context.Background())
		first <- err
	}()
	for {
		s.mu.Lock()
		started := s.running != nil
		s.mu.Unlock()
		if started {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter behind a hanging start: %v, want its own deadline", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("the start: %v", err)
	}
	if a, err := s.get(context.Background()); a == nil || err != nil {
		t.Fatalf("after the start: %v %v", a, err)
	}
}
