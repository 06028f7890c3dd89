// Package predictioncompletions registers the PredictionCompletions Cloud
// Function, triggered by prediction-ready-prod. Deploy with
// --entry-point=PredictionCompletions; the logic lives in internal/batch.
package predictioncompletions

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/phasegate/phasegate/internal/app"
)

func init() { functions.HTTP("PredictionCompletions", app.EntryPoint("PredictionCompletions")) }
