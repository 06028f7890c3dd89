// Package phasegate is the module root that Cloud Build's Go buildpack
// compiles for `gcloud functions deploy --source .`: importing every
// functions/… package registers every entry point, and --entry-point picks
// the one a deployment serves.
package phasegate

import (
	_ "github.com/phasegate/phasegate/functions/health"
	_ "github.com/phasegate/phasegate/functions/phase2to3"
	_ "github.com/phasegate/phasegate/functions/phase3to4"
	_ "github.com/phasegate/phasegate/functions/phase4to5"
	_ "github.com/phasegate/phasegate/functions/predictioncompletions"
	_ "github.com/phasegate/phasegate/functions/status"
	_ "github.com/phasegate/phasegate/functions/sweep"
)
