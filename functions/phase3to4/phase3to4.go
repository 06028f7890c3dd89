// Package phase3to4 registers the Phase3To4 Cloud Function. Deploy with
// --entry-point=Phase3To4; the logic lives in internal/.
package phase3to4

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("Phase3To4", app.EntryPoint("Phase3To4")) }
