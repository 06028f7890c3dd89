package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/alert"
	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/history"
)

func effectsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "effects",
		Short: "Inspect and act on the effect log (what decisions owe: messages, Slack posts, history rows)",
		Long: `Every side effect a decision owes — a trigger or batch message, a Slack
alert or its "resolved", a history row — is a record in the effect log
(orchestrator_effects), performed by the request that decided it or else by
the sweep. An effect stays owed while its destination is down; only one its
destination refuses (Slack answering 4xx for 24 h, a row BigQuery rejects)
ends failed, with an alert, and counts in Health until an operator retries
or dismisses it.`,
	}
	cmd.AddCommand(effectsListCmd(), effectsRetryCmd(), effectsDismissCmd(), effectsTakeOverCmd())
	return cmd
}

func effectsListCmd() *cobra.Command {
	var (
		state  string
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list [--state owed|failed|dismissed|done] [--limit N]",
		Short: "List effects in a state, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st := effect.State(state)
			switch st {
			case effect.Owed, effect.Failed, effect.Dismissed, effect.Done:
			default:
				return usagef("--state %q: want owed, failed, dismissed or done", state)
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit %d: want 1 to 1000", limit)
			}
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				recs, err := effect.List(cmd.Context(), a.FS, a.Effects.Names, st, limit)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), recs)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tDESTINATION\tGAME DATE\tCREATED\tTRIES\tFAILURES\tNEXT TRY\tLAST ERROR")
				for _, r := range recs {
					next := "–"
					if !r.DueAt.IsZero() {
						next = r.DueAt.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.ID, r.Kind, r.Destination, r.GameDate,
						r.CreatedAt.Format(time.RFC3339), r.Tries, r.Failures, next, firstLine(r.LastError))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d %s effect(s) shown\n", len(recs), st)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&state, "state", string(effect.Owed), "owed, failed, dismissed or done")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func effectsRetryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID",
		Short: "Make a failed or dismissed effect owed again and try it now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				st, err := a.Effects.Retry(cmd.Context(), args[0])
				if err := effectError(err, args[0]); err != nil {
					return err
				}
				switch {
				case st.Done:
					fmt.Fprintf(cmd.OutOrStdout(), "performed %s (%s)\n", args[0], st.Ref)
				default:
					fmt.Fprintf(cmd.OutOrStdout(), "%s is owed again; this try: %s (%v); the sweep goes on trying\n", args[0], st.Outcome, st.Err)
				}
				return nil
			})
		},
	}
}

func effectsDismissCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dismiss ID",
		Short: "Give up an owed or failed effect: it is no longer performed or counted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				if err := effectError(a.Effects.Dismiss(cmd.Context(), args[0]), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "dismissed %s\n", args[0])
				return nil
			})
		},
	}
}

// effectsTakeOverCmd moves what revisions before the effect log still owe
// in their outboxes into it at once, as every sweep does a page at a time.
func effectsTakeOverCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "take-over",
		Short: "Move what earlier revisions' outboxes still owe (orchestrator_alerts, orchestrator_history) into the effect log now, and carry their gates' trigger generations into the ledger",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				total := 0
				for {
					n, err := alert.TakeOver(cmd.Context(), a.FS, a.Effects.Names, a.Effects)
					if a.History != nil && err == nil {
						var m int
						m, err = history.TakeOver(cmd.Context(), a.FS, a.Effects.Names, a.Effects, a.History.Table())
						n += m
					}
					if err != nil {
						return err
					}
					total += n
					if n == 0 {
						break
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d outbox document(s) taken over\n", total)
				gates := 0
				for _, g := range a.Gates {
					n, err := g.SeedLedger(cmd.Context(), 300)
					if err != nil {
						return err
					}
					gates += n
				}
				fmt.Fprintf(cmd.OutOrStdout(), "generation ledger carried forward from %d triggered gate document(s)\n", gates)
				return nil
			})
		},
	}
}

// effectError says what went wrong with an operator's effect id.
func effectError(err error, id string) error {
	switch {
	case err == nil:
		return nil
	case effect.IsNotFound(err):
		return usagef("no effect %q: `phasegate effects list` shows their ids", id)
	case errors.Is(err, effect.ErrNotChangeable):
		return usagef("%v", err)
	}
	return err
}
