// Package config is phasegate's one typed configuration: defaults embedded in
// the binary, overridden by the YAML file named in ORCHESTRATOR_CONFIG, then
// by the environment variables the running system already uses. Load
// validates the result and names the offending field.
package config

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
	"gopkg.in/yaml.v3"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Config is everything phasegate can be told.
type Config struct {
	ProjectID   string      `yaml:"project_id"`
	Topics      Topics      `yaml:"topics"`
	Gate        Gate        `yaml:"gate"`
	Idempotency Idempotency `yaml:"idempotency"`
	Sweep       Sweep       `yaml:"sweep"`
	Alerts      Alerts      `yaml:"alerts"`
	Effects     Effects     `yaml:"effects"`
	Batch       Batch       `yaml:"batch"`
	BigQuery    BigQuery    `yaml:"bigquery"`
	Phases      []Phase     `yaml:"phases"`
	// Mode is live (the default) or shadow (PHASEGATE_MODE, CONTRACT §9):
	// the same decisions, written only to shadow_ collections, nothing sent.
	Mode string `yaml:"mode"`
	// Owned names what phasegate owns (PHASEGATE_PHASES): phase names and
	// BatchPhase. Empty means everything. Only owned phases are swept and
	// have timed rules; batches complete only when BatchPhase is owned.
	Owned []string `yaml:"owned_phases"`
	// ShadowTTL is how long a shadow document lives after its last write.
	ShadowTTL time.Duration `yaml:"shadow_ttl"`
}

// Modes of PHASEGATE_MODE.
const (
	ModeLive   = "live"
	ModeShadow = "shadow"
)

// BatchPhase is the name PHASEGATE_PHASES gives prediction-batch completion.
const BatchPhase = "prediction_batch"

// Shadow reports whether phasegate runs beside the running system.
func (c *Config) Shadow() bool { return c.Mode == ModeShadow }

// OutputTopics are the topics phasegate publishes triggers and batch
// completions to.
func (c *Config) OutputTopics() []string {
	out := []string{c.Topics.BatchComplete}
	for _, p := range c.Phases {
		if !slices.Contains(out, p.OutputTopic) {
			out = append(out, p.OutputTopic)
		}
	}
	return out
}

// Owns reports whether phasegate owns the phase (or BatchPhase) named name.
func (c *Config) Owns(name string) bool {
	return len(c.Owned) == 0 || slices.Contains(c.Owned, name)
}

// BigQuery configures the data checks before triggers and the history table
// (CONTRACT §10).
type BigQuery struct {
	// DataChecks is ENABLE_DATA_CHECKS; the unit is the game date.
	DataChecks Flag `yaml:"data_checks"`
	// History switches the phase_execution_log rows.
	History bool `yaml:"history"`
	// Project holds the checked tables and the history table; empty means
	// project_id.
	Project string `yaml:"project"`
	// EmulatorHost is BIGQUERY_EMULATOR_HOST (host:port or http://host:port).
	EmulatorHost string `yaml:"-"`
	// MaxBytesBilled caps every check query: a filter that stopped pruning
	// fails the query instead of billing a full scan.
	MaxBytesBilled int64         `yaml:"max_bytes_billed"`
	QueryTimeout   time.Duration `yaml:"query_timeout"`
	// CacheTTL is how long one instance reuses a (check, date) result.
	CacheTTL     time.Duration `yaml:"cache_ttl"`
	HistoryTable string        `yaml:"history_table"` // dataset.table
	// HistoryBudget bounds the insert a request attempts; what it cannot
	// write waits for the sweep.
	HistoryBudget time.Duration `yaml:"history_budget"`
}

// DataCheck is one phase's pre-trigger check: row counts for the game date
// in upstream tables.
type DataCheck struct {
	Name   string       `yaml:"name"`
	Action string       `yaml:"action"` // block | monitor
	Tables []CheckTable `yaml:"tables"`
	// MinTables is how many of the checked tables must hold rows (0: all).
	// In same-day and tomorrow modes fewer tables are checked; the bound is
	// then at most their number.
	MinTables int `yaml:"min_tables"`
	// Critical tables (dataset.table) must hold rows whatever MinTables says.
	Critical []string `yaml:"critical"`
	// MaxWait, measured from the first failed check, ends a block:
	// AfterMaxWait proceed triggers with data_freshness_verified false,
	// stay_blocked raises one error alert and keeps holding.
	MaxWait      time.Duration `yaml:"max_wait"`
	AfterMaxWait string        `yaml:"after_max_wait"`
}

