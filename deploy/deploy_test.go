// Package deploy tests deploy.sh: its dry-run plan is parsed by the real
// Google Cloud CLI, offline, and checked against the index file and the
// rules of the deployment (least privilege, secrets, dead letters).
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
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
	cmd := exec.Command("bash", append([]string{"deploy.sh"}, args...)...)
	// A gcloud first on PATH that records being called: a dry run must not
	// call it.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "gcloud"), []byte("#!/bin/sh\necho \"$*\" >>\"$0.called\"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd.Env = []string{"PATH=" + fake + ":/usr/bin:/bin", "HOME=" + t.TempDir()}
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
	if called, err := os.ReadFile(filepath.Join(fake, "gcloud.called")); err == nil && slices.Contains(args, "--dry-run") {
		t.Errorf("the dry run called gcloud:\n%s", called)
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
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		t.Fatal("gcloud (the Google Cloud CLI) is not installed; it ships with this machine's image")
	}
	// Each gcloud run costs about a second of CPU: a command that differs
	// from one already checked only by the prefix in its names is the same
	// to the parser and is skipped.
	const prefix = "pg-"
	seen := map[string]bool{}
	var cmds [][]string
	for _, extra := range []map[string]string{
		nil,
		{"PREFIX": prefix, "PHASES": "phase3_to_phase4,prediction_batch", "CONFIG": "deploy/firestore.indexes.json", "OPERATORS": "group:ops@example.com,user:a@example.com",
			"NOTIFICATION_CHANNELS": "projects/proj-1/notificationChannels/123,projects/proj-1/notificationChannels/456"},
	} {
		for _, c := range plan(t, extra) {
			if k := strings.ReplaceAll(strings.Join(c, "\x00"), prefix, ""); !seen[k] {
				seen[k] = true
				cmds = append(cmds, c)
			}
		}
	}
	// The removal plan's commands, one of each kind: gcloud takes seconds
	// per command on a busy machine, and names do not change how it parses.
	kinds := map[string]bool{}
	for _, c := range plan(t, map[string]string{"PREFIX": "shd-"}, "--delete") {
		verb := slices.IndexFunc(c, func(w string) bool { return w == "delete" || w == "remove-iam-policy-binding" })
		if k := c[1] + " " + c[2] + " " + c[verb]; !kinds[k] {
			kinds[k] = true
			cmds = append(cmds, c)
		}
	}
	cfg := t.TempDir()
	work := make(chan []string)
	var wg sync.WaitGroup
	for range max(2, runtime.NumCPU()) {
		wg.Go(func() {
			for c := range work {
				cmd := exec.Command(gcloud, c[1:]...)
				cmd.Dir = ".." // deploy.sh runs from the repository root, and so do its file arguments
				cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+cfg, "CLOUDSDK_CORE_DISABLE_PROMPTS=1",
					"CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=1")
				out, _ := cmd.CombinedOutput()
				if code := cmd.ProcessState.ExitCode(); code != 1 || !bytes.Contains(out, []byte("You do not currently have an active account selected")) {
					t.Errorf("gcloud rejected a planned command (exit %d):\n  %s\n%s", code, strings.Join(c, " "), firstLines(out, 4))
				}
			}
		})
	}
	// The CLI writes its configuration directory on first use; let one
	// command do that before the others race for it.
	work <- cmds[0]
	for _, c := range cmds[1:] {
		work <- c
	}
	close(work)
	wg.Wait()
	t.Logf("%d distinct planned commands parsed by %s", len(cmds), gcloud)
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
				"gcloud pubsub subscriptions create " + tt.prefix + "orchestrator-dead-letter-inspect --topic orchestrator-dead-letter --message-retention-duration 7d --expiration-period never --project proj-1",
				"gcloud pubsub topics create " + tt.prefix + "orchestrator-sweep --project proj-1",
				"gcloud firestore fields ttls update expires_at --collection-group pubsub_deduplication --enable-ttl --async --quiet --project proj-1",
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
			checkMonitoring(t, cmds)
		})
	}
}

