package loadtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A small night through two separate serve processes and the counting
// proxy, with redeliveries, duplicate gate completions and an instance
// SIGKILLed halfway: exactly one message per gate and per batch, nothing
// lost, and the proxy saw the writes to the shards, the batch and the
// gates (so its counts are of real traffic, forwarded unchanged).
func TestNightThroughProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds phasegate and starts two processes; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "phasegate")
	build := exec.Command("go", "build", "-o", bin, "github.com/phasegate/phasegate/cmd/phasegate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	proxy, err := StartProxy(os.Getenv("FIRESTORE_EMULATOR_HOST"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	e := &Env{Proxy: proxy, Launcher: ServeLauncher(bin), LogDir: dir, QueueTimeout: 10 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second, Log: t.Logf}
	for _, r := range []Run{
		{Name: "unpaced", Instances: 2, Concurrency: 2, Players: 60, Redeliver: 0.25, Outstanding: 8,
			Gates: true, GateDups: 0.5, ArrivalRate: 34},
		{Name: "killed", Instances: 2, Concurrency: 4, Players: 60, Window: 3 * time.Second, Redeliver: 0.25,
			KillAt: 0.5, ArrivalRate: 34},
	} {
		t.Run(r.Name, func(t *testing.T) {
			res, err := e.Play(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Exact() {
				t.Fatalf("not exact: %d lost, %d messages, problems %v", res.Lost, res.Messages, res.Problems)
			}
			kinds := []string{"shard", "batch"}
			if r.Gates {
				kinds = append(kinds, "gate")
			}
			for _, k := range kinds {
				if res.Hot[k].Writes == 0 {
					t.Errorf("the proxy counted no %s writes: %+v", k, res.Hot)
				}
			}
			if res.RPCs["Commit"] < r.Players {
				t.Errorf("the proxy counted %d Commits for %d players", res.RPCs["Commit"], r.Players)
			}
			if r.KillAt > 0 && !res.Killed {
				t.Error("no instance was killed")
			}
			t.Logf("%s", fmt.Sprint(res.Attempts))
		})
	}
}