// Check actions and what follows the maximum wait.
const (
	ActionBlock      = "block"
	ActionMonitor    = "monitor"
	AfterProceed     = "proceed"
	AfterStayBlocked = "stay_blocked"
)

// CheckTable is one counted table.
type CheckTable struct {
	Table      string `yaml:"table"`       // dataset.table
	DateColumn string `yaml:"date_column"` // a DATE column, the partitioning one
	// Processor is the expected processor that writes the table: in
	// same-day and tomorrow modes only the tables of required processors
	// are checked.
	Processor string `yaml:"processor"`
}

// TablesFor returns the tables a check counts when the gate waits for the
// required processors (nil: every table).
func (c *DataCheck) TablesFor(required []string) []CheckTable {
	if required == nil {
		return c.Tables
	}
	var out []CheckTable
	for _, t := range c.Tables {
		if slices.Contains(required, t.Processor) {
			out = append(out, t)
		}
	}
	return out
}

// Topics the orchestrator publishes to or is triggered by, beyond each
// phase's own.
type Topics struct {
	DeadLetter      string `yaml:"dead_letter"`
	Sweep           string `yaml:"sweep"`
	PredictionReady string `yaml:"prediction_ready"`
	BatchComplete   string `yaml:"batch_complete"`
}

// Gate tunes the claim → publish → confirm protocol.
type Gate struct {
	ClaimLease     time.Duration `yaml:"claim_lease"`
	WriteAttempts  int           `yaml:"write_attempts"`
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// The Pub/Sub circuit breaker (per instance).
	BreakerFailures int           `yaml:"publish_breaker_failures"`
	BreakerOpenFor  time.Duration `yaml:"publish_breaker_open_for"`
	// PublishFailuresAlert is how many failed publishes of one trigger raise
	// its error alert (a missing topic or permission fails every time).
	PublishFailuresAlert int `yaml:"publish_failures_alert"`
}

// Idempotency configures the pubsub_deduplication keys.
type Idempotency struct {
	Enabled Flag          `yaml:"enabled"`
	TTL     time.Duration `yaml:"ttl"`
}

// Sweep bounds one run of the scheduled sweep.
type Sweep struct {
	LookBack    time.Duration `yaml:"look_back"`
	MaxItems    int           `yaml:"max_items"`
	Concurrency int           `yaml:"concurrency"`
	// FlushBudget bounds the effect log's share of a sweep, so that a
	// Slack outage cannot hold the sweep past its function's timeout.
	FlushBudget time.Duration `yaml:"flush_budget"`
}

// Effects configures the effect log (orchestrator_effects).
type Effects struct {
	// Retention is how long a settled effect record is kept (a TTL policy
	// on its _expires_at deletes it); an owed or failed one is kept until
	// it is performed or dismissed.
	Retention time.Duration `yaml:"retention"`
}

// Alerts configures Slack delivery.
type Alerts struct {
	WebhookURL        string        `yaml:"webhook_url"`
	WebhookURLError   string        `yaml:"webhook_url_error"`
	WebhookURLWarning string        `yaml:"webhook_url_warning"`
	SendBudget        time.Duration `yaml:"send_budget"`
	MaxElapsed        time.Duration `yaml:"max_elapsed"`
	MinInterval       time.Duration `yaml:"min_interval"`
	RequestTimeout    time.Duration `yaml:"request_timeout"`
	// KeepFor is how long a message Slack keeps refusing (a 4xx) is retried
	// before it is marked failed. While Slack is down (5xx, timeouts, an
	// open breaker) a message is kept however long it takes.
	KeepFor time.Duration `yaml:"keep_for"`
}

