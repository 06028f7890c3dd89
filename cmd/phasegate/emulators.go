package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/indexcheck"
)

func emulatorsCmd() *cobra.Command {
	var indexFile string
	cmd := &cobra.Command{
		Use:   "emulators -- COMMAND [ARG...]",
		Short: "Run COMMAND with the Firestore and Pub/Sub emulators started",
		Long: `Start the official Firestore and Pub/Sub emulators on free loopback ports,
wait until both answer, run COMMAND with FIRESTORE_EMULATOR_HOST and
PUBSUB_EMULATOR_HOST set, and stop the emulators when it exits. make test
uses it so that every test package shares one pair.

With --check-indexes FILE, every Firestore client COMMAND's processes create
on the emulator records the shape of each query it sends; once COMMAND
exits, the command fails when one of them lacks its index in FILE, naming
the JSON to add.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("emulators: name a command to run, e.g. phasegate emulators -- go test ./...")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := emulator.Start(cmd.Context(), os.Getenv("PHASEGATE_EMULATOR_LOGS"))
			if err != nil {
				return err
			}
			defer e.Stop()
			fmt.Fprintf(cmd.ErrOrStderr(), "emulators: firestore %s, pubsub %s\n", e.FirestoreHost, e.PubSubHost)
			c := exec.CommandContext(cmd.Context(), args[0], args[1:]...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			c.Env = append(os.Environ(), e.Env()...)
			var queryLog string
			if indexFile != "" {
				f, err := os.CreateTemp("", "phasegate-queries-*.jsonl")
				if err != nil {
					return err
				}
				f.Close()
				queryLog = f.Name()
				defer os.Remove(queryLog)
				c.Env = append(c.Env, indexcheck.EnvVar+"="+queryLog)
			}
			runErr := c.Run()
			if queryLog != "" {
				if st, err := os.Stat(queryLog); runErr == nil && err == nil && st.Size() == 0 {
					// A run that queried nothing checked nothing: recording
					// must have come unwired.
					runErr = errors.New("emulators: --check-indexes: COMMAND sent no Firestore query to record")
				}
				if err := indexcheck.CheckLog(queryLog, indexFile); err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					if runErr == nil {
						runErr = errors.New("emulators: a query lacks its index")
					}
				} else if recs, err := indexcheck.ReadLog(queryLog); err == nil && len(recs) > 0 {
					shapes, callers := map[string]bool{}, map[string]bool{}
					for _, r := range recs {
						shapes[string(r.Query)], callers[r.Caller] = true, true
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "indexcheck: %d query shapes from %d call sites, each served by %s\n",
						len(shapes), len(callers), indexFile)
				}
			}
			if ee, ok := runErr.(*exec.ExitError); ok {
				e.Stop()
				os.Remove(queryLog)
				os.Exit(ee.ExitCode())
			}
			return runErr
		},
	}
	cmd.Flags().StringVar(&indexFile, "check-indexes", "", "index `FILE` (deploy/firestore.indexes.json) every query COMMAND sends must be covered by")
	return cmd
}
