package phasegate

import (
	"bytes"
	"context"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/buildpack"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/testenv"
)

const (
	frameworkModule    = "github.com/GoogleCloudPlatform/functions-framework-go"
	frameworkFunctions = frameworkModule + "/functions"
	sourceDir          = buildpack.SourceDir
	appDir             = buildpack.AppDir
)

// TestBuildpackBuild builds the repository the way Cloud Build's Go
// functions buildpack builds `gcloud functions deploy --source .` (module
// mode, go.sum present) and runs the binary once per entry point against
// the emulators. Each step is one the buildpack takes; a failure names it.
func TestBuildpackBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the deployable binary; skipped with -short")
	}
	src := filepath.Join(t.TempDir(), sourceDir)
	copyTracked(t, src)

	// 1. Every .go file of the root, tests included, is parsed for one
	// package name and its imports.
	pkgs, err := parser.ParseDir(token.NewFileSet(), src, nil, parser.ImportsOnly)
	if err != nil {
		t.Fatalf("buildpack step 'extract package': %v", err)
	}
	if len(pkgs) != 1 {
		var names []string
		for n := range pkgs {
			names = append(names, n)
		}
		t.Fatalf("buildpack step 'extract package': multiple packages in user code directory: %v", names)
	}
	imports := map[string]bool{}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, im := range f.Imports {
				imports[strings.Trim(im.Path.Value, `"`)] = true
			}
		}
	}
	if !imports[frameworkFunctions] {
		t.Fatalf("no root file imports %s: the buildpack would generate a main that calls the entry point as a function of the root package", frameworkFunctions)
	}

	// 2. The module path needs a dot in its first element.
	mod := goCmd(t, src, "list", "-m")
	if first, _, _ := strings.Cut(mod, "/"); !strings.Contains(first, ".") {
		t.Fatalf("buildpack step 'module name': %q has no dot in its first path element", mod)
	}
	// 3. With go.sum present the buildpack does not tidy before reading the
	// framework's version from go.mod; without the requirement it would
	// inject a version of its own.
	if _, err := os.Stat(filepath.Join(src, "go.sum")); err != nil {
		t.Fatalf("go.sum is not tracked: %v", err)
	}
	if v := goCmd(t, src, "list", "-m", "-f", "{{.Version}}", frameworkModule); v == "" {
		t.Fatalf("go.mod does not require %s", frameworkModule)
	}

	// 4. Generate main, tidy, build that directory from the source root.
	main := filepath.Join(src, appDir)
	if err := os.MkdirAll(main, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := buildpack.Main.Execute(&buf, mod); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(main, "main.go"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(src, "go.mod"))
	goCmd(t, src, "mod", "tidy")
	if after, _ := os.ReadFile(filepath.Join(src, "go.mod")); !bytes.Equal(before, after) {
		t.Errorf("the buildpack's `go mod tidy` changes go.mod, so the deployed dependencies differ from the tested ones; run go mod tidy:\n%s", after)
	}
	bin := filepath.Join(t.TempDir(), "main")
	goCmd(t, src, "build", "-o", bin, main)

	// 5. Cloud Run starts the binary with PORT and FUNCTION_TARGET.
	project := testenv.Project(t)
	fs := testenv.Firestore(t, project)
	const date = "2026-01-19"
	if _, err := fs.Doc("prediction_batches/b1").Set(context.Background(), map[string]any{
		"batch_id": "b1", "game_date": date, "expected_players": 2, "is_complete": false,
		"start_time": time.Now(), "correlation_id": "c1",
	}); err != nil {
		t.Fatal(err)
	}
	completion := func(name string) []byte {
		return fmt.Appendf(nil, `{"processor_name":%q,"game_date":%q,"status":"success","execution_id":"e1"}`, name, date)
	}
	tests := []struct {
		target string
		method string
		body   []byte
		want   int
	}{
		{"Phase2To3", "POST", completion("BdlPlayerBoxscoresProcessor"), 204},
		{"Phase3To4", "POST", completion("PlayerGameSummaryProcessor"), 204},
		{"Phase4To5", "POST", completion("MLFeatureStoreProcessor"), 204},
		{"PredictionCompletions", "POST", fmt.Appendf(nil, `{"player_lookup":"lebronjames","game_date":%q,"batch_id":"b1","predictions_generated":5}`, date), 204},
		{"Sweep", "POST", []byte(`{}`), 204},
		{"Health", "GET", nil, 200},
		{"Status", "GET", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			base := startFunction(t, bin, tt.target, project)
			var req *http.Request
			if tt.method == "POST" {
				req, _ = http.NewRequest("POST", base, bytes.NewReader(envelope.PushBody("m-"+tt.target, tt.body, nil, time.Now())))
				// Binary-mode CloudEvent, as Eventarc delivers it.
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("ce-id", "m-"+tt.target)
				req.Header.Set("ce-specversion", "1.0")
				req.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
				req.Header.Set("ce-source", "//pubsub.googleapis.com/projects/"+project+"/topics/t")
			} else {
				req, _ = http.NewRequest("GET", base+"?date="+date, nil)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s: status %d, want %d: %s", tt.method, tt.target, resp.StatusCode, tt.want, body)
			}
		})
	}
	// The gate events above were recorded in the emulator, under GCP_PROJECT.
	snap, err := fs.Doc("phase3_completion/" + date).Get(context.Background())
	if err != nil {
		t.Fatalf("the Phase3To4 binary recorded nothing: %v", err)
	}
	if _, ok := snap.Data()["player_game_summary"]; !ok {
		t.Errorf("phase3_completion/%s lacks player_game_summary: %v", date, snap.Data())
	}
}

// copyTracked copies the files a clean clone holds, which is what
// `gcloud functions deploy --source .` uploads from one.
func copyTracked(t *testing.T, dst string) {
	t.Helper()
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for name := range strings.SplitSeq(strings.TrimRight(string(out), "\x00"), "\x00") {
		b, err := os.ReadFile(name)
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// startFunction runs bin as Cloud Run would for target and returns its URL
// once it accepts connections.
func startFunction(t *testing.T, bin, target, project string) string {
	t.Helper()
	ports, err := emulator.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "FUNCTION_TARGET="+target, fmt.Sprintf("PORT=%d", port), "GCP_PROJECT="+project)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s logs:\n%s", target, logs.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "http://" + addr + "/"
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 30 s", target, addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
