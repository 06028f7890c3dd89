// Package deploy tests deploy.sh: its dry-run plan is parsed by the real
// Google Cloud CLI, offline, and checked against the index file and the
// rules of the deployment (least privilege, secrets, dead letters).
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/phasegate/phasegate/deploy/internal/fakegcloud"
)

var base = map[string]string{"PROJECT": "proj-1", "REGION": "us-west2", "PROJECT_NUMBER": "123456789012"}

// plan runs deploy.sh --dry-run with base plus extra inputs and returns each
// printed command split into words as the shell would.
func plan(t *testing.T, extra map[string]string, args ...string) [][]string {
	t.Helper()
	out, stderr, code := script(t, extra, append([]string{"--dry-run"}, args...)...)
	if code != 0 {
		t.Fatalf("deploy.sh --dry-run: exit %d: %s", code, stderr)
	}
	var cmds [][]string
	for line := range strings.Lines(out) {
		words := shellWords(t, strings.TrimSpace(line))
		if len(words) < 2 || words[0] != "gcloud" {
			t.Fatalf("plan line is not a gcloud command: %q", line)
		}
		for _, w := range words {
			if w == "describe" || w == "list" {
				t.Errorf("the plan holds a probe: %q", line)
			}
		}
		cmds = append(cmds, words)
	}
	return cmds
}

func script(t *testing.T, extra map[string]string, args ...string) (string, string, int) {
	t.Helper()
	// A gcloud first on PATH that records being called: a dry run must not
	// call it.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "gcloud"), []byte("#!/bin/sh\necho \"$*\" >>\"$0.called\"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := deploySH(t, []string{"PATH=" + fake + ":/usr/bin:/bin", "HOME=" + t.TempDir()}, extra, args...)
	if called, err := os.ReadFile(filepath.Join(fake, "gcloud.called")); err == nil && slices.Contains(args, "--dry-run") {
		t.Errorf("the dry run called gcloud:\n%s", called)
	}
	return stdout, stderr, code
}

