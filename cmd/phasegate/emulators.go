package main

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/emulator"
)

func emulatorsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "emulators -- COMMAND [ARG...]",
		Short: "Run COMMAND with the Firestore and Pub/Sub emulators started",
		Long: `Start the official Firestore and Pub/Sub emulators on free loopback ports,
wait until both answer, run COMMAND with FIRESTORE_EMULATOR_HOST and
PUBSUB_EMULATOR_HOST set, and stop the emulators when it exits. make test
uses it so that every test package shares one pair.`,
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
			if err := c.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					e.Stop()
					os.Exit(ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
}
