package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/loadtest"
)

func soakCmd() *cobra.Command {
	var (
		s   loadtest.Soak
		out string
		min time.Duration
		max time.Duration
	)
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Play several nights through K serve processes while instances crash, Slack fails and Pub/Sub restarts; count lost, doubled and copied",
		Long: `Play --nights game dates one after another over --window through --instances
separate 'phasegate serve' processes (as 'phasegate loadtest' does: a
dispatcher pushes CloudEvents as Pub/Sub push does, redelivering anything
but 2xx/4xx), each night the three gates' completions (one processor of
each fails first, then succeeds; an unexpected processor reports) and a
batch of --players, --duplicates of every kind delivered twice. Meanwhile:

  - a random live instance is SIGKILLed every ~--kill-every and started
    again --restart-after later;
  - the fake Slack answers 500 from --slack-at for --slack-500, then holds
    every request --slack-hang-for (past the client's 5 s timeout: Slack
    posted, the sender cannot know) for --slack-hang, then recovers;
  - at --pubsub-at the Pub/Sub emulator is cut off, the consumers drain it,
    it is stopped, and --pubsub-down later started again on its port; the
    topics and the consumers' subscriptions are created again before the
    instances get it back (a real Pub/Sub keeps them);
  - the Sweep entry point is invoked every --sweep-every, as Cloud
    Scheduler does, and after the nights until nothing is owed.

Then it counts, from Firestore, pull subscriptions on the output topics
created before the run, the fake Slack and the instances' logs: lost (a
trigger per gate and date, a completion or player, a batch message, an
alert), doubled (a second trigger for a gate and date, a second payload for
one trigger, wrong counts) and copies (one trigger, batch message or alert
delivered more than once), each copy by its cause. Writes soak.json and the
instances' logs to --out; exits 1 when anything was lost or doubled or the
sweeps did not converge. Starts the Firestore emulator unless
FIRESTORE_EMULATOR_HOST is set; the Pub/Sub emulator is its own.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSoak(cmd.Context(), cmd.OutOrStdout(), s, out, min, max)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&s.Instances, "instances", 3, "serve processes (K)")
	fl.IntVar(&s.Concurrency, "concurrency", 80, "requests one instance serves at a time")
	fl.IntVar(&s.Nights, "nights", 8, "game dates played one after another")
	fl.IntVar(&s.Players, "players", 2500, "players in each night's batch")
	fl.DurationVar(&s.Window, "window", 300*time.Second, "the nights share this evenly")
	fl.Float64Var(&s.Duplicates, "duplicates", 0.10, "share of messages delivered twice")
	fl.DurationVar(&s.KillEvery, "kill-every", 8*time.Second, "mean time between SIGKILLs while the nights play")
	fl.DurationVar(&s.RestartAfter, "restart-after", 1500*time.Millisecond, "a killed instance is started again after this")
	fl.DurationVar(&s.SlackAt, "slack-at", 40*time.Second, "the Slack outage starts this long after the first night")
	fl.DurationVar(&s.Slack500, "slack-500", 50*time.Second, "Slack answers 500 this long")
	fl.DurationVar(&s.SlackHang, "slack-hang", 50*time.Second, "then holds requests this long")
	fl.DurationVar(&s.SlackHangFor, "slack-hang-for", 8*time.Second, "how long Slack holds each request while it hangs")
	fl.DurationVar(&s.PubSubAt, "pubsub-at", 160*time.Second, "the Pub/Sub emulator is stopped this long after the first night")
	fl.DurationVar(&s.PubSubDown, "pubsub-down", 15*time.Second, "and started again this long after it stopped")
	fl.DurationVar(&s.SweepEvery, "sweep-every", 15*time.Second, "Cloud Scheduler's tick")
	fl.DurationVar(&s.Converge, "converge", 8*time.Minute, "the final sweeps give up after this")
	fl.Uint64Var(&s.Seed, "seed", 1, "random seed (kills, duplicates, failing processors)")
	// Pub/Sub's maximum retry delay is configurable; deploy.sh's 600 s
	// would have a message failed during the outage wait longer than the
	// whole soak.
	fl.DurationVar(&min, "min-backoff", 10*time.Second, "Pub/Sub's first redelivery delay")
	fl.DurationVar(&max, "max-backoff", 60*time.Second, "Pub/Sub's longest redelivery delay")
	fl.StringVar(&out, "out", "loadtest-out/soak", "directory for soak.json and the instances' logs")
	return cmd
}

func runSoak(ctx context.Context, out io.Writer, s loadtest.Soak, dir string, minBackoff, maxBackoff time.Duration) error {
	if s.Instances < 2 || s.Nights < 1 || s.Players < 1 || s.Window <= 0 || s.KillEvery <= 0 || s.SweepEvery <= 0 {
		return usagef("soak: want at least 2 instances, a night, a player, and positive --window, --kill-every, --sweep-every")
	}
	env, stop, err := fleetEnv(ctx, out, dir, 10*time.Second, minBackoff, maxBackoff)
	if err != nil {
		return err
	}
	defer stop()
	r, err := env.Soak(ctx, s)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| what | count |")
	fmt.Fprintln(out, "|---|---|")
	row := func(what string, v any) { fmt.Fprintf(out, "| %s | %v |\n", what, v) }
	row("nights × players", fmt.Sprintf("%d × %d", r.Nights, r.Players))
	row("events pushed (duplicates among them)", fmt.Sprintf("%d (%d)", r.Events, r.Duplicates))
	row("push attempts by answer (0: no connection)", r.Attempts)
	row("SIGKILLs", r.Kills)
	row("sweeps", r.Sweeps)
	row("Slack 500 / hang", fmt.Sprintf("%.0f s / %.0f s (%d posts abandoned by their sender)", r.Slack500S, r.SlackHangS, r.SlackAbandon))
	row("Pub/Sub away from the instances", fmt.Sprintf("%.0f s (emulator stopped → answering again %.0f s; recreated %s)",
		r.PubSubDownS, r.PubSubRestart, strings.Join(r.Recreated, ", ")))
	row("trigger ids / batch messages / alerts at the consumers", fmt.Sprintf("%d / %d / %d (%d Slack posts)", r.Triggers, r.BatchMsgs, r.SlackAlerts, r.SlackPosts))
	row("lost", r.Lost)
	row("doubled", r.Doubled)
	row("copies: crash / ambiguous / Slack hang / unexplained", fmt.Sprintf("%d: %d / %d / %d / %d", r.Copies, r.Causes.Crash, r.Causes.Ambiguous, r.Causes.Hang, r.Causes.Unexplained))
	row("tries the effect log flagged as possible copies (cause/kind)", r.Flagged)
	row("consumer redeliveries by Pub/Sub (one message id)", r.Redelivered)
	row("converged", fmt.Sprintf("%v, %.0f s after the nights", r.Converged, r.ConvergeS))
	row("wall time", fmt.Sprintf("%.0f s", r.Seconds))
	row("load average", fmt.Sprintf("%s at the start, %s at the end, 1-min max %.1f", r.LoadStart, r.LoadEnd, r.Load1Max))
	for _, d := range r.Detail {
		fmt.Fprintln(out, "  "+d)
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	path := filepath.Join(dir, "soak.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s\n", path)
	fmt.Fprintf(out, "soak: %d events, %d kills, lost %d, doubled %d, copies %d (crash %d, ambiguous %d, of which Slack hang %d; unexplained %d)\n",
		r.Events, r.Kills, r.Lost, r.Doubled, r.Copies, r.Causes.Crash, r.Causes.Ambiguous+r.Causes.Hang, r.Causes.Hang, r.Causes.Unexplained)
	switch {
	case r.Lost > 0 || r.Doubled > 0:
		return fmt.Errorf("soak: lost %d, doubled %d", r.Lost, r.Doubled)
	case !r.Converged:
		return errors.New("soak: the sweeps did not converge: something is still owed")
	}
	return nil
}