// Batch configures prediction-batch tracking and its migration flags.
type Batch struct {
	EnableSubcollection   Flag `yaml:"enable_subcollection_completions"`
	DualWrite             Flag `yaml:"dual_write_mode"`
	UseSubcollectionReads Flag `yaml:"use_subcollection_reads"`
	ArrayCap              int  `yaml:"array_cap"`
	// ArrivalRate is how many worker completions per second one batch is
	// expected to receive at its peak; a new batch's counter shard count
	// follows from it (and is then fixed on the batch).
	ArrivalRate     int           `yaml:"arrival_rate"`
	StallAfter      time.Duration `yaml:"stall_after"`
	StallMinPercent int           `yaml:"stall_min_percent"`
	MaxAge          time.Duration `yaml:"max_age"`
}

// Phase is one gate between two phases.
type Phase struct {
	Name        string            `yaml:"name"`        // phase3_to_phase4
	EntryPoint  string            `yaml:"entry_point"` // Phase3To4
	Number      int               `yaml:"number"`      // 3
	InputTopic  string            `yaml:"input_topic"`
	OutputTopic string            `yaml:"output_topic"`
	Collection  string            `yaml:"collection"`
	Expected    []string          `yaml:"expected"`
	NameMap     map[string]string `yaml:"name_map"`
	// ModeAware enables the overnight / same_day / tomorrow rule.
	ModeAware       bool     `yaml:"mode_aware"`
	Critical        []string `yaml:"critical"`
	MajorityPercent int      `yaml:"majority_percent"`
	SameDayRequired []string `yaml:"same_day_required"`
	// Timed rules fire with the data at hand once enough time has passed
	// since the first completion: deadlines and timeout tiers alike.
	Timed       []TimedRule `yaml:"timed"`
	LateArrival bool        `yaml:"late_arrival"`
	// StuckAfter is how long after its first completion a gate may go
	// without a published trigger before it is overdue: Health counts it
	// and the sweep raises one warning (and its "resolved" once it
	// triggers). It must be shorter than sweep.look_back.
	StuckAfter time.Duration `yaml:"stuck_after"`
	// DataCheck runs before the gate triggers (nil: none).
	DataCheck *DataCheck `yaml:"data_check"`
	// Unowned is set from Config.Owned when loading: the running system
	// still owns this phase, so its timed rules and the sweep leave it be.
	Unowned bool `yaml:"-"`
}

// TimedRule fires when at least MinCompleted expected processors are in and
// After has elapsed since the first completion (bounds inclusive).
type TimedRule struct {
	Reason       string        `yaml:"reason"`
	Enabled      Flag          `yaml:"enabled"`
	MinCompleted int           `yaml:"min_completed"`
	After        time.Duration `yaml:"after"`
}

// Phase returns the phase with the given entry point or name.
func (c *Config) Phase(key string) (*Phase, bool) {
	for i := range c.Phases {
		if c.Phases[i].EntryPoint == key || c.Phases[i].Name == key {
			return &c.Phases[i], true
		}
	}
	return nil, false
}

// env holds the variables the running system already uses, as strings: a
// nil pointer means unset, and each is parsed here so that an error names
// the variable.
type env struct {
	GCPProject           string  `env:"GCP_PROJECT"`
	GoogleCloudProject   string  `env:"GOOGLE_CLOUD_PROJECT"`
	ConfigFile           string  `env:"ORCHESTRATOR_CONFIG"`
	Slack                *string `env:"SLACK_WEBHOOK_URL, noinit"`
	SlackError           *string `env:"SLACK_WEBHOOK_URL_ERROR, noinit"`
	SlackWarning         *string `env:"SLACK_WEBHOOK_URL_WARNING, noinit"`
	Phase2Deadline       *string `env:"ENABLE_PHASE2_COMPLETION_DEADLINE, noinit"`
	Phase2TimeoutMinutes *string `env:"PHASE2_COMPLETION_TIMEOUT_MINUTES, noinit"`
	Phase2Timeout        *string `env:"PHASE2_COMPLETION_TIMEOUT, noinit"`
	Subcollection        *string `env:"ENABLE_SUBCOLLECTION_COMPLETIONS, noinit"`
	DualWrite            *string `env:"DUAL_WRITE_MODE, noinit"`
	SubcollectionReads   *string `env:"USE_SUBCOLLECTION_READS, noinit"`
	Idempotency          *string `env:"ENABLE_IDEMPOTENCY_KEYS, noinit"`
	DedupTTLDays         *string `env:"DEDUP_TTL_DAYS, noinit"`
	DataChecks           *string `env:"ENABLE_DATA_CHECKS, noinit"`
	BigQueryEmulatorHost string  `env:"BIGQUERY_EMULATOR_HOST"`
	ArrivalRate          *string `env:"BATCH_ARRIVAL_RATE, noinit"`
	Mode                 *string `env:"PHASEGATE_MODE, noinit"`
	Phases               *string `env:"PHASEGATE_PHASES, noinit"`
	// DeadLetter is the topic bad input is copied to: a prefixed copy has
	// its own (deploy.sh sets it).
	DeadLetter *string `env:"PHASEGATE_DEAD_LETTER_TOPIC, noinit"`
}

