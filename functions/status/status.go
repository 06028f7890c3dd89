// Package status registers the Status Cloud Function. Deploy with
// --entry-point=Status; the logic lives in internal/.
package status

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("Status", app.EntryPoint("Status")) }
