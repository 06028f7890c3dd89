package crashpoints

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestCrashpoints explores every path (make crashpoints runs it alone,
// verbosely). CRASHPOINTS_PATHS (comma-separated names) narrows it while
// developing; CRASHPOINTS_PARALLEL sets the runs at once (default 4).
func TestCrashpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("the exploration takes minutes")
	}
	scenarios := Scenarios
	if only := os.Getenv("CRASHPOINTS_PATHS"); only != "" {
		names := strings.Split(only, ",")
		scenarios = slices.DeleteFunc(slices.Clone(Scenarios), func(s *Scenario) bool { return !slices.Contains(names, s.Name) })
	}
	o := Options{Parallel: 4}
	if n, err := strconv.Atoi(os.Getenv("CRASHPOINTS_PARALLEL")); err == nil {
		o.Parallel = n
	}
	ctx := context.Background()
	if bin, ok := emulator.BigQueryBinary(); ok {
		o.BigQuery = bin
	} else {
		fmt.Printf("crashpoints: BigQuery paths skipped: no emulator at %s (make bigquery-emulator)\n", bin)
	}
	rep := Explore(ctx, scenarios, o)
	rep.Write(os.Stdout)
	t.Logf("explored in %v with %d runs at once on %d CPUs", rep.Took.Round(100_000_000), o.Parallel, runtime.NumCPU())
	tot := rep.Totals()
	if tot.Errors > 0 {
		t.Errorf("%d runs could not be carried out (table above)", tot.Errors)
	}
	if tot.Violations > 0 {
		t.Errorf("%d runs broke an invariant (table above)", tot.Violations)
	}
}

// The explorer is a test kit: what is deployed must not link it.
func TestNotLinkedByTheFunctions(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../functions/...", "../app").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasSuffix(pkg, "/internal/crashpoints") {
			t.Fatalf("the deployed functions link %s", pkg)
		}
	}
}

// docs/reliability.md lists the paths; keep them in step.
func TestReliabilityDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/reliability.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range Scenarios {
		row := fmt.Sprintf("| `%s` | %s |", sc.Name, sc.Proves)
		if !strings.Contains(string(b), row) {
			t.Errorf("docs/reliability.md lacks the row\n%s", row)
		}
	}
}