// Load reads the configuration from the process environment.
func Load(ctx context.Context) (*Config, error) {
	return LoadFrom(ctx, envconfig.OsLookuper())
}

// LoadFrom reads the configuration with env looked up in l (tests pass a map).
func LoadFrom(ctx context.Context, l envconfig.Lookuper) (*Config, error) {
	var e env
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &e, Lookuper: l}); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	cfg, err := decode(defaultsYAML, nil)
	if err != nil {
		return nil, fmt.Errorf("config: embedded defaults: %w", err)
	}
	if e.ConfigFile != "" {
		b, err := os.ReadFile(e.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("config: ORCHESTRATOR_CONFIG: %w", err)
		}
		if cfg, err = decode(b, cfg); err != nil {
			return nil, fmt.Errorf("config: %s: %w", e.ConfigFile, err)
		}
	}
	if err := e.apply(cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.MarkOwned()
	return cfg, nil
}

// MarkOwned sets each phase's Unowned from Owned; Load does it, and so does
// anything that edits Owned afterwards.
func (c *Config) MarkOwned() {
	for i := range c.Phases {
		c.Phases[i].Unowned = !c.Owns(c.Phases[i].Name)
	}
}

// Default returns the embedded defaults, validated; for tests and tools.
func Default() *Config {
	cfg, err := decode(defaultsYAML, nil)
	if err != nil {
		panic(err)
	}
	return cfg
}

