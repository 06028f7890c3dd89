package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

func load(t *testing.T, env map[string]string) (*Config, error) {
	t.Helper()
	return LoadFrom(context.Background(), envconfig.MapLookuper(env))
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := c.Phase("Phase2To3")
	if len(p2.Expected) != 6 || p2.Timed[0].Enabled != Off || p2.Timed[0].After != 30*time.Minute {
		t.Fatalf("phase 2 defaults: %+v", p2)
	}
	p3, _ := c.Phase("phase3_to_phase4")
	if len(p3.Expected) != 5 || !p3.ModeAware || p3.MajorityPercent != 60 {
		t.Fatalf("phase 3 defaults: %+v", p3)
	}
	p4, _ := c.Phase("Phase4To5")
	if len(p4.Timed) != 3 || p4.NameMap["ml_feature_store_v2"] != "ml_feature_store" {
		t.Fatalf("phase 4 defaults: %+v", p4)
	}
	if c.Idempotency.Enabled != On || c.Idempotency.TTL != 7*24*time.Hour || c.Gate.ClaimLease != 60*time.Second {
		t.Fatalf("defaults: %+v %+v", c.Idempotency, c.Gate)
	}
	if c.Batch.EnableSubcollection != On || c.Batch.DualWrite != On || c.Batch.UseSubcollectionReads != On {
		t.Fatalf("batch flags default to the migration's target: %+v", c.Batch)
	}
}

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(*Config) bool
	}{
		{"project", map[string]string{"GCP_PROJECT": "p1", "GOOGLE_CLOUD_PROJECT": "p2"}, func(c *Config) bool { return c.ProjectID == "p1" }},
		{"project fallback", map[string]string{"GOOGLE_CLOUD_PROJECT": "p2"}, func(c *Config) bool { return c.ProjectID == "p2" }},
		{"deadline on", map[string]string{"ENABLE_PHASE2_COMPLETION_DEADLINE": "true"}, func(c *Config) bool {
			p, _ := c.Phase("Phase2To3")
			return p.Timed[0].Enabled == On
		}},
		{"deadline percent", map[string]string{"ENABLE_PHASE2_COMPLETION_DEADLINE": "10%"}, func(c *Config) bool {
			p, _ := c.Phase("Phase2To3")
			return p.Timed[0].Enabled.Percent == 10
		}},
		{"minutes", map[string]string{"PHASE2_COMPLETION_TIMEOUT_MINUTES": "45"}, func(c *Config) bool {
			p, _ := c.Phase("Phase2To3")
			return p.Timed[0].After == 45*time.Minute
		}},
		{"duration wins", map[string]string{"PHASE2_COMPLETION_TIMEOUT_MINUTES": "45", "PHASE2_COMPLETION_TIMEOUT": "90s"}, func(c *Config) bool {
			p, _ := c.Phase("Phase2To3")
			return p.Timed[0].After == 90*time.Second
		}},
		{"dedup ttl", map[string]string{"DEDUP_TTL_DAYS": "3", "ENABLE_IDEMPOTENCY_KEYS": "off"}, func(c *Config) bool {
			return c.Idempotency.TTL == 72*time.Hour && c.Idempotency.Enabled == Off
		}},
		{"slack", map[string]string{"SLACK_WEBHOOK_URL": "http://x/a", "SLACK_WEBHOOK_URL_ERROR": "http://x/e"}, func(c *Config) bool {
			return c.Alerts.WebhookURL == "http://x/a" && c.Alerts.WebhookURLError == "http://x/e" && c.Alerts.WebhookURLWarning == ""
		}},
		{"legacy", map[string]string{"ENABLE_SUBCOLLECTION_COMPLETIONS": "false"}, func(c *Config) bool { return c.Batch.EnableSubcollection == Off }},
		{"live by default, everything owned", nil, func(c *Config) bool {
			p, _ := c.Phase("Phase4To5")
			return !c.Shadow() && c.Owns(BatchPhase) && !p.Unowned
		}},
		{"shadow", map[string]string{"PHASEGATE_MODE": "shadow"}, func(c *Config) bool { return c.Shadow() }},
		{"owned phases", map[string]string{"PHASEGATE_PHASES": " phase3_to_phase4 ,prediction_batch"}, func(c *Config) bool {
			p3, _ := c.Phase("Phase3To4")
			p4, _ := c.Phase("Phase4To5")
			return !p3.Unowned && p4.Unowned && c.Owns(BatchPhase) && !c.Owns("phase2_to_phase3")
		}},
		{"batch not owned", map[string]string{"PHASEGATE_PHASES": "phase2_to_phase3"}, func(c *Config) bool { return !c.Owns(BatchPhase) }},
		{"a copy's dead-letter topic", map[string]string{"PHASEGATE_DEAD_LETTER_TOPIC": "shd-orchestrator-dead-letter"}, func(c *Config) bool {
			return c.Topics.DeadLetter == "shd-orchestrator-dead-letter"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("override not applied: %+v", c)
			}
		})
	}
}

