// Package phasegate is the module root that Cloud Build's Go buildpack
// compiles for `gcloud functions deploy --source .`: importing every
// functions/… package registers every entry point, and --entry-point picks
// the one a deployment serves.
//
// Two rules of the buildpack shape this directory (buildpack_test.go
// reproduces them): every *.go file here, _test.go included, must declare
// this one package; and a file here must import the framework's functions
// package itself, because only then does the buildpack generate its
// declarative main (a blank import of this package, then funcframework.Start)
// instead of one that calls a function named by --entry-point in this package.
package phasegate

import (
	_ "github.com/GoogleCloudPlatform/functions-framework-go/functions"

	_ "github.com/phasegate/phasegate/functions/health"
	_ "github.com/phasegate/phasegate/functions/phase2to3"
	_ "github.com/phasegate/phasegate/functions/phase3to4"
	_ "github.com/phasegate/phasegate/functions/phase4to5"
	_ "github.com/phasegate/phasegate/functions/predictioncompletions"
	_ "github.com/phasegate/phasegate/functions/status"
	_ "github.com/phasegate/phasegate/functions/sweep"
)
