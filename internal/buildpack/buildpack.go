// Package buildpack holds what Cloud Build's Go functions buildpack
// generates around the repository's root package, for the test that
// reproduces its build and for the load test's cold-start measurement.
package buildpack

import "text/template"

const (
	// SourceDir is where the buildpack moves the uploaded source; AppDir,
	// inside it, is where it generates the main package.
	SourceDir = "serverless_function_source_code"
	AppDir    = "functions.local/app"
)

// Main is what the buildpack generates when the root package imports the
// framework's functions package: a blank import of the root package (its
// module path is the template's argument), whose init functions register
// every entry point, then the framework's server on $PORT, which serves
// FUNCTION_TARGET at "/".
var Main = template.Must(template.New("main").Parse(`package main

import (
	"log"
	"os"

	_ "{{.}}"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if err := funcframework.Start(port); err != nil {
		log.Fatalf("function failed to start: %v", err)
	}
}
`))