// deploySH runs deploy.sh with args in env, then base's and extra's
// variables, and returns what it printed and its exit code.
func deploySH(t *testing.T, env []string, extra map[string]string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"deploy.sh"}, args...)...)
	cmd.Env = env
	for k, v := range base {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range extra {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// shellWords splits a shell-quoted line without running it: bash expands
// the words as printf's arguments.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `printf '%s\0' `+line).Output()
	if err != nil {
		t.Fatalf("cannot split %q: %v", line, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// flag returns the value of --name in cmd (the word after it).
func flag(cmd []string, name string) (string, bool) {
	for i, w := range cmd {
		if w == name && i+1 < len(cmd) {
			return cmd[i+1], true
		}
	}
	return "", false
}

func is(cmd []string, words ...string) bool {
	return len(cmd) > len(words) && slices.Equal(cmd[1:1+len(words)], words)
}

// TestPlanParsesWithTheRealCLI runs every planned command through gcloud
// with an empty configuration directory and no network: each must get as
// far as asking for an account, which gcloud does only after it has parsed
// the command, its flags and their values.
func TestPlanParsesWithTheRealCLI(t *testing.T) {
	var cmds [][]string
	for _, extra := range []map[string]string{
		nil,
		{"PREFIX": "pg-", "PHASES": "phase3_to_phase4,prediction_batch", "CONFIG": "deploy/firestore.indexes.json", "OPERATORS": "group:ops@example.com,user:a@example.com"},
		{"NOTIFICATION_CHANNELS": "projects/proj-1/notificationChannels/123,projects/proj-1/notificationChannels/456"},
	} {
		cmds = append(cmds, plan(t, extra)...)
	}
	cmds = append(cmds, plan(t, map[string]string{"PREFIX": "shd-"}, "--delete")...)
	n := len(cmds)
	cmds = unparsed(cmds)
	parseWithRealCLI(t, "planned", cmds)
	t.Logf("%d planned commands, %d distinct to the parser, parsed by the real gcloud", n, len(cmds))
}

// nameFlags take names (of projects, topics, accounts, files…): a command
// that differs from one already parsed only in them parses alike.
var nameFlags = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`--project --member --role --topic --dead-letter-topic --push-endpoint
		--push-auth-service-account --service-account --build-service-account --entry-point --display-name --region
		--regions --location --collection-group --field-config --config-from-file --policy-from-file --set-env-vars
		--update-labels --user-labels --update-user-labels --notification-channels --set-notification-channels
		--condition-from-file`) {
		nameFlags[f] = true
	}
}

// parsed holds what the real CLI has parsed in this test binary.
var parsed sync.Map

// unparsed keeps one command (gcloud …) of each kind the real CLI has not
// parsed yet in this test binary: its command, the flags it gives and the
// values of those that are not names. gcloud takes seconds per command on a
// busy machine.
func unparsed(cmds [][]string) [][]string {
	var out [][]string
	for _, c := range cmds {
		key := []string{fakegcloud.Shape(c[1:])}
		for i, w := range c[:len(c)-1] {
			if strings.HasPrefix(w, "--") && !nameFlags[w] && !strings.HasPrefix(c[i+1], "--") {
				key = append(key, w+"="+c[i+1])
			}
		}
		if _, seen := parsed.LoadOrStore(strings.Join(key, "\x00"), true); !seen {
			out = append(out, c)
		}
	}
	return out
}

// parseWithRealCLI runs commands (gcloud …) through this machine's gcloud
// with an empty configuration directory and no network: each must get as
// far as asking for an account, which gcloud does only after it has parsed
// the command, its flags and their values.
func parseWithRealCLI(t *testing.T, what string, cmds [][]string) {
	t.Helper()
	if len(cmds) == 0 {
		return
	}
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		t.Fatal("gcloud (the Google Cloud CLI) is not installed; it ships with this machine's image")
	}
	cfg := t.TempDir()
	check := func(c []string) {
		cmd := exec.Command(gcloud, c[1:]...)
		cmd.Dir = ".." // deploy.sh runs from the repository root, and so do its file arguments
		cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+cfg, "CLOUDSDK_CORE_DISABLE_PROMPTS=1",
			"CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=1")
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !bytes.Contains(out, []byte("You do not currently have an active account selected")) {
			t.Errorf("gcloud rejected a %s command (exit %d):\n  %s\n%s", what, code, strings.Join(c, " "), firstLines(out, 4))
		}
	}
	// The CLI writes its configuration directory on first use; let one
	// command do that before the others race for it.
	check(cmds[0])
	work := make(chan []string)
	var wg sync.WaitGroup
	for range max(2, runtime.NumCPU()) {
		wg.Go(func() {
			for c := range work {
				check(c)
			}
		})
	}
	for _, c := range cmds[1:] {
		work <- c
	}
	close(work)
	wg.Wait()
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestPlanRules checks what the plan must hold, on the default inputs and
// with a prefix and a subset of phases.
func TestPlanRules(t *testing.T) {
	for _, tt := range []struct {
		name   string
		extra  map[string]string
		prefix string
		eps    []string
	}{
		{"defaults", nil, "", []string{"phase2to3", "phase3to4", "phase4to5", "predictioncompletions", "sweep", "status", "health"}},
		{"prefix and phases", map[string]string{"PREFIX": "pg-", "PHASES": "phase4_to_phase5"}, "pg-", []string{"pg-phase4to5", "pg-sweep", "pg-status", "pg-health"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmds := plan(t, tt.extra)
			var deployed []string
			pushed := map[string]bool{}
			for _, c := range cmds {
				line := strings.Join(c, " ")
				for _, w := range c[1:] {
					if _, cfg, ok := strings.Cut(w, "ORCHESTRATOR_CONFIG=/workspace/serverless_function_source_code/"); ok {
						w, _, _ = strings.Cut(cfg, "|")
					}
					if w == "." || (!strings.ContainsAny(w, "=:") && (strings.HasSuffix(w, ".json") || strings.HasSuffix(w, ".yaml"))) {
						if _, err := os.Stat(filepath.Join("..", w)); err != nil {
							t.Errorf("%q names a file the repository lacks: %q", line, w)
						}
					}
				}
				switch {
				case is(c, "functions", "deploy"):
					deployed = append(deployed, c[3])
					env, _ := flag(c, "--set-env-vars")
					secrets, _ := flag(c, "--set-secrets")
					if !strings.Contains(env, "GCP_PROJECT=proj-1") || strings.Contains(env, "SLACK") {
						t.Errorf("%s: env %q must set GCP_PROJECT and no webhook", c[3], env)
					}
					for _, s := range []string{"SLACK_WEBHOOK_URL=slack-webhook-url:latest", "SLACK_WEBHOOK_URL_ERROR=slack-webhook-url-error:latest", "SLACK_WEBHOOK_URL_WARNING=slack-webhook-url-warning:latest"} {
						if !strings.Contains(secrets, s) {
							t.Errorf("%s: --set-secrets %q lacks %s", c[3], secrets, s)
						}
					}
					for _, f := range []string{"--no-allow-unauthenticated", "--memory", "--cpu", "--concurrency", "--timeout", "--max-instances", "--service-account"} {
						if !slices.Contains(c, f) {
							t.Errorf("%s: no %s", c[3], f)
						}
					}
				case is(c, "pubsub", "subscriptions", "create"):
					if ep, ok := flag(c, "--push-endpoint"); ok {
						pushed[ep] = true
						for _, f := range []string{"--dead-letter-topic", "--max-delivery-attempts", "--min-retry-delay", "--max-retry-delay", "--push-auth-service-account"} {
							if _, ok := flag(c, f); !ok {
								t.Errorf("push subscription %s: no %s", c[4], f)
							}
						}
					}
				case is(c, "iam", "service-accounts", "create"), is(c, "scheduler", "jobs", "create", "pubsub"):
					name := c[4]
					if c[1] == "scheduler" {
						name = c[5]
					}
					if !strings.HasPrefix(name, tt.prefix) {
						t.Errorf("%q: an owned name without the prefix %q", line, tt.prefix)
					}
				}
			}
			if !slices.Equal(deployed, tt.eps) {
				t.Errorf("functions deployed %v, want %v", deployed, tt.eps)
			}
			for _, ep := range tt.eps {
				if ep == tt.prefix+"status" || ep == tt.prefix+"health" {
					continue
				}
				if !pushed["https://"+ep+"-123456789012.us-west2.run.app"] {
					t.Errorf("no push subscription delivers to %s", ep)
				}
			}
			wantLines := []string{
				"gcloud pubsub subscriptions create " + tt.prefix + "orchestrator-dead-letter-inspect --topic " + tt.prefix + "orchestrator-dead-letter --message-retention-duration 7d --expiration-period never --project proj-1",
				"gcloud pubsub topics create " + tt.prefix + "orchestrator-dead-letter --project proj-1",
				"gcloud pubsub topics create " + tt.prefix + "orchestrator-sweep --project proj-1",
				"gcloud firestore fields ttls update expires_at --collection-group pubsub_deduplication --enable-ttl --quiet --project proj-1",
			}
			for _, w := range wantLines {
				if !slices.ContainsFunc(cmds, func(c []string) bool { return strings.Join(c, " ") == w }) {
					t.Errorf("the plan lacks: %s", w)
				}
			}
			// BigQuery: jobs in the project, data only in the datasets the
			// checks read and the history table's.
			runtime := "serviceAccount:" + tt.prefix + "phasegate-runtime@proj-1.iam.gserviceaccount.com"
			for role, datasets := range map[string][]string{
				"roles/bigquery.jobUser":    nil,
				"roles/bigquery.dataViewer": {"nba_raw", "nba_analytics", "nba_precompute", "nba_predictions"},
				"roles/bigquery.dataEditor": {"nba_orchestration"},
			} {
				found := slices.ContainsFunc(cmds, func(c []string) bool {
					m, _ := flag(c, "--member")
					r, _ := flag(c, "--role")
					cond, _ := flag(c, "--condition")
					if !is(c, "projects", "add-iam-policy-binding") || m != runtime || r != role {
						return false
					}
					if datasets == nil {
						return cond == "None"
					}
					for _, d := range datasets {
						if !strings.Contains(cond, `resource.name == "projects/proj-1/datasets/`+d+`"`) {
							return false
						}
					}
					return strings.Count(cond, "resource.name ==") == len(datasets)
				})
				if !found {
					t.Errorf("the plan does not grant %s to the runtime account on %v", role, datasets)
				}
			}
			checkIndexes(t, cmds)
			checkPushes(t, cmds, tt.prefix)
			// Build: the three roles a function build needs, never
			// roles/cloudbuild.builds.builder's project-wide breadth.
			var build []string
			for _, c := range cmds {
				if m, _ := flag(c, "--member"); is(c, "projects", "add-iam-policy-binding") && m == "serviceAccount:"+tt.prefix+"phasegate-build@proj-1.iam.gserviceaccount.com" {
					r, _ := flag(c, "--role")
					build = append(build, r)
				}
			}
			if slices.Sort(build); !slices.Equal(build, []string{"roles/artifactregistry.writer", "roles/logging.logWriter", "roles/storage.objectViewer"}) {
				t.Errorf("the build account gets %v", build)
			}
			if tt.prefix == "" {
				checkMonitoring(t, cmds, tt.eps)
			} else if slices.ContainsFunc(cmds, func(c []string) bool { return is(c, "logging") || is(c, "alpha", "monitoring") }) {
				t.Error("a prefixed copy's plan has log-based metrics or alert policies")
			}
		})
	}
}

// checkPushes: every push subscription waits longer than its function may
// run (Pub/Sub's ack deadline is at most 600 s) and dead-letters into the
// copy's own topic.
func checkPushes(t *testing.T, cmds [][]string, prefix string) {
	t.Helper()
	timeout := map[string]int{}
	for _, c := range cmds {
		if is(c, "functions", "deploy") {
			v, _ := flag(c, "--timeout")
			timeout[c[3]], _ = strconv.Atoi(strings.TrimSuffix(v, "s"))
		}
	}
	for _, c := range cmds {
		ep, ok := flag(c, "--push-endpoint")
		if !is(c, "pubsub", "subscriptions", "create") || !ok {
			continue
		}
		fn := strings.TrimPrefix(strings.Split(ep, "-123456789012.")[0], "https://")
		ack, _ := flag(c, "--ack-deadline")
		n, _ := strconv.Atoi(ack)
		if n <= timeout[fn] || n > 600 {
			t.Errorf("%s: ack deadline %s s, the function's timeout %d s", c[4], ack, timeout[fn])
		}
		if dl, _ := flag(c, "--dead-letter-topic"); dl != prefix+"orchestrator-dead-letter" {
			t.Errorf("%s dead-letters into %s", c[4], dl)
		}
	}
}

// checkMonitoring: every metric and policy file of deploy/monitoring has
// its create command, and every metric counts the live functions only.
func checkMonitoring(t *testing.T, cmds [][]string, functions []string) {
	t.Helper()
	metrics, _ := filepath.Glob("monitoring/metrics/*.json")
	policies, _ := filepath.Glob("monitoring/policies/*.json")
	if len(metrics) == 0 || len(policies) == 0 {
		t.Fatal("no metrics or policies under deploy/monitoring")
	}
	for _, f := range metrics {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		if !slices.ContainsFunc(cmds, func(c []string) bool {
			file, _ := flag(c, "--config-from-file")
			return is(c, "logging", "metrics", "create", name) && file == "deploy/"+f
		}) {
			t.Errorf("no command creates the metric %s from %s", name, f)
		}
		var m struct{ Filter string }
		b, _ := os.ReadFile(f)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(functions)
		slices.Sort(want)
		var got []string
		if sub := regexp.MustCompile(`resource\.labels\.service_name=~"\^\(([a-z0-9|-]+)\)\$"`).FindStringSubmatch(m.Filter); sub != nil {
			got = strings.Split(sub[1], "|")
			slices.Sort(got)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s counts the lines of %v, want the live functions %v", name, got, want)
		}
	}
	for _, f := range policies {
		if !slices.ContainsFunc(cmds, func(c []string) bool {
			file, _ := flag(c, "--policy-from-file")
			return is(c, "alpha", "monitoring", "policies", "create") && file == "deploy/"+f
		}) {
			t.Errorf("no command creates the policy of %s", f)
		}
	}
}

// checkIndexes: every composite index and field override of the index file
// has its command, read from the file rather than copied by hand.
func checkIndexes(t *testing.T, cmds [][]string) {
	t.Helper()
	b, err := os.ReadFile("firestore.indexes.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Indexes []struct {
			CollectionGroup string
			Fields          []struct{ FieldPath, Order string }
		}
		FieldOverrides []struct {
			CollectionGroup, FieldPath string
			TTL                        bool
			Indexes                    []json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	for _, ix := range file.Indexes {
		var want []string
		for _, f := range ix.Fields {
			want = append(want, "field-path="+f.FieldPath+",order="+strings.ToLower(f.Order))
		}
		found := slices.ContainsFunc(cmds, func(c []string) bool {
			if !is(c, "firestore", "indexes", "composite", "create") {
				return false
			}
			g, _ := flag(c, "--collection-group")
			var got []string
			for i, w := range c {
				if w == "--field-config" {
					got = append(got, c[i+1])
				}
			}
			return g == ix.CollectionGroup && slices.Equal(got, want)
		})
		if !found {
			t.Errorf("no command creates the index %s %v", ix.CollectionGroup, want)
		}
	}
	for _, o := range file.FieldOverrides {
		if len(o.Indexes) == 0 && !slices.ContainsFunc(cmds, func(c []string) bool {
			g, _ := flag(c, "--collection-group")
			return is(c, "firestore", "indexes", "fields", "update", o.FieldPath) && g == o.CollectionGroup && slices.Contains(c, "--disable-indexes")
		}) {
			t.Errorf("no command disables the indexes of %s.%s", o.CollectionGroup, o.FieldPath)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		extra map[string]string
		args  []string
	}{
		{"unknown argument", nil, []string{"--dryrun"}},
		{"no project", map[string]string{"PROJECT": ""}, nil},
		{"no project number", map[string]string{"PROJECT_NUMBER": "proj"}, nil},
		{"prefix too long", map[string]string{"PREFIX": "abcdefghijk"}, nil},
		{"prefix upper case", map[string]string{"PREFIX": "Shadow-"}, nil},
		{"unknown mode", map[string]string{"MODE": "canary"}, nil},
		{"unknown phase", map[string]string{"PHASES": "phase3_to_phase4,phase5"}, nil},
		{"config outside the repository", map[string]string{"CONFIG": "/etc/passwd"}, nil},
		{"config missing", map[string]string{"CONFIG": "deploy/nope.yaml"}, nil},
		{"delete without a prefix", nil, []string{"--delete"}},
		{"json without check", nil, []string{"--json"}},
		{"check with delete", map[string]string{"PREFIX": "shd-"}, []string{"--check", "--delete"}},
		{"unknown channels", map[string]string{"NOTIFICATION_CHANNELS": "all"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := script(t, tt.extra, append([]string{"--dry-run"}, tt.args...)...)
			if code != 2 || !strings.HasPrefix(stderr, "deploy.sh: ") {
				t.Errorf("exit %d, stderr %q; want 2 and a message", code, stderr)
			}
		})
	}
}

// TestShadowPlan: MODE=shadow with a PREFIX is a copy beside the live
// deployment — every name it owns prefixed, PHASEGATE_MODE=shadow on every
// function, and no grant to publish anywhere or to write BigQuery.
func TestShadowPlan(t *testing.T) {
	cmds := plan(t, map[string]string{"MODE": "shadow", "PREFIX": "shd-"})
	n := 0
	for _, c := range cmds {
		line := strings.Join(c, " ")
		switch {
		case is(c, "functions", "deploy"):
			n++
			env, _ := flag(c, "--set-env-vars")
			if !strings.HasPrefix(c[3], "shd-") || !strings.Contains(env, "PHASEGATE_MODE=shadow") {
				t.Errorf("%s: not a shadow function", line)
			}
			if !strings.Contains(env, "PHASEGATE_DEAD_LETTER_TOPIC=shd-orchestrator-dead-letter") {
				t.Errorf("%s: bad input would be copied to the live dead-letter topic", line)
			}
		case is(c, "pubsub", "topics", "add-iam-policy-binding"):
			if strings.Contains(line, "phasegate-runtime") {
				t.Errorf("the shadow may publish: %s", line)
			}
		case is(c, "projects", "add-iam-policy-binding"):
			if r, _ := flag(c, "--role"); r == "roles/bigquery.dataEditor" {
				t.Errorf("the shadow may write history rows: %s", line)
			}
		case is(c, "pubsub", "subscriptions", "create"), is(c, "pubsub", "topics", "create") && strings.Contains(c[4], "sweep"):
			if !strings.HasPrefix(c[4], "shd-") {
				t.Errorf("not the shadow's own: %s", line)
			}
		}
	}
	if n != 7 {
		t.Errorf("%d functions deployed, want 7", n)
	}
}

// TestDeletePlan: --delete with a PREFIX removes every function,
// subscription, Scheduler job, topic and service account the copy's plan
// creates, and only those; grants it removes are its own accounts'.
func TestDeletePlan(t *testing.T) {
	extra := map[string]string{"MODE": "shadow", "PREFIX": "shd-"}
	created := map[string]bool{}
	for _, c := range plan(t, extra) {
		switch {
		case is(c, "functions", "deploy"):
			created["functions "+c[3]] = true
		case is(c, "pubsub", "subscriptions", "create"), is(c, "pubsub", "topics", "create") && strings.HasPrefix(c[4], "shd-"):
			created[c[2]+" "+c[4]] = true
		case is(c, "scheduler", "jobs", "create"):
			created["jobs "+c[5]] = true
		case is(c, "iam", "service-accounts", "create"):
			created["service-accounts "+c[4]+"@proj-1.iam.gserviceaccount.com"] = true
		}
	}
	deleted := map[string]bool{}
	for _, c := range plan(t, extra, "--delete") {
		line := strings.Join(c, " ")
		del := slices.Index(c, "delete")
		switch {
		case del > 0:
			key := c[del-1] + " " + c[del+1]
			if !created[key] {
				t.Errorf("deletes what the copy did not create: %s", line)
			}
			deleted[key] = true
		case strings.HasSuffix(c[slices.IndexFunc(c, func(w string) bool { return strings.Contains(w, "policy") })], "remove-iam-policy-binding"):
			if m, _ := flag(c, "--member"); !strings.HasPrefix(m, "serviceAccount:shd-") {
				t.Errorf("removes a grant not the copy's: %s", line)
			}
		default:
			t.Errorf("an unexpected command in the removal plan: %s", line)
		}
	}
	for k := range created {
		if !deleted[k] {
			t.Errorf("--delete leaves %s", k)
		}
	}
}
