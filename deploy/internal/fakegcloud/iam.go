package fakegcloud

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

func (p *Policy) add(member, role string, cond *Condition) {
	for i, b := range p.Bindings {
		if b.Role == role && sameCondition(b.Condition, cond) {
			if !slices.Contains(b.Members, member) {
				p.Bindings[i].Members = append(b.Members, member)
				sort.Strings(p.Bindings[i].Members)
			}
			return
		}
	}
	p.Bindings = append(p.Bindings, Binding{Role: role, Members: []string{member}, Condition: cond})
	// IAM keeps no order between bindings: keep one, so that equal policies
	// compare equal.
	sort.SliceStable(p.Bindings, func(i, j int) bool {
		a, b := p.Bindings[i], p.Bindings[j]
		if a.Role != b.Role {
			return a.Role < b.Role
		}
		return a.Condition != nil && (b.Condition == nil || a.Condition.Title+a.Condition.Expression < b.Condition.Title+b.Condition.Expression)
	})
}

// remove takes member out of role's bindings: the one with cond, or every
// one when all. It reports whether it found one.
func (p *Policy) remove(member, role string, cond *Condition, all bool) bool {
	found := false
	for i := range p.Bindings {
		b := &p.Bindings[i]
		if b.Role != role || (!all && !sameCondition(b.Condition, cond)) {
			continue
		}
		if j := slices.Index(b.Members, member); j >= 0 {
			b.Members = slices.Delete(b.Members, j, j+1)
			found = true
		}
	}
	p.Bindings = slices.DeleteFunc(p.Bindings, func(b Binding) bool { return len(b.Members) == 0 })
	return found
}

// Has reports whether member holds role in p (under any condition).
func (p *Policy) Has(member, role string) bool {
	return slices.ContainsFunc(p.Bindings, func(b Binding) bool { return b.Role == role && slices.Contains(b.Members, member) })
}

// Remove takes a grant away, as an operator would by hand.
func (p *Policy) Remove(member, role string) bool { return p.remove(member, role, nil, true) }

func sameCondition(a, b *Condition) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Expression == b.Expression && a.Title == b.Title
}

// memberMissing answers as IAM does for a member it cannot see yet: a
// service account (or the Pub/Sub agent) created so recently that IAM has
// not caught up, or one that does not exist. The text is the
// one generative-ai#944 quotes ("ERROR: (gcloud.projects.add-iam-policy-binding)
// INVALID_ARGUMENT: Service account …@developer.gserviceaccount.com does not
// exist.") and terraform_dataform_ga4_pipeline#1 for a service agent
// ("Service account service-802491271465@gcp-sa-logging.iam.gserviceaccount.com
// does not exist."); Terraform documents the same window for new accounts
// (magic-modules#1408, "Creation of service accounts is eventually
// consistent").
func (c *call) memberMissing(member string) (int, bool) {
	email, ok := strings.CutPrefix(member, "serviceAccount:")
	if !ok {
		return 0, false
	}
	switch {
	case member == c.s.AgentMember():
		if c.s.Agent && !c.s.pending("account:"+email) {
			return 0, false
		}
	case strings.HasSuffix(email, "@"+c.s.Project+".iam.gserviceaccount.com"):
		if _, ok := c.s.ServiceAccounts[email]; ok && !c.s.pending("account:"+email) {
			return 0, false
		}
	default:
		return 0, false
	}
	return c.fail("INVALID_ARGUMENT", "Service account "+email+" does not exist."), true
}

// policyCall handles get-iam-policy, add-iam-policy-binding and
// remove-iam-policy-binding on one resource's policy.
func (c *call) policyCall(p *Policy, verb string) int {
	member, role := c.flag("--member"), c.flag("--role")
	switch verb {
	case "get":
		return c.json(policyJSON(p))
	case "add":
		if code, missing := c.memberMissing(member); missing {
			return code
		}
		cond, code := c.condition()
		if code != 0 {
			return code
		}
		if p == &c.s.ProjectPolicy && !p.Has(member, role) && slices.ContainsFunc(buildRoles, func(set []string) bool { return slices.Contains(set, role) }) {
			c.s.Pending["build:"+member] = c.s.Lag
		}
		p.add(member, role, cond)
	case "remove":
		cond, code := c.condition()
		if code != 0 {
			return code
		}
		if !p.remove(member, role, cond, c.has("--all")) {
			fmt.Fprintln(c.err, "ERROR: Policy binding with the specified principal, role, and condition not found!")
			return 1
		}
	}
	fmt.Fprintln(c.out, "Updated IAM policy.")
	return 0
}

// condition reads --condition (None or expression=…,title=…) or
// --condition-from-file.
func (c *call) condition() (*Condition, int) {
	if f := c.flag("--condition-from-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, c.fail("INVALID_ARGUMENT", err.Error())
		}
		var cond Condition
		if err := yaml.Unmarshal(b, &cond); err != nil || cond.Expression == "" {
			return nil, c.fail("INVALID_ARGUMENT", "invalid condition file "+f)
		}
		return &cond, 0
	}
	v := c.flag("--condition")
	if v == "" || v == "None" {
		return nil, 0
	}
	cond := &Condition{}
	for kv := range strings.SplitSeq(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "expression":
			cond.Expression = val
		case "title":
			cond.Title = val
		case "description":
			cond.Description = val
		default:
			return nil, c.fail("INVALID_ARGUMENT", "unknown condition key "+k)
		}
	}
	return cond, 0
}

