package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestUsageErrorsExit2(t *testing.T) {
	tests := [][]string{
		{"bogus"},
		{"serve", "--nope"},
		{"serve", "--addr", "no-port"},
		{"status", "--date", "2026-13-01"},
		{"status", "--date", "2026-01-19", "--from", "2026-01-10"},
		{"status", "--from", "2026-01-20", "--to", "2026-01-19"},
		{"status", "--from", "2025-11-01", "--to", "2026-01-19"},
		{"status", "--to", "19-01-2026"},
		{"status", "--from", "2026-01-10", "--url", "localhost:8081"},
		{"trigger", "--date", "2026-01-19"},
		{"trigger", "--phase", "Phase3To4", "--date", "tomorrow"},
		{"dead-letters", "list", "extra"},
		{"dead-letters", "replay", "--max"},
		{"emulators"},
		{"demo", "extra"},
		{"compare"},
		{"compare", "--date", "2026-01-19", "--since", "2026-01-18"},
		{"compare", "--since", "2999-01-01"},
		{"compare", "--since", "1990-01-01"},
		{"compare", "--date", "2026-02-30"},
		{"compare", "--date", "2026-01-19", "--tolerance", "soon"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			root := newRoot()
			root.SetArgs(args)
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			if err == nil || exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want a usage error", err, exitCode(err))
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range newRoot().Commands() {
		if c.Short == "" {
			t.Errorf("%s has no help", c.Name())
		}
	}
}

// serve prints its address once it accepts requests, serves every entry
// point, and returns cleanly when its context ends (SIGTERM in main).
func TestServe(t *testing.T) {
	e := apptest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, e.App, pw) }()
	base := "http://" + ln.Addr().String()
	line := make([]byte, 256)
	n, _ := pr.Read(line)
	if got := string(line[:n]); got != "listening on "+base+"\n" {
		t.Fatalf("first line %q", got)
	}
	body := envelope.PushBody("m1", []byte(`{"processor_name":"NbacScheduleProcessor","game_date":"2026-01-19","status":"success"}`), nil, time.Now())
	for _, ep := range []string{"Phase2To3", "Phase3To4", "Phase4To5", "Sweep"} {
		resp, err := http.Post(base+"/"+ep, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s: %d", ep, resp.StatusCode)
		}
	}
	for _, ep := range []string{"Health", "Status?date=2026-01-19"} {
		resp, err := http.Get(base + "/" + ep)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", ep, resp.StatusCode)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// TestDemo replays the fortnight, then looks at the night's and the
// season's Status pages in Chromium while the demo still serves them.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	pages := func(ctx context.Context, p demoPages) error {
		t.Run("night page in Chromium", func(t *testing.T) { checkNightPage(t, ctx, p.Night) })
		t.Run("season page in Chromium", func(t *testing.T) { checkSeasonPage(t, ctx, p) })
		return nil
	}
	if err := runDemo(context.Background(), &out, demoOptions{atEnd: pages}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"deadline_exceeded", "critical_plus_majority_60pct", "all_complete", "duplicate",
		"10 recorded (HTTP 204), 1 duplicate (HTTP 200)", "status=success players=10/10", "the day ended as expected",
		"GET /Health at the end of the night", `"last_sweep_at"`, "tier2_timeout falls due", "a late night: everything 50 min later",
		"the fortnight at a glance", "needs a look: 2026-01-18: Phase 3 → 4 overdue", "the season's Status page: http://"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
