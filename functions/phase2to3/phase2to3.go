// Package phase2to3 registers the Phase2To3 Cloud Function. Deploy with
// --entry-point=Phase2To3; the logic lives in internal/.
package phase2to3

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("Phase2To3", app.EntryPoint("Phase2To3")) }