// decode overlays YAML onto base (nil: an empty Config). Unknown keys are
// errors: a misspelt option must not be silently ignored.
func decode(b []byte, base *Config) (*Config, error) {
	if base == nil {
		base = &Config{}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty override file decodes to io.EOF and changes nothing.
	if err := dec.Decode(base); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return base, nil
}

func (e *env) apply(c *Config) error {
	if e.GCPProject != "" {
		c.ProjectID = e.GCPProject
	} else if e.GoogleCloudProject != "" {
		c.ProjectID = e.GoogleCloudProject
	}
	var errs []error
	str := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	flag := func(name string, dst *Flag, v *string) {
		if v == nil {
			return
		}
		f, err := ParseFlag(*v)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %s: %w", name, err))
			return
		}
		*dst = f
	}
	integer := func(name string, v *string) (int, bool) {
		if v == nil {
			return 0, false
		}
		n, err := strconv.Atoi(strings.TrimSpace(*v))
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %s: %q is not a whole number", name, *v))
			return 0, false
		}
		return n, true
	}
	str(&c.Alerts.WebhookURL, e.Slack)
	str(&c.Alerts.WebhookURLError, e.SlackError)
	str(&c.Alerts.WebhookURLWarning, e.SlackWarning)
	if p, ok := c.Phase("phase2_to_phase3"); ok {
		if r := p.timedRule("deadline_exceeded"); r != nil {
			flag("ENABLE_PHASE2_COMPLETION_DEADLINE", &r.Enabled, e.Phase2Deadline)
			if n, ok := integer("PHASE2_COMPLETION_TIMEOUT_MINUTES", e.Phase2TimeoutMinutes); ok {
				r.After = time.Duration(n) * time.Minute
			}
			if e.Phase2Timeout != nil { // the duration form wins over minutes
				d, err := time.ParseDuration(strings.TrimSpace(*e.Phase2Timeout))
				if err != nil {
					errs = append(errs, fmt.Errorf("config: PHASE2_COMPLETION_TIMEOUT: %w", err))
				}
				r.After = d
			}
		}
	}
	flag("ENABLE_SUBCOLLECTION_COMPLETIONS", &c.Batch.EnableSubcollection, e.Subcollection)
	flag("DUAL_WRITE_MODE", &c.Batch.DualWrite, e.DualWrite)
	flag("USE_SUBCOLLECTION_READS", &c.Batch.UseSubcollectionReads, e.SubcollectionReads)
	flag("ENABLE_IDEMPOTENCY_KEYS", &c.Idempotency.Enabled, e.Idempotency)
	flag("ENABLE_DATA_CHECKS", &c.BigQuery.DataChecks, e.DataChecks)
	c.BigQuery.EmulatorHost = e.BigQueryEmulatorHost
	if n, ok := integer("BATCH_ARRIVAL_RATE", e.ArrivalRate); ok {
		c.Batch.ArrivalRate = n
	}
	if n, ok := integer("DEDUP_TTL_DAYS", e.DedupTTLDays); ok {
		c.Idempotency.TTL = time.Duration(n) * 24 * time.Hour
	}
	if e.Mode != nil {
		c.Mode = strings.TrimSpace(*e.Mode)
	}
	if e.DeadLetter != nil {
		c.Topics.DeadLetter = strings.TrimSpace(*e.DeadLetter)
	}
	if e.Phases != nil {
		c.Owned = nil
		for _, n := range strings.Split(*e.Phases, ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.Owned = append(c.Owned, n)
			}
		}
	}
	return errors.Join(errs...)
}

