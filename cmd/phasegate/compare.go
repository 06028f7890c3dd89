package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/compare"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/gamedate"
	"github.com/phasegate/phasegate/internal/status"
)

// maxSince bounds a --since range: compare reads a handful of documents
// per date, and a typo in the year should not read a decade.
const maxSince = 400

func compareCmd() *cobra.Command {
	var dates, since string
	var tolerance time.Duration
	cmd := &cobra.Command{
		Use:   "compare (--date YYYY-MM-DD[,…] | --since YYYY-MM-DD) [--tolerance 10m]",
		Short: "Set the running system's outcome of each phase and batch beside a shadow phasegate's decision",
		Long: `compare reads the running system's documents and the shadow collections
(shadow_…, whatever PHASEGATE_MODE says) and prints one line per difference:
triggered or not, when (times within --tolerance agree), reason, partial,
missing processors, processors recorded, batch counts. A difference that is
phasegate's intended improvement is labelled "improvement". A summary line
ends the output.

Exit status: 0 nothing differs, 1 something differs (improvements included),
2 usage, 3 could not read.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := compareDates(dates, since, time.Now())
			if err != nil {
				return err
			}
			if tolerance < 0 {
				return usagef("--tolerance: must not be negative")
			}
			cfg, err := loadConfig(cmd.Context())
			if err != nil {
				return err
			}
			fs, err := emulator.NewFirestore(cmd.Context(), cfg.ProjectID)
			if err != nil {
				return exitWith(3, fmt.Errorf("compare: firestore: %w", err))
			}
			defer fs.Close()
			rep, err := (&compare.Reader{FS: fs, Cfg: cfg}).Run(cmd.Context(), ds, tolerance)
			if err != nil {
				return exitWith(3, err)
			}
			out := cmd.OutOrStdout()
			for _, l := range rep.Lines {
				fmt.Fprintln(out, l)
			}
			fmt.Fprintln(out, rep.Summary())
			if len(rep.Lines) > 0 {
				return exitWith(1, fmt.Errorf("%d difference(s), %d unexplained", len(rep.Lines), rep.Unexplained()))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dates, "date", "", "game dates, comma-separated (today: New York's)")
	cmd.Flags().StringVar(&since, "since", "", "every game date from this one through New York's today")
	cmd.Flags().DurationVar(&tolerance, "tolerance", 10*time.Minute, "trigger times this close agree")
	return cmd
}

func compareDates(dates, since string, now time.Time) ([]gamedate.Date, error) {
	switch {
	case (dates == "") == (since == ""):
		return nil, usagef("give exactly one of --date and --since")
	case dates != "":
		ds, err := status.ParseDates(dates, now)
		if err != nil {
			return nil, usagef("--date: %v", err)
		}
		return ds, nil
	}
	from, err := gamedate.Parse(since)
	if err != nil {
		return nil, usagef("--since: %v", err)
	}
	today := gamedate.Today(now)
	if from.Compare(today) > 0 {
		return nil, usagef("--since: %s is after New York's today (%s)", from, today)
	}
	var ds []gamedate.Date
	for d := from; d.Compare(today) <= 0; d = d.AddDays(1) {
		if len(ds) == maxSince {
			return nil, usagef("--since: more than %d dates", maxSince)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// exitStatus carries a command's own exit status (compare's 1 and 3).
type exitStatus struct {
	code int
	error
}

func exitWith(code int, err error) error { return exitStatus{code, err} }

func (e exitStatus) Unwrap() error { return e.error }
