package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
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
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status --date YYYY-MM-DD[,…] | --from YYYY-MM-DD --to YYYY-MM-DD [--url URL]",
		Short: "Show every phase gate of the given game dates, or a range of them as a grid",
		Long: `Show every phase gate of the given game dates (--date), or a range of dates
(--from, --to; at most 62) as the season page's grid: one line per date,
newest first, each gate and the batches with their outcome, the first
trigger's New York time and its offset from the range's median.
--to defaults to New York's today, --from to 13 days before --to.

Reads Firestore directly, as the deployed functions do, or with --url the
Status function through a proxy, so that only run.invoker is needed:
  gcloud run services proxy status --region REGION --port 8081 &
  phasegate status --from 2026-01-06 --to 2026-01-19 --url http://localhost:8081/`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ranged := cmd.Flags().Changed("from") || cmd.Flags().Changed("to")
			if ranged && cmd.Flags().Changed("date") {
				return usagef("--date cannot be combined with --from or --to")
			}
			if o.url != "" {
				u, err := url.Parse(o.url)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return usagef("--url %q: want http(s)://HOST[:PORT][/PATH] of the Status function", o.url)
				}
			}
			if ranged {
				return statusRange(cmd, o)
			}
			return statusDates(cmd, o)
		},
	}
	cmd.Flags().StringVar(&o.dates, "date", "today", "game dates, comma-separated (today: New York's)")
	cmd.Flags().StringVar(&o.from, "from", "", "first game date of a range (default: 13 days before --to)")
	cmd.Flags().StringVar(&o.to, "to", "", "last game date of a range (default: New York's today)")
	cmd.Flags().StringVar(&o.url, "url", "", "read the Status function at this URL (a gcloud run services proxy) instead of Firestore")
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print JSON")
	return cmd
}

type statusOptions struct {
	dates, from, to, url string
	asJSON               bool
}

func statusDates(cmd *cobra.Command, o statusOptions) error {
	ds, err := status.ParseDates(o.dates, time.Now())
	if err != nil {
		return usagef("--date: %v", err)
	}
	var days []status.Date
	if o.url != "" {
		var body struct{ Dates []status.Date }
		if err := getStatus(cmd.Context(), o.url, url.Values{"date": {joinDates(ds)}}, &body); err != nil {
			return err
		}
		days = body.Dates
	} else if err := withApp(cmd, operator(cmd), func(a *app.App) (err error) {
		days, err = a.Status.Dates(cmd.Context(), ds)
		return err
	}); err != nil {
		return err
	}
	if o.asJSON {
		return printJSON(cmd.OutOrStdout(), days)
	}
	printStatus(cmd.OutOrStdout(), days)
	return nil
}

func statusRange(cmd *cobra.Command, o statusOptions) error {
	from, to, err := status.ParseRange(o.from, o.to, time.Now())
	if err != nil {
		return usagef("--from/--to: %v", err)
	}
	var s *status.Season
	if o.url != "" {
		s = &status.Season{}
		if err := getStatus(cmd.Context(), o.url, url.Values{"from": {from.String()}, "to": {to.String()}}, s); err != nil {
			return err
		}
	} else if err := withApp(cmd, operator(cmd), func(a *app.App) (err error) {
		s, err = a.Status.Season(cmd.Context(), from, to)
		return err
	}); err != nil {
		return err
	}
	if o.asJSON {
		return printJSON(cmd.OutOrStdout(), s)
	}
	return status.WriteSeason(cmd.OutOrStdout(), s)
}

// getStatus asks the Status function at base for the JSON answer to q.
func getStatus(ctx context.Context, base string, q url.Values, v any) error {
	u, err := url.Parse(base)
	if err != nil {
		return usagef("--url: %v", err)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("status: read %s: %w", u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s answered %s: %s", u.Redacted(), resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("status: %s did not answer Status's JSON: %w", u.Redacted(), err)
	}
	return nil
}

func joinDates(ds []gamedate.Date) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ",")
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printStatus(out io.Writer, days []status.Date) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	for _, d := range days {
		fmt.Fprintf(tw, "%s\n", d.GameDate)
		fmt.Fprintln(tw, "  phase\tstate\tcompleted\ttrigger\treason\tmode\tmissing\tlate\tunexpected\tfailed")
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
			fmt.Fprintf(tw, "  %s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Phase, p.State, len(p.Completed), len(p.Expected), trig,
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
