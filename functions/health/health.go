// Package health registers the Health Cloud Function. Deploy with
// --entry-point=Health; the logic lives in internal/.
package health

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("Health", app.EntryPoint("Health")) }
