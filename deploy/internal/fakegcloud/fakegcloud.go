// Package fakegcloud is a stateful stand-in for the Google Cloud CLI, as
// deploy.sh calls it, holding one project in a directory. It is modelled on
// google-cloud-go's pstest: the fake answers the CLI as Google Cloud does,
// and a test inspects and changes its state directly (Load, Update).
//
// It models what makes a real first run hard, each answer citing where the
// real one was seen: Google Cloud is eventually consistent, so a new service
// account, a new log-based metric, a just-enabled API, the Pub/Sub service
// agent and new build roles are refused by the first Lag calls that use
// them; Firestore refuses a field or index operation on a collection group
// while another runs, and allows one TTL field per collection group; an
// alert policy update from a file replaces the whole policy. Every call is appended to calls.log; an unknown command or flag
// fails as the CLI's parser would.
package fakegcloud

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// State is one project. Pending counts, for each change Google Cloud has
// not caught up with yet, how many more calls using it are refused: an API
// ("api:NAME"), a service account or the Pub/Sub agent ("account:EMAIL"), a
// log-based metric ("metric:NAME"), the build account's roles
// ("build:MEMBER"). A change starts with Lag.
type State struct {
	Project, Number string
	Lag             int

	APIs            map[string]bool
	Agent           bool // the Pub/Sub service agent exists
	ServiceAccounts map[string]*ServiceAccount
	ProjectPolicy   Policy
	Secrets         map[string]*Secret
	Topics          map[string]*Topic
	Subscriptions   map[string]*Subscription
	Functions       map[string]*Function
	Services        map[string]*Service // Cloud Run services under the functions
	Jobs            map[string]*Job
	Databases       []string
	Indexes         []Index
	Fields          map[string]*Field // "group/field"
	Metrics         map[string]*Metric
	Policies        map[string]*AlertPolicy
	NextID          int
	Busy            map[string]int    // collection group → calls its running operation still refuses
	Pending         map[string]int    // see above
	Unreadable      map[string]string // command path → error its reads answer (a test's PERMISSION_DENIED)
}

type ServiceAccount struct {
	Email, DisplayName string
	Policy             Policy
}

type Secret struct{ Policy Policy }

type Topic struct{ Policy Policy }

type Subscription struct {
	Topic, PushEndpoint, PushAccount string
	AckDeadline                      int
	DeadLetterTopic                  string
	MaxDeliveryAttempts              int
	MinBackoff, MaxBackoff           string
	Retention                        string
	Expiration                       string // "" never, else a ttl such as "2678400s"
	Policy                           Policy
}

type Function struct {
	Runtime, EntryPoint, BuildAccount string
	Memory, CPU                       string
	Concurrency, Timeout              int
	MaxInstances, MinInstances        int
	Account                           string
	Env                               map[string]string
	Secrets                           []SecretEnv
	Labels                            map[string]string
	State                             string
}

type SecretEnv struct{ Key, Secret, Version string }

// Service is a function's Cloud Run service: its environment is the
// function's as last deployed, plus whatever was set on it directly.
type Service struct {
	Env    map[string]string
	Policy Policy
}

type Job struct{ Schedule, TimeZone, Topic, Data, State string }

type Index struct {
	Group, Scope string
	Fields       []IndexField
}

type IndexField struct{ Path, Order, ArrayConfig string }

// Field is a field's explicit configuration: Indexes nil inherits the
// collection group's, empty is an exemption; TTL is "" (none), CREATING or
// ACTIVE.
type Field struct {
	Indexes *[]FieldIndex
	TTL     string
}

type FieldIndex struct{ Order, ArrayConfig string }

type Metric struct{ Config map[string]any }

type AlertPolicy struct {
	Body     map[string]any // as given, without name, channels and labels
	Channels []string
	Labels   map[string]string
}

type Policy struct {
	Bindings []Binding `json:"bindings,omitempty"`
}

type Binding struct {
	Role      string     `json:"role"`
	Members   []string   `json:"members"`
	Condition *Condition `json:"condition,omitempty"`
}

type Condition struct {
	Expression  string `json:"expression" yaml:"expression"`
	Title       string `json:"title" yaml:"title"`
	Description string `json:"description,omitempty" yaml:"description"`
}

// New is an empty project: nothing enabled but Service Usage (every project
// has it), one owner.
func New(project, number string, lag int) *State {
	s := &State{Project: project, Number: number, Lag: lag}
	s.init()
	s.ProjectPolicy.add("user:owner@example.com", "roles/owner", nil)
	return s
}

func (s *State) init() {
	if s.APIs == nil {
		s.APIs = map[string]bool{}
	}
	if s.ServiceAccounts == nil {
		s.ServiceAccounts = map[string]*ServiceAccount{}
	}
	if s.Secrets == nil {
		s.Secrets = map[string]*Secret{}
	}
	if s.Topics == nil {
		s.Topics = map[string]*Topic{}
	}
	if s.Subscriptions == nil {
		s.Subscriptions = map[string]*Subscription{}
	}
	if s.Functions == nil {
		s.Functions = map[string]*Function{}
	}
	if s.Services == nil {
		s.Services = map[string]*Service{}
	}
	if s.Jobs == nil {
		s.Jobs = map[string]*Job{}
	}
	if s.Fields == nil {
		s.Fields = map[string]*Field{}
	}
	if s.Metrics == nil {
		s.Metrics = map[string]*Metric{}
	}
	if s.Policies == nil {
		s.Policies = map[string]*AlertPolicy{}
	}
	if s.Busy == nil {
		s.Busy = map[string]int{}
	}
	if s.Pending == nil {
		s.Pending = map[string]int{}
	}
	if s.Unreadable == nil {
		s.Unreadable = map[string]string{}
	}
}

