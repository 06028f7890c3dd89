// Package monitoring holds phasegate's log-based metrics (metrics/*.json,
// LogMetric resources for `gcloud logging metrics create|update
// --config-from-file`) and alert policies (policies/*.json, AlertPolicy
// resources for `gcloud alpha monitoring policies create|update
// --policy-from-file`), which deploy/deploy.sh applies. Its test proves the
// log lines the metrics count exist: it runs the real code on the emulators,
// reads what it logged as Cloud Logging would store it, and evaluates every
// metric's filter and label extractors on those entries. The metrics count
// the live deployment's functions only (resource.labels.service_name): a
// prefixed copy's lines count in none of them.
package monitoring

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// metric is the part of a LogMetric the test checks.
type metric struct {
	Description      string            `yaml:"description"`
	Filter           string            `yaml:"filter"`
	LabelExtractors  map[string]string `yaml:"labelExtractors"`
	MetricDescriptor struct {
		MetricKind string `yaml:"metricKind"`
		ValueType  string `yaml:"valueType"`
		Unit       string `yaml:"unit"`
		Labels     []struct {
			Key         string `yaml:"key"`
			Description string `yaml:"description"`
		} `yaml:"labels"`
	} `yaml:"metricDescriptor"`
}

func metrics(t *testing.T) map[string]metric {
	t.Helper()
	files, _ := filepath.Glob("metrics/*.json")
	if len(files) == 0 {
		t.Fatal("no metrics/*.json")
	}
	out := map[string]metric{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		var m metric
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = m
	}
	return out
}

// term is one comparison of a filter: path = value, or path =~ regular
// expression.
type term struct {
	path, value string
	re          *regexp.Regexp
}

var termRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_.]*)(=~|=)("(?:[^"\\]|\\.)*"|[A-Za-z0-9_.-]+)$`)

// parseFilter reads the subset of the logging query language the metrics
// keep to — comparisons and regular expressions (RE2, as Logging's `=~`)
// joined by AND — and fails on anything else, so a filter this test cannot
// evaluate cannot slip through.
func parseFilter(t *testing.T, name, f string) []term {
	t.Helper()
	var out []term
	for _, part := range strings.Split(strings.Join(strings.Fields(f), " "), " AND ") {
		m := termRE.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			t.Fatalf("%s: filter term %q is not path=value", name, part)
		}
		v := m[3]
		if strings.HasPrefix(v, `"`) {
			if err := json.Unmarshal([]byte(v), &v); err != nil {
				t.Fatalf("%s: %q: %v", name, part, err)
			}
		}
		tm := term{path: m[1], value: v}
		if m[2] == "=~" {
			re, err := regexp.Compile(v)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, part, err)
			}
			tm.re = re
		}
		out = append(out, tm)
	}
	return out
}

// lookup follows a dotted path into an entry.
func lookup(entry map[string]any, path string) (string, bool) {
	var v any = entry
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[k]; !ok {
			return "", false
		}
	}
	switch x := v.(type) {
	case string:
		return x, true
	case bool, float64:
		b, _ := json.Marshal(x)
		return string(b), true
	}
	return "", false
}

func matches(entry map[string]any, terms []term) bool {
	for _, tm := range terms {
		v, ok := lookup(entry, tm.path)
		if !ok || (tm.re == nil && v != tm.value) || (tm.re != nil && !tm.re.MatchString(v)) {
			return false
		}
	}
	return true
}

var extractRE = regexp.MustCompile(`^EXTRACT\(([A-Za-z_][A-Za-z0-9_.]*)\)$`)

// entries turns what slog wrote into log entries as Cloud Logging stores a
// Cloud Run container's JSON line: severity lifted out, the labels field
// made the entry's labels, the rest (message included) under jsonPayload,
// and the resource naming the service — the function deploy.sh names after
// the entry point, after PREFIX — that logged it.
func entries(lines []map[string]any, prefix string) []map[string]any {
	var out []map[string]any
	for _, payload := range lines {
		labels, _ := payload["logging.googleapis.com/labels"].(map[string]any)
		ep, _ := labels["entry_point"].(string)
		e := map[string]any{"severity": payload["severity"], "resource": map[string]any{"type": "cloud_run_revision",
			"labels": map[string]any{"service_name": prefix + strings.ToLower(ep)}}}
		if l, ok := payload["logging.googleapis.com/labels"]; ok {
			e["labels"] = l
			delete(payload, "logging.googleapis.com/labels")
		}
		delete(payload, "severity")
		delete(payload, "time")
		e["jsonPayload"] = payload
		out = append(out, e)
	}
	return out
}

