// Package phase4to5 registers the Phase4To5 Cloud Function. Deploy with
// --entry-point=Phase4To5; the logic lives in internal/.
package phase4to5

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("Phase4To5", app.EntryPoint("Phase4To5")) }
