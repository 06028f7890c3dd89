// Command phasegate runs the orchestrator locally and operates it: serve
// hosts every entry point, demo replays a game day on the emulators, and the
// operator commands inspect and repair gates, batches and dead letters.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// usageError marks a wrong flag or value: exit status 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRoot().ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "phasegate:", err)
	code := exitCode(err)
	if code == 2 {
		fmt.Fprintln(os.Stderr, "Run 'phasegate --help' for usage.")
	}
	stop()
	os.Exit(code)
}

// exitCode is 0 for success, 2 for a wrong command, flag or value (ours,
// or cobra's own messages for required flags and bad flag values), a
// command's own status (compare's), else 1 for a failure.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var es exitStatus
	if errors.As(err, &es) {
		return es.code
	}
	var ue usageError
	msg := err.Error()
	if errors.As(err, &ue) || strings.HasPrefix(msg, "required flag") || strings.HasPrefix(msg, "unknown command") ||
		strings.HasPrefix(msg, "invalid argument") {
		return 2
	}
	return 1
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "phasegate",
		Short:         "Exactly-once phase gates for the NBA prediction pipeline",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usagef("name a command")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(serveCmd(), demoCmd(), emulatorsCmd(), statusCmd(), triggerCmd(), compareCmd(), deadLettersCmd(), batchCmd(), effectsCmd(), loadtestCmd(), soakCmd())
	for _, c := range root.Commands() {
		if c.Args == nil {
			c.Args = noArgs
		}
	}
	return root
}

// noArgs rejects positional arguments (and unknown subcommands) as usage
// errors.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s: unexpected argument %q", cmd.CommandPath(), args[0])
	}
	return nil
}
