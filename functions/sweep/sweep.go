// Package sweep registers the Sweep Cloud Function. Deploy with
// --entry-point=Sweep; the logic lives in internal/.
package sweep

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("Sweep", app.EntryPoint("Sweep")) }
