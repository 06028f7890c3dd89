package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/buildpack"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/envelope"
)

// Cold is the deployable binary's start and footprint.
type Cold struct {
	BinaryBytes int64     `json:"binary_bytes"`
	StartsMS    []float64 `json:"exec_to_first_answer_ms"`
	MedianMS    float64   `json:"median_ms"`
	MaxMS       float64   `json:"max_ms"`
	RSSMiB      float64   `json:"rss_after_night_mib"`
	Night       *Result   `json:"night"`
}

func (c *Cold) String() string {
	return fmt.Sprintf("buildpack-built function: binary %.1f MiB; exec → first answered request over %d starts: median %.0f ms, max %.0f ms; resident memory after a %d-player batch: %.0f MiB",
		float64(c.BinaryBytes)/(1<<20), len(c.StartsMS), c.MedianMS, c.MaxMS, c.Night.Players, c.RSSMiB)
}

// BuildFunction builds the working tree's tracked files as the buildpack
// does: the source copied, a generated main under functions.local/app, one
// go build. It returns the binary's path.
func BuildFunction(ctx context.Context, dir string) (string, error) {
	// The copy lives outside the repository: tests that walk the tree
	// must not find a second, stale one.
	tmp, err := os.MkdirTemp("", "phasegate-buildpack-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, buildpack.SourceDir)
	files, err := exec.CommandContext(ctx, "git", "ls-files", "-z").Output()
	if err != nil {
		return "", fmt.Errorf("git ls-files: %w", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // deleted in the work tree
		}
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(f)), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			return "", err
		}
	}
	mod, err := exec.CommandContext(ctx, "go", "list", "-m").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	var main bytes.Buffer
	if err := buildpack.Main.Execute(&main, strings.TrimSpace(string(mod))); err != nil {
		return "", err
	}
	app := filepath.Join(src, buildpack.AppDir)
	if err := os.MkdirAll(app, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(app, "main.go"), main.Bytes(), 0o644); err != nil {
		return "", err
	}
	bin, _ := filepath.Abs(filepath.Join(dir, "function"))
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./"+buildpack.AppDir)
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// ColdStart builds the function, starts it n times and measures exec to
// the first answered worker completion (emulators already up), then plays
// an unpaced batch of players through one instance of it (80 at a time)
// and reads its resident memory.
func ColdStart(ctx context.Context, e *Env, n, players, rate int, logf func(string, ...any)) (*Cold, error) {
	dir := filepath.Dir(e.LogDir)
	logf("building the function as the Go buildpack does…")
	bin, err := BuildFunction(ctx, dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	c := &Cold{BinaryBytes: st.Size()}
	project := fmt.Sprintf("lt-cold-%d", time.Now().Unix())
	fs, err := emulator.NewFirestore(ctx, project)
	if err != nil {
		return nil, err
	}
	defer fs.Close()
	if _, err := fs.Collection(batch.Collection).Doc("cold").Set(ctx, map[string]any{
		"batch_id": "cold", "game_date": "2026-01-19", "expected_players": 1 << 20, "is_complete": false,
		"start_time": time.Now().UTC(), "correlation_id": "cold",
	}); err != nil {
		return nil, err
	}
	l := FunctionLauncher(bin, "PredictionCompletions")
	for i := range n {
		t0 := time.Now()
		fleet, err := StartFleet(ctx, l, []string{"GOOGLE_CLOUD_PROJECT=" + project, "GCP_PROJECT=" + project}, e.LogDir, project, 1, 1)
		if err != nil {
			return nil, err
		}
		body := envelope.PushBody(fmt.Sprint("cold-", i), fmt.Appendf(nil,
			`{"player_lookup":"p%d","game_date":"2026-01-19","batch_id":"cold","predictions_generated":1}`, i), nil, time.Now())
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fleet.url(fleet.Instances[0], ""), bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 300 {
					break
				}
			}
			if time.Since(t0) > time.Minute {
				fleet.Stop()
				return nil, fmt.Errorf("cold start: no answer within a minute")
			}
			time.Sleep(2 * time.Millisecond)
		}
		c.StartsMS = append(c.StartsMS, float64(time.Since(t0).Microseconds())/1000)
		fleet.Stop()
	}
	s := append([]float64(nil), c.StartsMS...)
	sort.Float64s(s)
	c.MedianMS, c.MaxMS = s[len(s)/2], s[len(s)-1]
	logf("cold starts (ms): %v", c.StartsMS)
	fe := *e
	fe.Launcher = l
	res, err := fe.Play(ctx, Run{Name: "function night 1x80", Instances: 1, Concurrency: 80, Players: players,
		Redeliver: 0.1, Outstanding: 160, ArrivalRate: rate})
	if err != nil {
		return nil, err
	}
	c.Night = res
	for _, m := range res.RSSMiB {
		c.RSSMiB = max(c.RSSMiB, m)
	}
	return c, nil
}

// LoadAvg is the machine's load average (1, 5, 15 min).
func LoadAvg() string { return loadAvg() }