func policyJSON(p *Policy) map[string]any {
	out := map[string]any{"etag": "BwYfakeEtag=", "version": 1}
	if len(p.Bindings) > 0 {
		out["bindings"] = p.Bindings
		for _, b := range p.Bindings {
			if b.Condition != nil {
				out["version"] = 3
			}
		}
	}
	return out
}

// --- Service Usage -----------------------------------------------------------

func servicesList(c *call) int {
	var out []map[string]any
	for _, api := range sortedKeys(c.s.APIs) {
		if !c.s.APIs[api] {
			continue
		}
		out = append(out, map[string]any{
			"config": map[string]any{"name": api},
			"name":   "projects/" + c.s.Number + "/services/" + api,
			"parent": "projects/" + c.s.Number,
			"state":  "ENABLED",
		})
	}
	return c.json(orEmpty(out))
}

func servicesEnable(c *call) int {
	for _, api := range c.args {
		if !c.s.APIs[api] {
			c.s.APIs[api] = true
			c.s.Pending["api:"+api] = c.s.Lag
		}
	}
	fmt.Fprintln(c.err, "Operation finished successfully.")
	return 0
}

// identityCreate creates a service's agent
// (https://cloud.google.com/sdk/gcloud/reference/beta/services/identity/create);
// only Pub/Sub's is modelled.
func identityCreate(c *call) int {
	if c.flag("--service") != "pubsub.googleapis.com" {
		return c.fail("INVALID_ARGUMENT", "only pubsub.googleapis.com is modelled")
	}
	email := strings.TrimPrefix(c.s.AgentMember(), "serviceAccount:")
	if !c.s.Agent {
		c.s.Agent = true
		c.s.Pending["account:"+email] = c.s.Lag
	}
	fmt.Fprintln(c.err, "Service identity created: "+email)
	return 0
}

// --- IAM and Resource Manager ---------------------------------------------------

func saList(c *call) int {
	var out []map[string]any
	for _, email := range sortedKeys(c.s.ServiceAccounts) {
		sa := c.s.ServiceAccounts[email]
		out = append(out, map[string]any{
			"email": email, "displayName": sa.DisplayName, "projectId": c.s.Project,
			"name": "projects/" + c.s.Project + "/serviceAccounts/" + email,
		})
	}
	return c.json(orEmpty(out))
}

func saCreate(c *call) int {
	email := c.args[0] + "@" + c.s.Project + ".iam.gserviceaccount.com"
	if _, ok := c.s.ServiceAccounts[email]; ok {
		return c.fail("ALREADY_EXISTS", "Service account "+email+" already exists within project projects/"+c.s.Project+".")
	}
	c.s.ServiceAccounts[email] = &ServiceAccount{Email: email, DisplayName: c.flag("--display-name")}
	c.s.Pending["account:"+email] = c.s.Lag
	fmt.Fprintf(c.err, "Created service account [%s].\n", c.args[0])
	return 0
}

func saDelete(c *call) int {
	if _, ok := c.s.ServiceAccounts[c.args[0]]; !ok {
		return c.fail("NOT_FOUND", "Service account projects/"+c.s.Project+"/serviceAccounts/"+c.args[0]+" not found.")
	}
	delete(c.s.ServiceAccounts, c.args[0])
	return 0
}

func saPolicy(verb string) func(*call) int {
	return func(c *call) int {
		sa, ok := c.s.ServiceAccounts[c.args[0]]
		if !ok {
			return c.fail("NOT_FOUND", "Service account "+c.args[0]+" does not exist.")
		}
		return c.policyCall(&sa.Policy, verb)
	}
}

func projectPolicy(verb string) func(*call) int {
	return func(c *call) int {
		if c.args[0] != c.s.Project {
			return c.fail("PERMISSION_DENIED", "Permission denied on resource project "+c.args[0]+".")
		}
		return c.policyCall(&c.s.ProjectPolicy, verb)
	}
}

// --- Secret Manager ------------------------------------------------------------

func secretsList(c *call) int {
	var out []map[string]any
	for _, name := range sortedKeys(c.s.Secrets) {
		out = append(out, map[string]any{"name": "projects/" + c.s.Number + "/secrets/" + name,
			"replication": map[string]any{"automatic": map[string]any{}}})
	}
	return c.json(orEmpty(out))
}

func secretPolicy(verb string) func(*call) int {
	return func(c *call) int {
		s, ok := c.s.Secrets[c.args[0]]
		if !ok {
			return c.fail("NOT_FOUND", "Secret [projects/"+c.s.Number+"/secrets/"+c.args[0]+"] not found.")
		}
		return c.policyCall(&s.Policy, verb)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// orEmpty keeps an empty list a list in JSON.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// parseJSONorYAML reads a --config-from-file or --policy-from-file file as
// gcloud does (YAML, of which JSON is a part).
func parseJSONorYAML(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	// Round-trip through JSON so that numbers and maps have JSON's types.
	j, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	m = nil
	return m, json.Unmarshal(j, &m)
}