func TestInvalidNamesTheField(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("c%d.yaml", n))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"refused batch mode", map[string]string{"ENABLE_SUBCOLLECTION_COMPLETIONS": "true", "DUAL_WRITE_MODE": "false", "USE_SUBCOLLECTION_READS": "false"}, "USE_SUBCOLLECTION_READS"},
		{"bad flag", map[string]string{"DUAL_WRITE_MODE": "maybe"}, "DUAL_WRITE_MODE"},
		{"bad duration", map[string]string{"PHASE2_COMPLETION_TIMEOUT": "soon"}, "PHASE2_COMPLETION_TIMEOUT"},
		{"negative timeout", map[string]string{"PHASE2_COMPLETION_TIMEOUT_MINUTES": "-5"}, "phases[phase2_to_phase3].timed[0].after"},
		{"unknown yaml key", map[string]string{"ORCHESTRATOR_CONFIG": write("gate:\n  claim_leese: 10s\n")}, "claim_leese"},
		{"lease too long", map[string]string{"ORCHESTRATOR_CONFIG": write("gate:\n  claim_lease: 5m\n")}, "gate.claim_lease"},
		{"zero concurrency", map[string]string{"ORCHESTRATOR_CONFIG": write("sweep:\n  concurrency: 0\n")}, "sweep.concurrency"},
		{"bad mode", map[string]string{"PHASEGATE_MODE": "dry"}, "PHASEGATE_MODE"},
		{"unknown phase", map[string]string{"PHASEGATE_PHASES": "phase3_to_phase4,Phase4To5"}, "PHASEGATE_PHASES"},
		{"missing file", map[string]string{"ORCHESTRATOR_CONFIG": filepath.Join(dir, "nope.yaml")}, "ORCHESTRATOR_CONFIG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestYAMLOverride(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("sweep:\n  look_back: 24h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, map[string]string{"ORCHESTRATOR_CONFIG": p, "ENABLE_PHASE2_COMPLETION_DEADLINE": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Sweep.LookBack != 24*time.Hour || c.Sweep.MaxItems != 200 {
		t.Fatalf("file override: %+v", c.Sweep)
	}
}

func TestFlag(t *testing.T) {
	for in, want := range map[string]int{"true": 100, "1": 100, "on": 100, "false": 0, "0": 0, "off": 0, "10%": 10, " 50 % ": 50} {
		f, err := ParseFlag(in)
		if err != nil || f.Percent != want {
			t.Errorf("ParseFlag(%q) = %v, %v; want %d%%", in, f, err, want)
		}
	}
	for _, in := range []string{"101%", "-1%", "yes please", "%"} {
		if _, err := ParseFlag(in); err == nil {
			t.Errorf("ParseFlag(%q) accepted", in)
		}
	}
	// Widening keeps every unit that was on.
	ten, fifty := Flag{Percent: 10}, Flag{Percent: 50}
	for i := range 1000 {
		u := "batch_" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()
		if ten.Enabled(u) && !fifty.Enabled(u) {
			t.Fatalf("%s on at 10%% but off at 50%%", u)
		}
	}
}
