package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/loadtest"
)

type loadtestFlags struct {
	players, shortPlayers, shortRuns, outstanding, rate int
	window, queueTimeout, minBackoff, maxBackoff        time.Duration
	unpaced, paced                                      string
	redeliver, gateDups, killAt                         float64
	floor, gates                                        bool
	out, env                                            string
	coldstart                                           int
}

func loadtestCmd() *cobra.Command {
	var f loadtestFlags
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Play a production-scale night through separate serve processes and count Firestore's writes",
		Long: `Play a night the way it is deployed: K separate 'phasegate serve' processes,
each serving at most C requests at a time (more wait up to --queue-timeout for
a slot, then are refused with 429, as Cloud Run's front end does), behind a
dispatcher that pushes CloudEvents as Pub/Sub push does (redelivery with
backoff on anything but 2xx/4xx, a share of messages delivered twice). Every
instance talks to the Firestore emulator through one gRPC proxy that counts
RPCs and each document's committed writes.

A night: the three gates' completions (with duplicates), then a prediction
batch of --players players arriving evenly over --window, --redeliver of
them delivered twice. Unpaced runs (--unpaced, a list of KxC) push as fast
as the dispatcher can with --outstanding deliveries in flight. Paced runs
(--paced) play the whole night at the default pace, then --short-runs
batches of --short-players at the same rate measure the time from the last
completion to the batch-complete message. --kill-at SIGKILLs instance 0
at that share of a paced batch and starts it again.

--coldstart N builds the function the way Cloud Build's Go buildpack does,
measures N times from exec to the first answered request, plays an unpaced
batch of --players through one instance of it and reports its resident
memory and the binary's size.

Prints a Markdown table and writes results.json (and an SVG per paced run)
to --out. Starts the emulators unless FIRESTORE_EMULATOR_HOST and
PUBSUB_EMULATOR_HOST are set.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLoadtest(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.players, "players", 10000, "players in the night's batch")
	fl.DurationVar(&f.window, "window", 300*time.Second, "the batch's completions arrive evenly over this window in paced runs")
	fl.IntVar(&f.rate, "arrival-rate", 0, "BATCH_ARRIVAL_RATE for the instances (0: players/window, rounded up)")
	fl.StringVar(&f.unpaced, "unpaced", "1x1,1x8,1x80,4x1,4x8,4x80", "unpaced runs, as KxC (instances x concurrency), comma-separated")
	fl.StringVar(&f.paced, "paced", "2x80", "paced runs at the default pace, as KxC")
	fl.IntVar(&f.shortRuns, "short-runs", 5, "short paced runs per paced configuration, for the latency")
	fl.IntVar(&f.shortPlayers, "short-players", 1000, "players in each short paced run")
	fl.IntVar(&f.outstanding, "outstanding", 0, "unpaced: deliveries in flight at once (0: 2·K·C, at least 16, at most 400)")
	fl.Float64Var(&f.redeliver, "redeliver", 0.10, "share of worker completions delivered twice")
	fl.Float64Var(&f.gateDups, "gate-duplicates", 0.25, "share of gate completions delivered twice")
	fl.Float64Var(&f.killAt, "kill-at", 0, "SIGKILL instance 0 when this share of a paced batch was sent, then restart it (0: never)")
	fl.DurationVar(&f.queueTimeout, "queue-timeout", 10*time.Second, "how long a request waits for a free slot on its instance")
	fl.DurationVar(&f.minBackoff, "min-backoff", 10*time.Second, "Pub/Sub's first redelivery delay (deploy.sh's --min-retry-delay)")
	fl.DurationVar(&f.maxBackoff, "max-backoff", 600*time.Second, "Pub/Sub's longest redelivery delay (deploy.sh's --max-retry-delay)")
	fl.BoolVar(&f.floor, "floor", true, "measure the in-process floor (one bare Create per player)")
	fl.BoolVar(&f.gates, "gates", true, "play the gates' completions before the batch")
	fl.StringVar(&f.out, "out", "loadtest-out", "directory for results.json, plots and instance logs")
	fl.StringVar(&f.env, "env", "", "more environment for the instances, as NAME=VALUE,NAME=VALUE")
	fl.IntVar(&f.coldstart, "coldstart", 0, "measure the buildpack-built function's cold start this many times, then its memory after a batch")
	return cmd
}

// fleetEnv starts what a fleet of serve processes needs — the emulators
// unless they run, the counting Firestore proxy, dir/logs — and returns
// the Env that launches this binary's serve, and what stops it all.
func fleetEnv(ctx context.Context, out io.Writer, dir string, queueTimeout, minBackoff, maxBackoff time.Duration) (*loadtest.Env, func(), error) {
	stop, err := ensureEmulators(ctx, out)
	if err != nil {
		return nil, nil, err
	}
	logs := filepath.Join(dir, "logs")
	self, err := os.Executable()
	if err == nil {
		err = os.MkdirAll(logs, 0o755)
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	proxy, err := loadtest.StartProxy(os.Getenv("FIRESTORE_EMULATOR_HOST"))
	if err != nil {
		stop()
		return nil, nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	env := &loadtest.Env{Proxy: proxy, Launcher: loadtest.ServeLauncher(self), LogDir: logs,
		QueueTimeout: queueTimeout, MinBackoff: minBackoff, MaxBackoff: maxBackoff, Log: logf}
	return env, func() { proxy.Close(); stop() }, nil
}

func runLoadtest(ctx context.Context, out io.Writer, f loadtestFlags) error {
	env, stop, err := fleetEnv(ctx, out, f.out, f.queueTimeout, f.minBackoff, f.maxBackoff)
	if err != nil {
		return err
	}
	defer stop()
	logf := env.Log
	rate := f.rate
	if rate == 0 {
		rate = int((float64(f.players) + f.window.Seconds() - 1) / f.window.Seconds())
	}
	var extra []string
	if f.env != "" {
		extra = strings.Split(f.env, ",")
	}
	report := struct {
		Started   time.Time          `json:"started"`
		Load      string             `json:"load_at_start"`
		Floor     float64            `json:"floor_completions_per_second,omitempty"`
		Results   []*loadtest.Result `json:"results"`
		Latency   loadtest.Summary   `json:"paced_latency"`
		ColdStart *loadtest.Cold     `json:"cold_start,omitempty"`
	}{Started: time.Now().UTC(), Load: loadtest.LoadAvg()}
	t0 := time.Now()
	logf("phasegate loadtest: %d players, paced over %v (BATCH_ARRIVAL_RATE=%d), %.0f %% redelivered; load average %s",
		f.players, f.window, rate, 100*f.redeliver, report.Load)

	if f.coldstart > 0 {
		cold, err := loadtest.ColdStart(ctx, env, f.coldstart, f.players, rate, logf)
		if err != nil {
			return err
		}
		report.ColdStart = cold
		report.Results = append(report.Results, cold.Night)
	}
	if f.floor && f.coldstart == 0 {
		if report.Floor, err = loadtest.Floor(ctx, f.players); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		logf("floor: %.0f bare Creates/s in process", report.Floor)
	}
	play := func(r loadtest.Run) error {
		res, err := env.Play(ctx, r)
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		report.Results = append(report.Results, res)
		logf("%-28s %5.0f completions/s, latency %6.0f ms, %d 5xx, %d×429, %.2f RPCs/completion, shard %d/%.1f, batch %d/%.1f, exact %v %s (%.0f s elapsed; load %s)",
			r.Name, res.PerSecond, res.LatencyMS, res.Status5xx, res.Refused429, res.RPCsPerPlayer,
			res.Hot["shard"].Max1s, res.Hot["shard"].Max10s, res.Hot["batch"].Max1s, res.Hot["batch"].Max10s,
			res.Exact(), strings.Join(res.Problems, "; "), time.Since(t0).Seconds(), loadtest.LoadAvg())
		return nil
	}
	if f.coldstart == 0 {
		// Warm the emulator's JIT on every path first, untimed, as
		// production Firestore needs no warming.
		warm := *env
		warm.Log = func(string, ...any) {}
		if _, err := warm.Play(ctx, loadtest.Run{Name: "warm-up", Instances: 2, Concurrency: 80, Players: min(f.players, 1000),
			Redeliver: f.redeliver, Outstanding: 160, ArrivalRate: rate}); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		logf("warm-up night done (%.0f s)", time.Since(t0).Seconds())
		for _, kc := range kcList(f.unpaced) {
			k, c, err := parseKC(kc)
			if err != nil {
				return err
			}
			if err := play(loadtest.Run{Name: "unpaced " + kc, Instances: k, Concurrency: c, Players: f.players,
				Redeliver: f.redeliver, Outstanding: outstanding(f.outstanding, k, c), ArrivalRate: rate, Env: extra}); err != nil {
				return err
			}
		}
		for _, kc := range kcList(f.paced) {
			k, c, err := parseKC(kc)
			if err != nil {
				return err
			}
			name := "night " + kc
			if f.killAt > 0 {
				name = "night with SIGKILL " + kc
			}
			if err := play(loadtest.Run{Name: name, Instances: k, Concurrency: c, Players: f.players, Window: f.window,
				Redeliver: f.redeliver, Gates: f.gates, GateDups: f.gateDups, KillAt: f.killAt, ArrivalRate: rate, Env: extra}); err != nil {
				return err
			}
			last := report.Results[len(report.Results)-1]
			if err := loadtest.Plot(filepath.Join(f.out, strings.ReplaceAll(name, " ", "-")+".svg"), last); err != nil {
				return err
			}
			short := time.Duration(float64(f.window) * float64(f.shortPlayers) / float64(f.players))
			for i := range f.shortRuns {
				if err := play(loadtest.Run{Name: fmt.Sprintf("short %s #%d", kc, i+1), Instances: k, Concurrency: c,
					Players: f.shortPlayers, Window: short, Redeliver: f.redeliver, KillAt: f.killAt, ArrivalRate: rate, Env: extra}); err != nil {
					return err
				}
			}
		}
	}
	report.Latency = loadtest.Latency(report.Results)
	fmt.Fprintf(out, "\nload average at the end: %s; %.0f s in all\n\n", loadtest.LoadAvg(), time.Since(t0).Seconds())
	loadtest.Table(out, report.Floor, report.Results)
	if report.Latency.Runs > 0 {
		fmt.Fprintf(out, "\npaced: last completion → batch-complete message over %d runs: median %.0f ms, max %.0f ms\n",
			report.Latency.Runs, report.Latency.MedianMS, report.Latency.MaxMS)
	}
	if c := report.ColdStart; c != nil {
		fmt.Fprintf(out, "\n%s\n", c)
	}
	b, _ := json.MarshalIndent(report, "", "  ")
	path := filepath.Join(f.out, "results.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s\n", path)
	for _, r := range report.Results {
		if !r.Exact() {
			return fmt.Errorf("loadtest: %s was not exact: %s", r.Name, strings.Join(r.Problems, "; "))
		}
	}
	return nil
}

func kcList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseKC(s string) (int, int, error) {
	ks, cs, ok := strings.Cut(s, "x")
	k, err1 := strconv.Atoi(ks)
	c, err2 := strconv.Atoi(cs)
	if !ok || err1 != nil || err2 != nil || k < 1 || c < 1 {
		return 0, 0, usagef("%q is not KxC (instances x concurrency), e.g. 4x8", s)
	}
	return k, c, nil
}

func outstanding(n, k, c int) int {
	if n > 0 {
		return n
	}
	return min(400, max(16, 2*k*c))
}
