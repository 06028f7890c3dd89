package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phasegate/phasegate/deploy/internal/fakegcloud"
)

// TestMain lets the test binary stand in for gcloud: deploy.sh runs for
// real against a fakegcloud project (no emulator of the Google Cloud
// control plane exists).
func TestMain(m *testing.M) {
	if dir := os.Getenv("FAKE_GCLOUD_STATE"); dir != "" {
		os.Exit(fakegcloud.Main(dir, os.Args[1:], os.Stdout, os.Stderr))
	}
	// The fake asks the real CLI which files it would upload; one answer
	// serves every run of this test binary.
	shared, err := os.MkdirTemp("", "deploy-test")
	if err != nil {
		panic(err)
	}
	listing = filepath.Join(shared, "listing")
	realConfig = filepath.Join(shared, "gcloud-config")
	realGcloud, _ = exec.LookPath("gcloud")
	code := m.Run()
	os.RemoveAll(shared)
	os.Exit(code)
}

var listing, realConfig, realGcloud string

const (
	number = "123456789012"
	// lag is how many calls a new account, metric, API, agent or role stays
	// unusable: every wait deploy.sh has is exercised at least once.
	lag = 3
)

// project is a fake Google Cloud project deploy.sh runs against.
type project struct {
	t        *testing.T
	dir, bin string
}