func (p *Phase) timedRule(reason string) *TimedRule {
	for i := range p.Timed {
		if p.Timed[i].Reason == reason {
			return &p.Timed[i]
		}
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,127}$`)

// ValidName reports whether s can be a processor's normalised name (and so
// a Firestore field name).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks every field and returns all problems, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	positive := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, "must be a positive duration, got %v", d)
		}
	}
	for field, v := range map[string]string{
		"topics.dead_letter": c.Topics.DeadLetter, "topics.sweep": c.Topics.Sweep,
		"topics.prediction_ready": c.Topics.PredictionReady, "topics.batch_complete": c.Topics.BatchComplete,
	} {
		if v == "" {
			bad(field, "must not be empty")
		}
	}
	positive("gate.claim_lease", c.Gate.ClaimLease)
	if c.Gate.ClaimLease > 60*time.Second {
		bad("gate.claim_lease", "must be at most 60s, got %v", c.Gate.ClaimLease)
	}
	positive("gate.publish_timeout", c.Gate.PublishTimeout)
	positive("gate.publish_breaker_open_for", c.Gate.BreakerOpenFor)
	if c.Gate.BreakerFailures < 1 {
		bad("gate.publish_breaker_failures", "must be at least 1")
	}
	if c.Gate.PublishFailuresAlert < 1 {
		bad("gate.publish_failures_alert", "must be at least 1")
	}
	if c.Gate.WriteAttempts < 1 {
		bad("gate.write_attempts", "must be at least 1")
	}
	positive("idempotency.ttl (DEDUP_TTL_DAYS)", c.Idempotency.TTL)
	positive("sweep.look_back", c.Sweep.LookBack)
	positive("sweep.flush_budget", c.Sweep.FlushBudget)
	positive("effects.retention", c.Effects.Retention)
	if c.Sweep.MaxItems < 1 {
		bad("sweep.max_items", "must be at least 1")
	}
	if c.Sweep.Concurrency < 1 {
		bad("sweep.concurrency", "must be at least 1")
	}
	positive("alerts.send_budget", c.Alerts.SendBudget)
	positive("alerts.max_elapsed", c.Alerts.MaxElapsed)
	positive("alerts.request_timeout", c.Alerts.RequestTimeout)
	if c.Alerts.KeepFor < 24*time.Hour {
		bad("alerts.keep_for", "must be at least 24h, got %v", c.Alerts.KeepFor)
	}
	if c.Alerts.MinInterval < 0 {
		bad("alerts.min_interval", "must not be negative")
	}
	b := c.Batch
	// A batch in the bucket where subcollection writes are on but neither
	// the array nor subcollection reads are would count nothing.
	if b.EnableSubcollection.Percent > max(b.DualWrite.Percent, b.UseSubcollectionReads.Percent) {
		bad("batch (ENABLE_SUBCOLLECTION_COMPLETIONS, DUAL_WRITE_MODE, USE_SUBCOLLECTION_READS)",
			"subcollection writes without dual writes require subcollection reads: %v/%v/%v would leave batches counted from an array nobody writes",
			b.EnableSubcollection, b.DualWrite, b.UseSubcollectionReads)
	}
	if b.ArrayCap < 1 || b.ArrayCap > 1000 {
		bad("batch.array_cap", "must be between 1 and 1000, got %d", b.ArrayCap)
	}
	if b.ArrivalRate < 1 || b.ArrivalRate > 10000 {
		bad("batch.arrival_rate (BATCH_ARRIVAL_RATE)", "must be between 1 and 10000 completions per second, got %d", b.ArrivalRate)
	}
	positive("batch.stall_after", b.StallAfter)
	positive("batch.max_age", b.MaxAge)
	if b.StallMinPercent < 1 || b.StallMinPercent > 100 {
		bad("batch.stall_min_percent", "must be between 1 and 100, got %d", b.StallMinPercent)
	}
	c.BigQuery.validate(bad)
	positive("shadow_ttl", c.ShadowTTL)
	if c.Mode != "" && c.Mode != ModeLive && c.Mode != ModeShadow {
		bad("mode (PHASEGATE_MODE)", "must be %s or %s, got %q", ModeLive, ModeShadow, c.Mode)
	}
	names := []string{BatchPhase}
	for _, p := range c.Phases {
		names = append(names, p.Name)
	}
	for _, n := range c.Owned {
		if !slices.Contains(names, n) {
			bad("owned_phases (PHASEGATE_PHASES)", "%q is not one of %s", n, strings.Join(names, ", "))
		}
	}
	if len(c.Phases) == 0 {
		bad("phases", "must not be empty")
	}
	seen := map[string]bool{}
	for i, p := range c.Phases {
		f := fmt.Sprintf("phases[%d]", i)
		if p.Name != "" {
			f = fmt.Sprintf("phases[%s]", p.Name)
		}
		if p.Name == "" || p.EntryPoint == "" {
			bad(f, "name and entry_point are required")
		}
		if seen[p.Name] || seen[p.EntryPoint] {
			bad(f, "duplicate phase %q", p.Name)
		}
		seen[p.Name], seen[p.EntryPoint] = true, true
		if p.InputTopic == "" || p.OutputTopic == "" || p.Collection == "" {
			bad(f, "input_topic, output_topic and collection are required")
		}
		if len(p.Expected) == 0 {
			bad(f+".expected", "must not be empty")
		}
		for _, n := range p.Expected {
			if !ValidName(n) {
				bad(f+".expected", "%q is not a valid processor name ([a-z][a-z0-9_]{0,127})", n)
			}
		}
		for from, to := range p.NameMap {
			if !slices.Contains(p.Expected, to) {
				bad(f+".name_map", "%q maps to %q, which is not expected", from, to)
			}
		}
		for _, group := range []struct {
			field string
			names []string
		}{{".critical", p.Critical}, {".same_day_required", p.SameDayRequired}} {
			for _, n := range group.names {
				if !slices.Contains(p.Expected, n) {
					bad(f+group.field, "%q is not expected", n)
				}
			}
		}
		if p.ModeAware && len(p.SameDayRequired) == 0 {
			bad(f+".same_day_required", "a mode-aware phase needs the processors same-day and tomorrow runs wait for")
		}
		if len(p.Critical) > 0 && (p.MajorityPercent < 1 || p.MajorityPercent > 100) {
			bad(f+".majority_percent", "must be between 1 and 100 when critical is set, got %d", p.MajorityPercent)
		}
		positive(f+".stuck_after", p.StuckAfter)
		if p.StuckAfter >= c.Sweep.LookBack {
			bad(f+".stuck_after", "must be shorter than sweep.look_back (%v), got %v", c.Sweep.LookBack, p.StuckAfter)
		}
		if p.DataCheck != nil {
			p.DataCheck.validate(f+".data_check", &p, bad)
		}
		for j, r := range p.Timed {
			rf := fmt.Sprintf("%s.timed[%d]", f, j)
			if !ValidName(r.Reason) {
				bad(rf+".reason", "%q is not a valid reason", r.Reason)
			}
			positive(rf+".after", r.After)
			if r.MinCompleted < 1 || r.MinCompleted > len(p.Expected) {
				bad(rf+".min_completed", "must be between 1 and %d, got %d", len(p.Expected), r.MinCompleted)
			}
		}
	}
	return errors.Join(errs...)
}

// tableRE is a dataset.table name as a check may put it into SQL: table
// names cannot be query parameters, so only plain identifiers pass.
var (
	tableRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$`)
	columnRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidTable reports whether s is a dataset.table name a query may name.