// checkMonitoring: every metric and policy file of deploy/monitoring has
// its create command.
func checkMonitoring(t *testing.T, cmds [][]string) {
	t.Helper()
	metrics, _ := filepath.Glob("monitoring/metrics/*.yaml")
	policies, _ := filepath.Glob("monitoring/policies/*.json")
	if len(metrics) == 0 || len(policies) == 0 {
		t.Fatal("no metrics or policies under deploy/monitoring")
	}
	for _, f := range metrics {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if !slices.ContainsFunc(cmds, func(c []string) bool {
			file, _ := flag(c, "--config-from-file")
			return is(c, "logging", "metrics", "create", name) && file == "deploy/"+f
		}) {
			t.Errorf("no command creates the metric %s from %s", name, f)
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
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := script(t, tt.extra, append([]string{"--dry-run"}, tt.args...)...)
			if code != 2 || !strings.HasPrefix(stderr, "deploy.sh: ") {
				t.Errorf("exit %d, stderr %q; want 2 and a message", code, stderr)
			}
		})
	}
}

// TestMain lets the test binary stand in for gcloud (see fakeGcloud).
func TestMain(m *testing.M) {
	if dir := os.Getenv("FAKE_GCLOUD_STATE"); dir != "" {
		os.Exit(fakeGcloud(dir, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeGcloud keeps a project's resources as files under dir: describe
// succeeds for what exists, create fails for what exists (as the cloud
// answers ALREADY_EXISTS), update needs it to exist. Each call is logged.
// It stands in for the cloud in the convergence test, where no emulator
// exists.
func fakeGcloud(dir string, args []string) int {
	f, _ := os.OpenFile(filepath.Join(dir, "calls.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	fmt.Fprintln(f, strings.Join(args, " "))
	f.Close()
	if code, ok := fakeIAM(dir, args); ok {
		return code
	}
	verbAt := slices.IndexFunc(args, func(w string) bool {
		return slices.Contains([]string{"create", "describe", "update", "deploy", "list", "delete"}, w)
	})
	if verbAt < 0 {
		return 0 // enable, add-invoker-policy-binding: idempotent
	}
	group, verb := strings.Join(args[:verbAt], "."), args[verbAt]
	rest := args[verbAt+1:]
	if group == "scheduler.jobs" && (verb == "create" || verb == "update") {
		rest = rest[1:] // create|update pubsub NAME
	}
	name := ""
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "--") {
		name, _, _ = strings.Cut(rest[0], "@") // a service account's email names its id
	}
	if group == "firestore.databases" || group == "firestore.indexes.composite" {
		name, _ = flag(args, "--database")
		if g, ok := flag(args, "--collection-group"); ok {
			var fc []string
			for i, w := range args {
				if w == "--field-config" {
					fc = append(fc, args[i+1])
				}
			}
			name = g + " " + strings.Join(fc, " ")
		}
	}
	clean := strings.NewReplacer("/", "_", " ", "_", "=", "_", ",", "_").Replace
	if group == "alpha.monitoring.policies" {
		// A policy's id is server-assigned; deploy.sh finds it by display
		// name, which this fake uses as the id.
		switch verb {
		case "create":
			file, _ := flag(args, "--policy-from-file")
			b, _ := os.ReadFile(file)
			var p struct{ DisplayName string }
			_ = json.Unmarshal(b, &p)
			name = clean(p.DisplayName)
		case "list":
			filter, _ := flag(args, "--filter")
			title, _ := strings.CutPrefix(filter, "displayName=")
			title, _ = strconv.Unquote(title)
			if _, err := os.Stat(filepath.Join(dir, group+"."+clean(title))); err == nil {
				fmt.Println("projects/proj-1/alertPolicies/" + clean(title))
			}
			return 0
		case "update":
			name = name[strings.LastIndex(name, "/")+1:]
		}
	}
	key := filepath.Join(dir, group+"."+clean(name))
	_, err := os.Stat(key)
	exists := err == nil
	switch verb {
	case "describe":
		if !exists {
			fmt.Fprintln(os.Stderr, "NOT_FOUND")
			return 1
		}
	case "create":
		if exists {
			fmt.Fprintln(os.Stderr, "ALREADY_EXISTS: "+name)
			return 1
		}
		if group == "firestore.indexes.composite" {
			addIndex(dir, args)
		}
		return writeKey(key)
	case "update":
		if !exists && group != "firestore.indexes.fields" && group != "firestore.fields.ttls" {
			fmt.Fprintln(os.Stderr, "NOT_FOUND: "+name)
			return 1
		}
		return writeKey(key)
	case "deploy":
		return writeKey(key)
	case "delete":
		if !exists {
			fmt.Fprintln(os.Stderr, "NOT_FOUND: "+name)
			return 1
		}
		if err := os.Remove(key); err != nil {
			return 1
		}
		// Its IAM policy goes with it (a service account's is keyed by email).
		iam, _ := filepath.Glob(filepath.Join(dir, "iam."+group+"."+name+"*"))
		for _, f := range iam {
			_ = os.Remove(f)
		}
	case "list": // firestore indexes composite list --format json
		b, err := os.ReadFile(filepath.Join(dir, "indexes.json"))
		if err != nil {
			b = []byte("[]")
		}
		os.Stdout.Write(b)
	}
	return 0
}

// fakeIAM keeps each resource's IAM bindings ("member role" lines):
// add-iam-policy-binding adds one, remove-iam-policy-binding fails for one
// that is absent (as gcloud does), get-iam-policy prints them as JSON.
func fakeIAM(dir string, args []string) (int, bool) {
	at := slices.IndexFunc(args, func(w string) bool { return strings.HasSuffix(w, "-iam-policy-binding") || w == "get-iam-policy" })
	if at < 0 || at+1 >= len(args) || args[at] == "add-invoker-policy-binding" {
		return 0, false
	}
	file := filepath.Join(dir, "iam."+strings.Join(args[:at], ".")+"."+strings.ReplaceAll(args[at+1], "/", "_"))
	b, _ := os.ReadFile(file)
	lines := strings.Fields(strings.ReplaceAll(string(b), " ", "|"))
	member, _ := flag(args, "--member")
	role, _ := flag(args, "--role")
	binding := member + "|" + role
	switch args[at] {
	case "add-iam-policy-binding":
		if !slices.Contains(lines, binding) {
			lines = append(lines, binding)
		}
	case "remove-iam-policy-binding":
		i := slices.Index(lines, binding)
		if i < 0 {
			fmt.Fprintln(os.Stderr, "ERROR: Policy binding with the specified principal, role, and condition not found!")
			return 1, true
		}
		lines = slices.Delete(lines, i, i+1)
	case "get-iam-policy":
		type bind struct {
			Role    string   `json:"role"`
			Members []string `json:"members"`
		}
		var policy struct {
			Bindings []bind `json:"bindings"`
		}
		for _, l := range lines {
			m, r, _ := strings.Cut(l, "|")
			policy.Bindings = append(policy.Bindings, bind{r, []string{m}})
		}
		out, _ := json.Marshal(policy)
		os.Stdout.Write(out)
		return 0, true
	default:
		return 0, false
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		return 1, true
	}
	return 0, true
}

func writeKey(key string) int {
	if err := os.WriteFile(key, nil, 0o644); err != nil {
		return 1
	}
	return 0
}

// addIndex records an index as the API lists it: upper-case orders and the
// __name__ field the server appends.
func addIndex(dir string, args []string) {
	var list []map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "indexes.json"))
	_ = json.Unmarshal(b, &list)
	g, _ := flag(args, "--collection-group")
	scope, _ := flag(args, "--query-scope")
	var fields []map[string]string
	last := "ASCENDING"
	for i, w := range args {
		if w != "--field-config" {
			continue
		}
		f := map[string]string{}
		for kv := range strings.SplitSeq(args[i+1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "field-path":
				f["fieldPath"] = v
			case "order":
				f["order"] = strings.ToUpper(v)
				last = f["order"]
			case "array-config":
				f["arrayConfig"] = strings.ToUpper(v)
			}
		}
		fields = append(fields, f)
	}
	fields = append(fields, map[string]string{"fieldPath": "__name__", "order": last})
	list = append(list, map[string]any{
		"name":       fmt.Sprintf("projects/p/databases/(default)/collectionGroups/%s/indexes/ix%d", g, len(list)),
		"queryScope": strings.ToUpper(strings.ReplaceAll(scope, "-", "_")),
		"fields":     fields,
	})
	b, _ = json.Marshal(list)
	_ = os.WriteFile(filepath.Join(dir, "indexes.json"), b, 0o644)
}

// fakeProject is a project kept by fakeGcloud, with the webhook secrets the
// operator creates, and a function that runs deploy.sh for real against it
// with extra inputs and arguments and returns the gcloud calls it made.
func fakeProject(t *testing.T) (string, func(extra map[string]string, args ...string) []string) {
	t.Helper()
	state, bin := t.TempDir(), t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "gcloud")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"slack-webhook-url", "slack-webhook-url-error", "slack-webhook-url-warning"} {
		writeKey(filepath.Join(state, "secrets."+s)) // created by the operator
	}
	return state, func(extra map[string]string, args ...string) []string {
		t.Helper()
		_ = os.Remove(filepath.Join(state, "calls.log"))
		cmd := exec.Command("bash", append([]string{"deploy.sh"}, args...)...)
		// Under -race the stand-in would sleep a second at each exit (the
		// race runtime's atexit_sleep_ms) for ~150 calls a run.
		cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "HOME=" + t.TempDir(), "FAKE_GCLOUD_STATE=" + state, "GORACE=atexit_sleep_ms=0"}
		for k, v := range base {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		for k, v := range extra {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("deploy.sh %v %v: %v\n%s", extra, args, err, out)
		}
		b, _ := os.ReadFile(filepath.Join(state, "calls.log"))
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

// TestRerunConverges runs deploy.sh for real against fakeGcloud twice: the
// first run creates everything, the second creates nothing and fails on
// nothing, and neither needs an `|| true`.
func TestRerunConverges(t *testing.T) {
	_, run := fakeProject(t)
	deploy := func() []string { return run(nil) }
	first := deploy()
	creates := func(calls []string) (n int) {
		for _, c := range calls {
			if strings.Contains(" "+c+" ", " create ") {
				n++
			}
		}
		return n
	}
	if creates(first) == 0 {
		t.Fatalf("the first run created nothing:\n%s", strings.Join(first, "\n"))
	}
	second := deploy()
	if n := creates(second); n != 0 {
		t.Errorf("the second run created %d things again:\n%s", n, strings.Join(second, "\n"))
	}
	for _, want := range []string{"pubsub subscriptions update phasegate-phase3to4", "scheduler jobs update pubsub orchestrator-sweep", "functions deploy sweep",
		"logging metrics update phasegate_sweeps", "alpha monitoring policies update projects/proj-1/alertPolicies/phasegate:_no_sweep_for_15_minutes"} {
		if !slices.ContainsFunc(second, func(c string) bool { return strings.HasPrefix(c, want) }) {
			t.Errorf("the second run did not converge %q", want)
		}
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

// TestShadowDeployAndDeleteConverge runs a shadow copy's deploy and its
// --delete for real against fakeGcloud beside a live deployment: the
// delete removes everything the copy created and nothing of the live
// one, and a second delete finds nothing to do and does not fail.
func TestShadowDeployAndDeleteConverge(t *testing.T) {
	state, run := fakeProject(t)
	snapshot := func() []string {
		entries, _ := os.ReadDir(state)
		var out []string
		for _, e := range entries {
			if e.Name() == "calls.log" {
				continue
			}
			b, _ := os.ReadFile(filepath.Join(state, e.Name()))
			out = append(out, e.Name()+"="+string(b))
		}
		return out
	}
	run(nil) // the live deployment
	live := snapshot()
	shadow := map[string]string{"MODE": "shadow", "PREFIX": "shd-"}
	run(shadow)
	if after := snapshot(); len(after) <= len(live) {
		t.Fatalf("the shadow copy created nothing")
	}
	run(shadow, "--delete")
	if after := snapshot(); !slices.Equal(after, live) {
		t.Errorf("after --delete the project differs from the live deployment alone:\n got %v\nwant %v", after, live)
	}
	again := run(shadow, "--delete")
	for _, c := range again {
		if strings.Contains(c, " delete ") || strings.Contains(c, "remove-iam-policy-binding") {
			t.Errorf("a second --delete still removes: %s", c)
		}
	}
}
