package fakegcloud

import (
	"fmt"
	"strconv"
	"strings"
)

func (c *call) topicName(t string) string {
	if strings.HasPrefix(t, "projects/") {
		return t
	}
	return "projects/" + c.s.Project + "/topics/" + t
}

func topicsList(c *call) int {
	var out []map[string]any
	for _, t := range sortedKeys(c.s.Topics) {
		out = append(out, map[string]any{"name": c.topicName(t)})
	}
	return c.json(orEmpty(out))
}

func topicsCreate(c *call) int {
	t := c.args[0]
	if _, ok := c.s.Topics[t]; ok {
		return c.fail("ALREADY_EXISTS", "Resource already exists in the project (resource="+t+").")
	}
	c.s.Topics[t] = &Topic{}
	fmt.Fprintf(c.err, "Created topic [%s].\n", c.topicName(t))
	return 0
}

func topicsDelete(c *call) int {
	t := c.args[0]
	if _, ok := c.s.Topics[t]; !ok {
		return c.fail("NOT_FOUND", "Resource not found (resource="+t+").")
	}
	delete(c.s.Topics, t)
	return 0
}

func topicPolicy(verb string) func(*call) int {
	return func(c *call) int {
		t, ok := c.s.Topics[c.args[0]]
		if !ok {
			return c.fail("NOT_FOUND", "Resource not found (resource="+c.args[0]+").")
		}
		return c.policyCall(&t.Policy, verb)
	}
}

func subsList(c *call) int {
	var out []map[string]any
	for _, name := range sortedKeys(c.s.Subscriptions) {
		s := c.s.Subscriptions[name]
		m := map[string]any{
			"name":                     "projects/" + c.s.Project + "/subscriptions/" + name,
			"topic":                    c.topicName(s.Topic),
			"ackDeadlineSeconds":       s.AckDeadline,
			"messageRetentionDuration": s.Retention,
			"state":                    "ACTIVE",
		}
		if s.PushEndpoint != "" {
			push := map[string]any{"pushEndpoint": s.PushEndpoint}
			if s.PushAccount != "" {
				push["oidcToken"] = map[string]any{"serviceAccountEmail": s.PushAccount}
			}
			m["pushConfig"] = push
		}
		if s.Expiration == "" {
			m["expirationPolicy"] = map[string]any{}
		} else {
			m["expirationPolicy"] = map[string]any{"ttl": s.Expiration}
		}
		if s.DeadLetterTopic != "" {
			m["deadLetterPolicy"] = map[string]any{"deadLetterTopic": c.topicName(s.DeadLetterTopic), "maxDeliveryAttempts": s.MaxDeliveryAttempts}
		}
		if s.MinBackoff != "" || s.MaxBackoff != "" {
			m["retryPolicy"] = map[string]any{"minimumBackoff": s.MinBackoff, "maximumBackoff": s.MaxBackoff}
		}
		out = append(out, m)
	}
	return c.json(orEmpty(out))
}

const subscriptionFlags = "--push-endpoint= --push-auth-service-account= --ack-deadline= --dead-letter-topic= " +
	"--max-delivery-attempts= --min-retry-delay= --max-retry-delay= --expiration-period= --message-retention-duration="

// subsCreate creates a subscription with Pub/Sub's defaults for what the
// flags leave out (10 s ack deadline, 7 days' retention, expiry after 31
// idle days).
func subsCreate(c *call) int {
	name := c.args[0]
	if _, ok := c.s.Subscriptions[name]; ok {
		return c.fail("ALREADY_EXISTS", "Resource already exists in the project (resource="+name+").")
	}
	t := strings.TrimPrefix(c.flag("--topic"), "projects/"+c.s.Project+"/topics/")
	if _, ok := c.s.Topics[t]; !ok {
		return c.fail("NOT_FOUND", "Resource not found (resource="+t+").")
	}
	s := &Subscription{Topic: t, AckDeadline: 10, Retention: "604800s", Expiration: "2678400s"}
	if code := c.setSubscription(s); code != 0 {
		return code
	}
	c.s.Subscriptions[name] = s
	fmt.Fprintf(c.err, "Created subscription [projects/%s/subscriptions/%s].\n", c.s.Project, name)
	return 0
}

func subsUpdate(c *call) int {
	s, ok := c.s.Subscriptions[c.args[0]]
	if !ok {
		return c.fail("NOT_FOUND", "Resource not found (resource="+c.args[0]+").")
	}
	return c.setSubscription(s)
}

func subsDelete(c *call) int {
	if _, ok := c.s.Subscriptions[c.args[0]]; !ok {
		return c.fail("NOT_FOUND", "Resource not found (resource="+c.args[0]+").")
	}
	delete(c.s.Subscriptions, c.args[0])
	return 0
}

func (c *call) setSubscription(s *Subscription) int {
	for flag, set := range map[string]func(string) error{
		"--push-endpoint":             func(v string) error { s.PushEndpoint = v; return nil },
		"--push-auth-service-account": func(v string) error { s.PushAccount = v; return nil },
		"--dead-letter-topic": func(v string) error {
			s.DeadLetterTopic = strings.TrimPrefix(v, "projects/"+c.s.Project+"/topics/")
			return nil
		},
		"--ack-deadline":               func(v string) (err error) { s.AckDeadline, err = strconv.Atoi(v); return },
		"--max-delivery-attempts":      func(v string) (err error) { s.MaxDeliveryAttempts, err = strconv.Atoi(v); return },
		"--min-retry-delay":            func(v string) (err error) { s.MinBackoff, err = seconds(v); return },
		"--max-retry-delay":            func(v string) (err error) { s.MaxBackoff, err = seconds(v); return },
		"--message-retention-duration": func(v string) (err error) { s.Retention, err = seconds(v); return },
		"--expiration-period": func(v string) (err error) {
			if v == "never" {
				s.Expiration = ""
				return nil
			}
			s.Expiration, err = seconds(v)
			return
		},
	} {
		if !c.has(flag) {
			continue
		}
		if err := set(c.flag(flag)); err != nil {
			return c.fail("INVALID_ARGUMENT", flag+": "+err.Error())
		}
	}
	if s.AckDeadline < 10 || s.AckDeadline > 600 {
		return c.fail("INVALID_ARGUMENT", "The ack deadline must be between 10 and 600 seconds.")
	}
	return 0
}

func subPolicy(verb string) func(*call) int {
	return func(c *call) int {
		s, ok := c.s.Subscriptions[c.args[0]]
		if !ok {
			return c.fail("NOT_FOUND", "Resource not found (resource="+c.args[0]+").")
		}
		return c.policyCall(&s.Policy, verb)
	}
}

// seconds turns a gcloud duration (10s, 7d, 1h) into the API's "Ns".
func seconds(v string) (string, error) {
	units := map[byte]int{'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
	if len(v) < 2 || units[v[len(v)-1]] == 0 {
		return "", fmt.Errorf("bad duration %q", v)
	}
	n, err := strconv.Atoi(v[:len(v)-1])
	if err != nil {
		return "", err
	}
	return strconv.Itoa(n*units[v[len(v)-1]]) + "s", nil
}