func ValidTable(s string) bool { return tableRE.MatchString(s) }

func (b *BigQuery) validate(bad func(field, format string, args ...any)) {
	if b.MaxBytesBilled < 1 {
		bad("bigquery.max_bytes_billed", "must be a positive number of bytes")
	}
	for field, d := range map[string]time.Duration{"bigquery.query_timeout": b.QueryTimeout,
		"bigquery.history_budget": b.HistoryBudget} {
		if d <= 0 {
			bad(field, "must be a positive duration, got %v", d)
		}
	}
	if b.CacheTTL < 0 {
		bad("bigquery.cache_ttl", "must not be negative")
	}
	if !ValidTable(b.HistoryTable) {
		bad("bigquery.history_table", "%q is not a dataset.table name", b.HistoryTable)
	}
}

func (c *DataCheck) validate(f string, p *Phase, bad func(field, format string, args ...any)) {
	if c.Name == "" {
		bad(f+".name", "must not be empty")
	}
	if c.Action != ActionBlock && c.Action != ActionMonitor {
		bad(f+".action", "must be %s or %s, got %q", ActionBlock, ActionMonitor, c.Action)
	}
	if len(c.Tables) == 0 {
		bad(f+".tables", "must not be empty")
	}
	names := map[string]bool{}
	for i, t := range c.Tables {
		tf := fmt.Sprintf("%s.tables[%d]", f, i)
		if !ValidTable(t.Table) {
			bad(tf+".table", "%q is not a dataset.table name", t.Table)
		}
		if names[t.Table] {
			bad(tf+".table", "%q is listed twice", t.Table)
		}
		names[t.Table] = true
		if !columnRE.MatchString(t.DateColumn) {
			bad(tf+".date_column", "%q is not a column name", t.DateColumn)
		}
		if t.Processor != "" && !slices.Contains(p.Expected, t.Processor) {
			bad(tf+".processor", "%q is not expected", t.Processor)
		}
	}
	if c.MinTables < 0 || c.MinTables > len(c.Tables) {
		bad(f+".min_tables", "must be between 0 (all) and %d, got %d", len(c.Tables), c.MinTables)
	}
	for _, t := range c.Critical {
		if !names[t] {
			bad(f+".critical", "%q is not one of the check's tables", t)
		}
	}
	if c.Action == ActionBlock {
		if c.MaxWait <= 0 {
			bad(f+".max_wait", "must be a positive duration, got %v", c.MaxWait)
		}
		if c.AfterMaxWait != AfterProceed && c.AfterMaxWait != AfterStayBlocked {
			bad(f+".after_max_wait", "must be %s or %s, got %q", AfterProceed, AfterStayBlocked, c.AfterMaxWait)
		}
	}
}
