package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/gate"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/status"
)

// operator is how operator commands run: their logs go to stderr, warnings
// and worse, so that stdout is the command's own output.
func operator(cmd *cobra.Command) app.Options {
	return app.Options{Log: logging.New(cmd.ErrOrStderr(), slog.LevelWarn)}
}

// withApp loads the configuration and builds the App for a command.
func withApp(cmd *cobra.Command, opts app.Options, f func(a *app.App) error) error {
	cfg, err := loadConfig(cmd.Context())
	if err != nil {
		return err
	}
	a, err := app.New(cmd.Context(), cfg, opts)
	if err != nil {
		return err
	}
	defer a.Close()
	return f(a)
}

func statusCmd() *cobra.Command {
	var dates string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status --date YYYY-MM-DD[,…]",
		Short: "Show every phase gate of the given game dates",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := status.ParseDates(dates, time.Now())
			if err != nil {
				return usagef("--date: %v", err)
			}
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				days, err := a.Status.Dates(cmd.Context(), ds)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(days)
				}
				printStatus(cmd.OutOrStdout(), days)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&dates, "date", "today", "game dates, comma-separated (today: New York's)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(out io.Writer, days []status.Date) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	for _, d := range days {
		fmt.Fprintf(tw, "%s\n", d.GameDate)
		fmt.Fprintln(tw, "  phase\tcompleted\ttrigger\treason\tmode\tmissing\tlate\tunexpected\tfailed")
		for _, p := range d.Phases {
			trig := p.TriggerState
			if p.Triggered {
				trig = p.TriggerID
			}
			if trig == "" {
				trig = "waiting"
			}
			if !p.Exists {
				trig = "no completions"
			}
			fmt.Fprintf(tw, "  %s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Phase, len(p.Completed), len(p.Expected), trig,
				dash(p.TriggerReason), dash(p.Mode), list(p.Missing), list(p.Late), list(p.Unexpected), list(p.Failed))
		}
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func list(s []string) string { return dash(strings.Join(s, ",")) }

func triggerCmd() *cobra.Command {
	var phase, date string
	cmd := &cobra.Command{
		Use:   "trigger --phase ENTRYPOINT --date YYYY-MM-DD",
		Short: "Trigger the next phase by hand (reason manual, next generation)",
		Long: `Trigger the next phase of a game date by hand. It publishes a trigger with
trigger_reason "manual" and the next generation's trigger_id, with the
current manifest of completed and missing processors. A trigger that is
already being published (a live claim) is left alone; one left claimed or
released is finished instead.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := gamedate.Parse(date)
			if err != nil {
				return usagef("--date: %v", err)
			}
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				for _, g := range a.Gates {
					p := g.Phase()
					if p.EntryPoint != phase && p.Name != phase {
						continue
					}
					out, err := g.Evaluate(cmd.Context(), d, gate.SourceManual, nil)
					if err != nil {
						return err
					}
					if out.TriggerID == "" {
						fmt.Fprintln(cmd.OutOrStdout(), "nothing published: a trigger is in flight; try again in a minute")
						return nil
					}
					fmt.Fprintf(cmd.OutOrStdout(), "published %s (reason %s, missing %v)\n", out.TriggerID, out.Reason, out.Missing)
					return nil
				}
				return usagef("--phase %q: want one of Phase2To3, Phase3To4, Phase4To5", phase)
			})
		},
	}
	cmd.Flags().StringVar(&phase, "phase", "", "gate entry point or name, e.g. Phase3To4")
	cmd.Flags().StringVar(&date, "date", "", "game date YYYY-MM-DD")
	_ = cmd.MarkFlagRequired("phase")
	_ = cmd.MarkFlagRequired("date")
	return cmd
}