// newProject is an empty project but for what the operator creates first:
// the three webhook secrets (and so Secret Manager).
func newProject(t *testing.T) *project {
	t.Helper()
	if realGcloud == "" {
		t.Fatal("gcloud (the Google Cloud CLI) is not installed; it ships with this machine's image")
	}
	p := &project{t: t, dir: t.TempDir(), bin: t.TempDir()}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(p.bin, "gcloud")); err != nil {
		t.Fatal(err)
	}
	// deploy.sh's waits call sleep from PATH: this one only records them.
	if err := os.WriteFile(filepath.Join(p.bin, "sleep"), []byte("#!/bin/sh\necho \"$1\" >>\"$FAKE_GCLOUD_STATE/sleeps.log\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := fakegcloud.New("proj-1", number, lag)
	s.APIs["secretmanager.googleapis.com"] = true
	for _, name := range []string{"slack-webhook-url", "slack-webhook-url-error", "slack-webhook-url-warning"} {
		s.Secrets[name] = &fakegcloud.Secret{}
	}
	if err := fakegcloud.Save(p.dir, s); err != nil {
		t.Fatal(err)
	}
	return p
}

// deployed holds the project the first run made, once per test binary.
var deployed struct {
	sync.Once
	state []byte
	err   string
}

// deployedProject is a project holding the live deployment, as the first
// run on an empty project leaves it.
func deployedProject(t *testing.T) *project {
	t.Helper()
	p := newProject(t)
	deployed.Do(func() {
		if r := p.run(nil); r.code != 0 {
			deployed.err = r.String()
			return
		}
		deployed.state, _ = os.ReadFile(filepath.Join(p.dir, "state.json"))
	})
	if deployed.err != "" {
		t.Fatalf("the first deploy failed: %s", deployed.err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "state.json"), deployed.state, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// result is one run of deploy.sh.
type result struct {
	code           int
	stdout, stderr string
	calls          [][]string // the gcloud calls it made
	sleeps         int        // the waits it made
	elapsed        time.Duration
}

// writes are the calls that change something, one a line.
func (r result) writes() []string {
	var out []string
	for _, c := range r.calls {
		if !fakegcloud.Read(c) {
			out = append(out, strings.Join(c, " "))
		}
	}
	return out
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

func (p *project) run(extra map[string]string, args ...string) result {
	p.t.Helper()
	for _, f := range []string{"calls.log", "sleeps.log"} {
		_ = os.Remove(filepath.Join(p.dir, f))
	}
	// Under -race the stand-in would sleep a second at each exit (the race
	// runtime's atexit_sleep_ms).
	env := []string{"PATH=" + p.bin + ":/usr/bin:/bin", "HOME=" + p.t.TempDir(), "GORACE=atexit_sleep_ms=0",
		"FAKE_GCLOUD_STATE=" + p.dir, "FAKE_GCLOUD_REAL=" + realGcloud, "FAKE_GCLOUD_REAL_CONFIG=" + realConfig,
		"FAKE_GCLOUD_LISTING=" + listing}
	start := time.Now()
	var r result
	r.stdout, r.stderr, r.code = deploySH(p.t, env, extra, args...)
	r.elapsed = time.Since(start)
	if b, err := os.ReadFile(filepath.Join(p.dir, "calls.log")); err == nil {
		for line := range strings.Lines(string(b)) {
			var args []string
			if err := json.Unmarshal([]byte(line), &args); err != nil {
				p.t.Fatalf("calls.log: %v", err)
			}
			r.calls = append(r.calls, args)
		}
	}
	if b, err := os.ReadFile(filepath.Join(p.dir, "sleeps.log")); err == nil {
		r.sleeps = strings.Count(string(b), "\n")
	}
	parseNewShapes(p.t, r.calls)
	return r
}

// parseNewShapes runs each call of a kind not parsed yet through this
// machine's gcloud, offline, as TestPlanParsesWithTheRealCLI does for the
// plan: the fake accepts what deploy.sh sends, and the real parser must
// too — probes, updates and removals included.
func parseNewShapes(t *testing.T, calls [][]string) {
	t.Helper()
	var cmds [][]string
	for _, args := range calls {
		if args[0] != "meta" { // meta list-files-for-upload ran for real in the fake
			cmds = append(cmds, append([]string{"gcloud"}, args...))
		}
	}
	cmds = unparsed(cmds)
	cond := filepath.Join(t.TempDir(), "condition.json")
	if err := os.WriteFile(cond, []byte(`{"expression": "resource.name == \"x\"", "title": "t"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range cmds {
		// The condition file of a run is gone with the run.
		if i := slices.Index(args, "--condition-from-file"); i >= 0 {
			args[i+1] = cond
		}
	}
	parseWithRealCLI(t, "run", cmds)
	if len(cmds) > 0 {
		t.Logf("%d new kinds of command parsed by the real gcloud", len(cmds))
	}
}

// deploy runs deploy.sh and fails the test unless it succeeds.
func (p *project) deploy(extra map[string]string, args ...string) result {
	p.t.Helper()
	r := p.run(extra, args...)
	if r.code != 0 {
		p.t.Fatalf("deploy.sh %v %v: %s", extra, args, r)
	}
	return r
}

func (p *project) state() *fakegcloud.State {
	p.t.Helper()
	s, err := fakegcloud.Load(p.dir)
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// change changes the project by hand, as an operator or the running system
// would.
func (p *project) change(f func(*fakegcloud.State)) {
	p.t.Helper()
	if err := fakegcloud.Update(p.dir, f); err != nil {
		p.t.Fatal(err)
	}
}

var shadow = map[string]string{"MODE": "shadow", "PREFIX": "shd-"}

const runtimeSA = "serviceAccount:phasegate-runtime@proj-1.iam.gserviceaccount.com"

// TestFirstRunOnAnEmptyProject: with every new account, metric, API, role
// and the Pub/Sub agent unusable for a while, the first run waits for each
// and succeeds, and a second run creates, updates, deletes and deploys
// nothing.
func TestFirstRunOnAnEmptyProject(t *testing.T) {
	p := newProject(t)
	first := p.deploy(nil)
	for _, wait := range []string{
		"waiting 5s for an API just enabled to answer",
		"for IAM to see phasegate-runtime@proj-1.iam.gserviceaccount.com",
		"for IAM to see service-" + number + "@gcp-sa-pubsub.iam.gserviceaccount.com",
		"for Cloud Monitoring to know the new log-based metrics",
		"for the build account's new roles to take effect",
	} {
		if !strings.Contains(first.stderr, wait) {
			t.Errorf("the first run never waited %q:\n%s", wait, first.stderr)
		}
	}
	if first.sleeps == 0 {
		t.Error("the first run waited without sleeping")
	}
	s := p.state()
	if len(s.Functions) != 7 || len(s.Subscriptions) != 6 || len(s.Policies) != 4 || len(s.Metrics) != 7 || s.Jobs["orchestrator-sweep"] == nil {
		t.Errorf("the first run left the project incomplete: %d functions, %d subscriptions, %d policies, %d metrics",
			len(s.Functions), len(s.Subscriptions), len(s.Policies), len(s.Metrics))
	}
	t.Logf("first run: %d gcloud calls (%d writes), %d waits, %v", len(first.calls), len(first.writes()), first.sleeps, first.elapsed.Round(time.Millisecond))

	second := p.deploy(nil)
	if w := second.writes(); len(w) > 0 {
		t.Errorf("the second run changed %d things:\n%s", len(w), strings.Join(w, "\n"))
	}
	if second.sleeps > 0 {
		t.Errorf("the second run waited %d times", second.sleeps)
	}
	t.Logf("no-op re-run: %d gcloud calls, 0 writes, %v (deploy.sh says: %s)", len(second.calls),
		second.elapsed.Round(time.Millisecond), strings.TrimSpace(lastLine(second.stderr)))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestFunctionRedeployedOnlyWhenItDiffers: a change to one function's
// settings or source redeploys that function and nothing else.
func TestFunctionRedeployedOnlyWhenItDiffers(t *testing.T) {
	p := deployedProject(t)
	for _, tt := range []struct {
		name   string
		change func(*fakegcloud.State)
	}{
		{"memory changed by hand", func(s *fakegcloud.State) { s.Functions["phase3to4"].Memory = "512Mi" }},
		{"an older source", func(s *fakegcloud.State) { s.Functions["phase3to4"].Labels["phasegate-source"] = "0123abcd" }},
		{"a failed deploy", func(s *fakegcloud.State) { s.Functions["phase3to4"].State = "FAILED" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p.change(tt.change)
			r := p.deploy(nil)
			if w := r.writes(); len(w) != 1 || !strings.HasPrefix(w[0], "functions deploy phase3to4 ") {
				t.Errorf("want phase3to4 redeployed alone, got:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}

// TestDryRunHashIsTheRunsHash: the label a dry run prints is the one a run
// sets (git's view of the tree is gcloud's upload list).
func TestDryRunHashIsTheRunsHash(t *testing.T) {
	p := deployedProject(t)
	var planned string
	for _, c := range plan(t, nil) {
		if is(c, "functions", "deploy") {
			planned, _ = flag(c, "--update-labels")
			break
		}
	}
	if got := "phasegate-source=" + p.state().Functions["sweep"].Labels["phasegate-source"]; planned != got || len(got) > len("phasegate-source=")+63 {
		t.Errorf("dry run labels %q, a run %q", planned, got)
	}
}

// TestChannelsKept: alert policies keep the channels they have when
// NOTIFICATION_CHANNELS is empty — also when their content is replaced —
// take the ones it names, and lose them with none.
func TestChannelsKept(t *testing.T) {
	p := deployedProject(t)
	a, b := "projects/proj-1/notificationChannels/111", "projects/proj-1/notificationChannels/222"
	channels := func() map[string][]string {
		out := map[string][]string{}
		for _, pol := range p.state().Policies {
			out[pol.Body["displayName"].(string)] = pol.Channels
		}
		return out
	}
	want := func(what string, ch ...string) {
		t.Helper()
		for title, got := range channels() {
			if !slices.Equal(got, ch) {
				t.Errorf("%s: %q notifies %v, want %v", what, title, got, ch)
			}
		}
	}
	p.deploy(map[string]string{"NOTIFICATION_CHANNELS": a + "," + b})
	want("named", a, b)
	if r := p.deploy(nil); len(r.writes()) > 0 {
		t.Errorf("a run without NOTIFICATION_CHANNELS changed:\n%s", strings.Join(r.writes(), "\n"))
	}
	want("kept", a, b)
	// Someone edits a policy: the run replaces it from its file, and must
	// give its channels again.
	p.change(func(s *fakegcloud.State) {
		for _, pol := range s.Policies {
			pol.Labels["phasegate-config"] = "edited"
		}
	})
	r := p.deploy(nil)
	if n := len(r.writes()); n != 4 {
		t.Errorf("want the 4 edited policies replaced, got:\n%s", strings.Join(r.writes(), "\n"))
	}
	want("kept through a replacement", a, b)
	p.deploy(map[string]string{"NOTIFICATION_CHANNELS": b})
	want("replaced", b)
	p.deploy(map[string]string{"NOTIFICATION_CHANNELS": "none"})
	want("removed")
}

// TestShadowIsolatedAndDeleted: a shadow copy beside the live deployment
// has its own dead-letter topic and inspect subscription, no metric or
// policy, touches nothing live, and --delete returns the project to the
// live deployment alone; a second --delete changes nothing.
func TestShadowIsolatedAndDeleted(t *testing.T) {
	p := deployedProject(t)
	live := p.state().Resources()
	livePolicies, _ := json.Marshal(p.state().Policies)
	liveMetrics, _ := json.Marshal(p.state().Metrics)

	p.deploy(shadow)
	s := p.state()
	n := 0
	for name, sub := range s.Subscriptions {
		if !strings.HasPrefix(name, "shd-") {
			continue
		}
		n++
		if name == "shd-orchestrator-dead-letter-inspect" {
			if sub.Topic != "shd-orchestrator-dead-letter" {
				t.Errorf("the shadow's inspect subscription reads %s", sub.Topic)
			}
		} else if sub.DeadLetterTopic != "shd-orchestrator-dead-letter" {
			t.Errorf("%s dead-letters into %s", name, sub.DeadLetterTopic)
		}
	}
	if n != 6 {
		t.Errorf("the shadow has %d subscriptions, want 6", n)
	}
	if b, _ := json.Marshal(s.Policies); !bytes.Equal(b, livePolicies) {
		t.Error("the shadow run changed the alert policies")
	}
	if b, _ := json.Marshal(s.Metrics); !bytes.Equal(b, liveMetrics) {
		t.Error("the shadow run changed the log-based metrics")
	}
	for _, m := range s.Metrics {
		if f := m.Config["filter"].(string); regexp.MustCompile(`service_name=~"\^\([^)]*shd-`).MatchString(f) || !strings.Contains(f, "service_name") {
			t.Errorf("a live metric does not name only the live services: %s", f)
		}
	}
	if s.Topics["orchestrator-dead-letter"].Policy.Has("serviceAccount:shd-phasegate-runtime@proj-1.iam.gserviceaccount.com", "roles/pubsub.publisher") {
		t.Error("the shadow may publish to the live dead-letter topic")
	}

	p.deploy(shadow, "--delete")
	if got := p.state().Resources(); !bytes.Equal(got, live) {
		t.Errorf("after --delete the project is not the live deployment alone:\n%s", diffLines(string(live), string(got)))
	}
	if r := p.deploy(shadow, "--delete"); len(r.writes()) > 0 {
		t.Errorf("a second --delete changed:\n%s", strings.Join(r.writes(), "\n"))
	}
}

// TestGrantsFollowInputs: grants follow BQ_READ_DATASETS both ways, a role
// the plan no longer grants (the build account's old
// roles/cloudbuild.builds.builder) is removed, and --delete works after a
// change.
func TestGrantsFollowInputs(t *testing.T) {
	p := deployedProject(t)
	live := p.state().Resources()
	build := "serviceAccount:phasegate-build@proj-1.iam.gserviceaccount.com"
	p.change(func(s *fakegcloud.State) {
		s.ProjectPolicy.Bindings = append(s.ProjectPolicy.Bindings, fakegcloud.Binding{Role: "roles/cloudbuild.builds.builder", Members: []string{build}})
	})
	p.deploy(map[string]string{"BQ_READ_DATASETS": "nba_raw"})
	var viewer []string
	for _, b := range p.state().ProjectPolicy.Bindings {
		if b.Role == "roles/bigquery.dataViewer" && slices.Contains(b.Members, runtimeSA) {
			viewer = append(viewer, b.Condition.Expression)
		}
	}
	if len(viewer) != 1 || strings.Contains(viewer[0], "nba_analytics") || !strings.Contains(viewer[0], "nba_raw") {
		t.Errorf("after BQ_READ_DATASETS=nba_raw the runtime reads %q", viewer)
	}
	if p.state().ProjectPolicy.Has(build, "roles/cloudbuild.builds.builder") {
		t.Error("the build account keeps roles/cloudbuild.builds.builder")
	}
	p.deploy(nil)
	if got := p.state().Resources(); !bytes.Equal(got, live) {
		t.Errorf("back to the default datasets, the project differs from the first deploy:\n%s", diffLines(string(live), string(got)))
	}

	p.deploy(shadow)
	p.deploy(map[string]string{"MODE": "shadow", "PREFIX": "shd-", "BQ_READ_DATASETS": "nba_raw,nba_predictions"})
	p.deploy(map[string]string{"PREFIX": "shd-", "BQ_READ_DATASETS": "other"}, "--delete")
	if got := p.state().Resources(); !bytes.Equal(got, live) {
		t.Errorf("--delete after a change of datasets leaves:\n%s", diffLines(string(live), string(got)))
	}
}

// TestPreflightStopsBeforeAnyChange: what would collide with the running
// system's settings on a shared collection, or remove an operator's flag,
// stops the run with exit 1 and the fix, having changed nothing.
func TestPreflightStopsBeforeAnyChange(t *testing.T) {
	withFirestore := func(s *fakegcloud.State) {
		s.APIs["firestore.googleapis.com"] = true
		s.Databases = []string{"(default)"}
	}
	asc := []fakegcloud.FieldIndex{{Order: "ASCENDING"}}
	for _, tt := range []struct {
		name  string
		seed  func(*fakegcloud.State)
		want  []string
		force bool
	}{
		{"a TTL on another field of pubsub_deduplication", func(s *fakegcloud.State) {
			withFirestore(s)
			s.Fields["pubsub_deduplication/ttl_at"] = &fakegcloud.Field{TTL: "ACTIVE"}
		}, []string{"pubsub_deduplication: its TTL policy is on ttl_at", "one TTL field per collection group",
			"gcloud firestore fields ttls update ttl_at --collection-group pubsub_deduplication --disable-ttl --project proj-1"}, false},
		{"indexes of the running system on prediction_batches", func(s *fakegcloud.State) {
			withFirestore(s)
			s.Fields["prediction_batches/completed_players"] = &fakegcloud.Field{Indexes: &asc}
		}, []string{"prediction_batches.completed_players: has index settings of its own (ASCENDING)", "--clear-exemption"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newProject(t)
			p.change(tt.seed)
			before := p.state().Resources()
			r := p.run(nil)
			if r.code != 1 {
				t.Fatalf("want exit 1: %s", r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("the message lacks %q:\n%s", w, r.stderr)
				}
			}
			if w := r.writes(); len(w) > 0 {
				t.Errorf("it changed things before stopping:\n%s", strings.Join(w, "\n"))
			}
			if !bytes.Equal(p.state().Resources(), before) {
				t.Error("the project changed")
			}
			// Only Firestore's API is enabled: the rest cannot be read (exit 3).
			c := p.run(nil, "--check")
			if c.code != 3 || !strings.Contains(c.stdout, "conflict  firestore "+tt.want[0]) {
				t.Errorf("--check: want exit 3 and the conflict: %s", c)
			}
		})
	}
}

// TestForeignEnvironmentVariable: a variable an operator set on a deployed
// function (not one deploy.sh sets) stops the run, naming it, and is
// reported by --check; --force drops it.
func TestForeignEnvironmentVariable(t *testing.T) {
	p := deployedProject(t)
	// gcloud run services update phase2to3 --update-env-vars … (README, Rolling back)
	p.change(func(s *fakegcloud.State) { s.Services["phase2to3"].Env["ENABLE_PHASE2_COMPLETION_DEADLINE"] = "false" })
	r := p.run(nil)
	if r.code != 1 || !strings.Contains(r.stderr, "phase2to3") || !strings.Contains(r.stderr, "ENABLE_PHASE2_COMPLETION_DEADLINE") {
		t.Errorf("want exit 1 naming the function and the variable: %s", r)
	}
	if strings.Contains(r.stderr, "=false") {
		t.Errorf("the message shows the variable's value: %s", r.stderr)
	}
	if len(r.writes()) > 0 {
		t.Errorf("it changed:\n%s", strings.Join(r.writes(), "\n"))
	}
	if c := p.run(nil, "--check"); c.code != 1 || !regexp.MustCompile(`differs +function phase2to3: .*ENABLE_PHASE2_COMPLETION_DEADLINE`).MatchString(c.stdout) {
		t.Errorf("--check does not report it: %s", c)
	}
	p.deploy(nil, "--force")
	if _, ok := p.state().Services["phase2to3"].Env["ENABLE_PHASE2_COMPLETION_DEADLINE"]; ok {
		t.Error("--force kept the variable")
	}
}

// TestCheck: --check right after a deploy finds everything in place; it
// names a grant removed by hand and one added by hand, and a project it
// cannot read is exit 3, never "missing".
func TestCheck(t *testing.T) {
	// APIs not enabled yet: what they hold cannot be read.
	if c := newProject(t).run(nil, "--check"); c.code != 3 || !strings.Contains(c.stdout, "unreadable functions: cloudfunctions.googleapis.com is not enabled") {
		t.Errorf("--check of an empty project: %s", c)
	}
	p := deployedProject(t)
	c := p.run(nil, "--check")
	if c.code != 0 || strings.Contains(c.stdout, "missing") || !strings.Contains(c.stdout, "ok        function phase2to3") {
		t.Fatalf("--check after a deploy: %s", c)
	}
	if len(c.writes()) > 0 {
		t.Errorf("--check changed:\n%s", strings.Join(c.writes(), "\n"))
	}
	t.Logf("--check: %d lines, %d gcloud calls, %v", strings.Count(c.stdout, "\n"), len(c.calls), c.elapsed.Round(time.Millisecond))

	invoker := "serviceAccount:phasegate-invoker@proj-1.iam.gserviceaccount.com"
	for _, tt := range []struct {
		name   string
		change func(*fakegcloud.State)
		want   string
	}{
		{"an invoker removed", func(s *fakegcloud.State) { s.Services["phase3to4"].Policy.Remove(invoker, "roles/run.invoker") },
			"missing   grant roles/run.invoker to " + invoker + " on function phase3to4"},
		{"an extra role", func(s *fakegcloud.State) {
			s.ProjectPolicy.Bindings = append(s.ProjectPolicy.Bindings, fakegcloud.Binding{Role: "roles/editor", Members: []string{runtimeSA}})
		}, "extra     grant roles/editor to " + runtimeSA + " on project proj-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snapshot := p.state()
			p.change(tt.change)
			defer p.change(func(s *fakegcloud.State) { *s = *snapshot })
			c := p.run(nil, "--check")
			if c.code != 1 || !strings.Contains(c.stdout, tt.want) {
				t.Errorf("want exit 1 and %q: %s", tt.want, c)
			}
			var drift []string
			for _, l := range strings.Split(strings.TrimSpace(c.stdout), "\n") {
				if !strings.HasPrefix(l, "ok ") {
					drift = append(drift, l)
				}
			}
			if len(drift) != 1 {
				t.Errorf("want one line of drift, got:\n%s", strings.Join(drift, "\n"))
			}
			j := p.run(nil, "--check", "--json")
			var report struct {
				Status string
				Steps  []struct{ Status, Step, Detail string }
			}
			if err := json.Unmarshal([]byte(j.stdout), &report); err != nil || j.code != 1 || report.Status != "drift" {
				t.Errorf("--check --json: %v: %s", err, j)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		p.change(func(s *fakegcloud.State) {
			s.Unreadable["gcloud.pubsub.topics.list"] = "User not authorized to perform this action."
		})
		c := p.run(nil, "--check")
		if c.code != 3 || !strings.Contains(c.stdout, "unreadable topics: ERROR: (gcloud.pubsub.topics.list) PERMISSION_DENIED") {
			t.Errorf("want exit 3 naming the read: %s", c)
		}
		if strings.Contains(c.stdout, "missing") {
			t.Errorf("what it could not read is reported missing: %s", c.stdout)
		}
		if !strings.Contains(c.stdout, "unknown   topic orchestrator-dead-letter") {
			t.Errorf("the topics' steps are not unknown: %s", c.stdout)
		}
	})
}

// TestFirestoreContention: an operation someone else started on a
// collection group the run changes makes it wait, not fail.
func TestFirestoreContention(t *testing.T) {
	p := deployedProject(t)
	p.change(func(s *fakegcloud.State) {
		delete(s.Fields, "prediction_batches/completed_players")
		s.Busy["prediction_batches"] = 2
	})
	r := p.deploy(nil)
	if !strings.Contains(r.stderr, "waiting 5s for Firestore to finish another operation on the same collection group") {
		t.Errorf("it did not wait for the collection group:\n%s", r.stderr)
	}
	if f := p.state().Fields["prediction_batches/completed_players"]; f == nil || f.Indexes == nil {
		t.Error("prediction_batches.completed_players is not exempt")
	}
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	if len(out) > 40 {
		out = append(out[:40], "…")
	}
	return strings.Join(out, "\n")
}
