package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/batch"
)

// batchCmd groups the prediction-batch operator commands. The logic lives
// in internal/batch; these only parse flags and print.
func batchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "batch",
		Short: "Inspect, check and migrate prediction batches",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usagef("batch: name a subcommand (status, check, migrate)")
		},
	}
	cmd.AddCommand(batchStatusCmd(), batchCheckCmd(), batchMigrateCmd())
	return cmd
}

func batchStatusCmd() *cobra.Command {
	var id string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status --batch-id ID",
		Short: "Show a batch: mode, expected players, counts from the subcollection and the array, completion",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return usagef("batch status: --batch-id is required")
			}
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				s, err := a.Batches.Status(cmd.Context(), id, batch.StatusOptions{CountDocuments: true})
				if errors.Is(err, batch.ErrNotFound) {
					return fmt.Errorf("batch %s not found", id)
				}
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return batchJSON(out, s)
				}
				w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				complete := "no"
				if s.Complete {
					complete = fmt.Sprintf("yes (%s, %s) at %s", s.Status, s.Reason, s.CompletedAt.Format(time.RFC3339))
				} else if s.State != "" {
					complete = "no; completion " + s.State
				}
				for _, row := range [][2]string{
					{"batch", s.BatchID}, {"game date", s.GameDate}, {"correlation id", s.CorrelationID},
					{"mode", s.Mode}, {"expected players", fmt.Sprint(s.Expected)},
					{"counted, subcollection", fmt.Sprint(*s.Subcollection)},
					{"counted, counter shards", fmt.Sprint(s.Shards)},
					{"counted, array", fmt.Sprint(s.Array)},
					{"array only (not in subcollection)", fmt.Sprint(s.ArrayOnly)},
					{"distinct players", fmt.Sprint(s.Distinct)},
					{"completed_count", fmt.Sprint(s.Completed)},
					{"total predictions", fmt.Sprint(s.Predictions)},
					{"complete", complete},
					{"start time", s.StartTime.Format(time.RFC3339)},
					{"progress time", s.ProgressTime.Format(time.RFC3339)},
				} {
					fmt.Fprintf(w, "%s\t%s\n", row[0], row[1])
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&id, "batch-id", "", "the batch id")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func batchCheckCmd() *cobra.Command {
	var id string
	var lookBack time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check [--batch-id ID] [--look-back 72h]",
		Short: "Verify batches: open ones' arrays are in the subcollection and within the cap, completed ones' counts agree; exit 1 on any mismatch",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lookBack < 0 {
				return usagef("batch check: --look-back must not be negative")
			}
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				rep, err := a.Batches.Check(cmd.Context(), batch.CheckOptions{BatchID: id, LookBack: lookBack})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					if err := batchJSON(out, rep); err != nil {
						return err
					}
				} else {
					for _, m := range rep.Mismatches {
						fmt.Fprintf(out, "MISMATCH %s %s: %s\n", m.BatchID, m.Kind, m.Detail)
					}
					fmt.Fprintf(out, "checked %d batches (%d open, %d completed, %d completed by the running coordinator skipped): %d mismatches\n",
						rep.Checked, rep.Open, rep.Completed, rep.Skipped, len(rep.Mismatches))
				}
				if len(rep.Mismatches) > 0 {
					return fmt.Errorf("batch check: %d mismatches", len(rep.Mismatches))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&id, "batch-id", "", "check one batch (default: every batch)")
	cmd.Flags().DurationVar(&lookBack, "look-back", 0, "only batches started within this duration (default: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func batchMigrateCmd() *cobra.Command {
	var id string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate [--batch-id ID]",
		Short: "Copy legacy completed_players arrays into the completions subcollection and repair the counter shards (idempotent, resumable)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				out := cmd.OutOrStdout()
				opts := batch.MigrateOptions{BatchID: id}
				var bar *progressbar.ProgressBar
				if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !asJSON {
					opts.Progress = func(done, total int) {
						if bar == nil {
							bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(f),
								progressbar.OptionSetDescription("copying players"), progressbar.OptionShowCount(),
								progressbar.OptionClearOnFinish())
						}
						_ = bar.Set(done)
					}
				}
				rep, err := a.Batches.Migrate(cmd.Context(), opts)
				if bar != nil {
					_ = bar.Finish()
				}
				if errors.Is(err, batch.ErrNotFound) {
					return fmt.Errorf("batch %s not found", id)
				}
				if asJSON {
					if jerr := batchJSON(out, rep); jerr != nil {
						return jerr
					}
				} else {
					fmt.Fprintf(out, "%d batches: %d array entries, %d copied, %d already present, %d counter shards repaired\n",
						rep.Batches, rep.Players, rep.Copied, rep.Present, rep.ShardsFixed)
				}
				return err
			})
		},
	}
	cmd.Flags().StringVar(&id, "batch-id", "", "migrate one batch (default: every open batch)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func batchJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
