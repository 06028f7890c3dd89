package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/config"
)

func serveCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Host every entry point at http://ADDR/<EntryPoint>",
		Long: `Host every entry point at http://ADDR/<EntryPoint>, taking Pub/Sub push
requests and CloudEvents as Eventarc delivers them. Configured like the
deployed functions (ORCHESTRATOR_CONFIG and the environment). With
FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST set it talks to the
emulators and creates missing topics.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return usagef("--addr %q: %v", addr, err)
			}
			return withApp(cmd, app.Options{}, func(a *app.App) error {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return err
				}
				return serve(cmd.Context(), ln, a, cmd.OutOrStdout())
			})
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	return cmd
}

// loadConfig loads the configuration; against the emulators a project id is
// not needed, so a local one is supplied.
func loadConfig(ctx context.Context) (*config.Config, error) {
	cfg, err := config.Load(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.ProjectID == "" && os.Getenv("FIRESTORE_EMULATOR_HOST") != "" {
		cfg.ProjectID = "phasegate-local"
	}
	return cfg, nil
}

// serve runs the HTTP server on ln until ctx ends (SIGTERM), then drains it.
func serve(ctx context.Context, ln net.Listener, a *app.App, out io.Writer) error {
	srv := &http.Server{Handler: a.Mux(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(out, "listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.Log.InfoContext(ctx, "shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