// night drives the real code through what every metric counts: a partial
// trigger and its error alert, a 5xx, bad input, an overdue gate, sweeps.
func night(t *testing.T) []map[string]any {
	logs := &apptest.Logs{}
	e := apptest.New(t, apptest.WithLogs(logs), apptest.FailPublishes("nba-phase4-trigger", 1))
	for _, p := range []string{"PlayerGameSummaryProcessor", "AsyncUpcomingPlayerGameContextProcessor", "TeamDefenseGameSummaryProcessor"} {
		// The third completes critical plus majority; its first publish
		// fails (a 5xx) and the redelivery publishes.
		if c := e.Deliver("Phase3To4", "m-"+p, apptest.Completion(p, "2026-01-19", "success")); c >= 300 {
			t.Fatalf("%s: status %d", p, c)
		}
	}
	if c := e.PushOnce("Phase2To3", "bad", map[string]any{"processor_name": "X", "game_date": "2026-02-30", "status": "success"}); c >= 300 {
		t.Fatalf("bad input: status %d", c)
	}
	if c := e.Deliver("Phase2To3", "m-sched", apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success")); c >= 300 {
		t.Fatalf("status %d", c)
	}
	e.Clock.Advance(5 * time.Hour)
	if c := e.Deliver("Sweep", "s1", map[string]any{}); c >= 300 {
		t.Fatalf("sweep: status %d", c)
	}
	return logs.Lines(t)
}

// TestMetricsCountRealLogLines: every metric's filter matches a line the
// code really logs, and each label extractor finds its field there.
func TestMetricsCountRealLogLines(t *testing.T) {
	ms := metrics(t)
	lines := night(t)
	es := entries(lines, "")
	// The same lines from a prefixed copy (a shadow) count in no metric.
	shadow := entries(lines, "shd-")
	for name, m := range ms {
		t.Run(name, func(t *testing.T) {
			if m.Description == "" || m.MetricDescriptor.MetricKind != "DELTA" || m.MetricDescriptor.ValueType != "INT64" {
				t.Errorf("want a description and a DELTA INT64 counter: %+v", m)
			}
			terms := parseFilter(t, name, m.Filter)
			declared := map[string]bool{}
			for _, l := range m.MetricDescriptor.Labels {
				declared[l.Key] = true
			}
			var hit map[string]any
			for _, e := range es {
				if matches(e, terms) {
					hit = e
					break
				}
			}
			if hit == nil {
				t.Fatalf("no log line matches %q", m.Filter)
			}
			for _, e := range shadow {
				if matches(e, terms) {
					t.Errorf("a prefixed copy's line counts: %v", e)
					break
				}
			}
			if len(declared) != len(m.LabelExtractors) {
				t.Errorf("labels declared %v, extracted %v", declared, m.LabelExtractors)
			}
			for label, ex := range m.LabelExtractors {
				sub := extractRE.FindStringSubmatch(ex)
				if sub == nil || !declared[label] {
					t.Errorf("label %s: extractor %q must be EXTRACT(path) of a declared label", label, ex)
					continue
				}
				if v, ok := lookup(hit, sub[1]); !ok || v == "" {
					t.Errorf("label %s: %s is empty in the matching line %v", label, sub[1], hit)
				}
			}
		})
	}
}

// TestPolicies: each policy has a unique display name (deploy.sh finds it
// by that name), documentation, and conditions on metrics that exist here
// or are Google's own.
func TestPolicies(t *testing.T) {
	ms := metrics(t)
	files, _ := filepath.Glob("policies/*.json")
	if len(files) == 0 {
		t.Fatal("no policies/*.json")
	}
	names := map[string]bool{}
	userMetric := regexp.MustCompile(`metric\.type="logging\.googleapis\.com/user/([A-Za-z0-9_]+)"`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			DisplayName   string
			Documentation struct{ Content string }
			Conditions    []struct {
				DisplayName        string
				ConditionThreshold *struct{ Filter string }
				ConditionAbsent    *struct{ Filter string }
			}
		}
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if p.DisplayName == "" || names[p.DisplayName] || p.Documentation.Content == "" || len(p.Conditions) == 0 {
			t.Errorf("%s: want a unique displayName, documentation and conditions", f)
		}
		names[p.DisplayName] = true
		for _, c := range p.Conditions {
			filter := ""
			switch {
			case c.ConditionThreshold != nil:
				filter = c.ConditionThreshold.Filter
			case c.ConditionAbsent != nil:
				filter = c.ConditionAbsent.Filter
			}
			if filter == "" || c.DisplayName == "" {
				t.Errorf("%s: condition %q without a filter", f, c.DisplayName)
			}
			// A policy on Pub/Sub subscriptions watches the live one by its
			// exact name: a pattern would also match a prefixed copy's.
			if strings.Contains(filter, "subscription_id") && !strings.Contains(filter, `resource.label.subscription_id="orchestrator-dead-letter-inspect"`) {
				t.Errorf("%s: condition %q does not name the live subscription exactly: %s", f, c.DisplayName, filter)
			}
			for _, m := range userMetric.FindAllStringSubmatch(filter, -1) {
				if _, ok := ms[m[1]]; !ok {
					t.Errorf("%s: condition on metric %s, which metrics/ does not define", f, m[1])
				}
			}
		}
	}
}
