// Package bqclient opens the BigQuery client phasegate's checks and history
// share: the real service with the runtime account's credentials, or an
// emulator named by BIGQUERY_EMULATOR_HOST without credentials.
package bqclient

import (
	"context"
	"fmt"
	"strings"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/option"
)

// New returns a client for project; emulatorHost (host:port or
// http://host:port) points it at an emulator.
func New(ctx context.Context, project, emulatorHost string, opts ...option.ClientOption) (*bigquery.Client, error) {
	if emulatorHost != "" {
		if !strings.Contains(emulatorHost, "://") {
			emulatorHost = "http://" + emulatorHost
		}
		opts = append([]option.ClientOption{option.WithEndpoint(emulatorHost), option.WithoutAuthentication()}, opts...)
	}
	c, err := bigquery.NewClient(ctx, project, opts...)
	if err != nil {
		return nil, fmt.Errorf("bigquery client: %w", err)
	}
	return c, nil
}