// AgentMember is the Pub/Sub service agent's member name.
func (s *State) AgentMember() string {
	return "serviceAccount:service-" + s.Number + "@gcp-sa-pubsub.iam.gserviceaccount.com"
}

// pending reports whether Google Cloud has not caught up with the change
// key names, and counts the call it refuses.
func (s *State) pending(key string) bool {
	if s.Pending[key] <= 0 {
		delete(s.Pending, key)
		return false
	}
	s.Pending[key]--
	return true
}

// Resources is the state without its bookkeeping (what Google Cloud has
// not caught up with, running operations), for comparing two projects.
func (s *State) Resources() []byte {
	c := *s
	c.NextID, c.Busy, c.Pending, c.Unreadable = 0, nil, nil, nil
	b, _ := json.MarshalIndent(&c, "", " ")
	return b
}

// Save writes a new project into dir.
func Save(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "state.json"), b, 0o644)
}

// Load reads the project in dir.
func Load(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	s := &State{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, err
	}
	s.init()
	return s, nil
}

// Update changes the project in dir under its lock, as an operator (or the
// running system) would by hand.
func Update(dir string, change func(*State)) error {
	unlock, err := lock(dir)
	if err != nil {
		return err
	}
	defer unlock()
	s, err := Load(dir)
	if err != nil {
		return err
	}
	change(s)
	return Save(dir, s)
}

// lock serialises the calls deploy.sh makes side by side (its reads, its
// Firestore queues).
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "state.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Main runs one gcloud call against the project in dir and returns its
// exit status.
func Main(dir string, args []string, stdout, stderr io.Writer) int {
	unlock, err := lock(dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer unlock()
	if f, err := os.OpenFile(filepath.Join(dir, "calls.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		b, _ := json.Marshal(args)
		fmt.Fprintln(f, string(b))
		f.Close()
	}
	s, err := Load(dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	c := &call{s: s, out: stdout, err: stderr}
	code := c.run(args)
	if err := Save(dir, s); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return code
}

// call is one invocation: its command, flags and positional arguments.
type call struct {
	s        *State
	out, err io.Writer
	path     string // gcloud.pubsub.topics.create
	flags    map[string][]string
	args     []string
}

func (c *call) flag(name string) string {
	if v := c.flags[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func (c *call) has(name string) bool { _, ok := c.flags[name]; return ok }

// fail prints an error as gcloud does: ERROR: (gcloud.group.verb) STATUS: message.
func (c *call) fail(status, msg string) int {
	fmt.Fprintf(c.err, "ERROR: (%s) %s: %s\n", c.path, status, msg)
	return 1
}

func (c *call) json(v any) int {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(c.out, string(b))
	return 0
}

// command is one gcloud command the fake knows: its words, the API it
// calls, the flags it takes (a trailing = takes a value), and its handler.
type command struct {
	words   string
	api     string
	flags   string
	handler func(*call) int
	read    bool
}

func (c *call) run(args []string) int {
	cmd := lookup(args)
	if cmd == nil {
		fmt.Fprintf(c.err, "ERROR: (gcloud) Invalid choice: %q\n", strings.Join(args, " "))
		return 2
	}
	c.path = "gcloud." + strings.ReplaceAll(cmd.words, " ", ".")
	known := map[string]bool{}
	for _, f := range strings.Fields(cmd.flags + " --project= --format= --quiet") {
		known[f] = true
	}
	c.flags = map[string][]string{}
	rest := args[len(strings.Fields(cmd.words)):]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if !strings.HasPrefix(a, "--") {
			c.args = append(c.args, a)
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case known[name+"="]:
			if !hasVal {
				if i+1 >= len(rest) {
					fmt.Fprintf(c.err, "ERROR: (%s) argument %s: expected one argument\n", c.path, name)
					return 2
				}
				i++
				val = rest[i]
			}
		case known[name] && !hasVal:
		default:
			fmt.Fprintf(c.err, "ERROR: (%s) unrecognized arguments: %s\n", c.path, a)
			return 2
		}
		c.flags[name] = append(c.flags[name], val)
	}
	if p := c.flag("--project"); p != "" && p != c.s.Project {
		return c.fail("PERMISSION_DENIED", fmt.Sprintf("Permission denied on resource project %s.", p))
	}
	if cmd.api != "" {
		if code, blocked := c.serviceDisabled(cmd.api); blocked {
			return code
		}
	}
	if msg, ok := c.s.Unreadable[c.path]; ok && cmd.read {
		return c.fail("PERMISSION_DENIED", msg)
	}
	return cmd.handler(c)
}

// serviceDisabled answers as an API that is not enabled, or was enabled
// so recently that Google Cloud has not caught up, does — the text terraform-google-project-factory#753
// and core-solution-services#7 quote ("Cloud Build API has not been used in
// project 599705029636 before or it is disabled. … If you enabled this API
// recently, wait a few minutes for the action to propagate to our systems
// and retry.", reason SERVICE_DISABLED).
func (c *call) serviceDisabled(api string) (int, bool) {
	if c.s.APIs[api] && !c.s.pending("api:"+api) {
		return 0, false
	}
	return c.fail("PERMISSION_DENIED", fmt.Sprintf("%s has not been used in project %s before or it is disabled. "+
		"Enable it by visiting https://console.developers.google.com/apis/api/%s/overview?project=%s then retry. "+
		"If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.\n"+
		"- '@type': type.googleapis.com/google.rpc.ErrorInfo\n  domain: googleapis.com\n  reason: SERVICE_DISABLED",
		api, c.s.Number, api, c.s.Number)), true
}
