package fakegcloud

import (
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

const deployFlags = "--gen2 --runtime= --region= --source= --entry-point= --trigger-http --no-allow-unauthenticated " +
	"--service-account= --build-service-account= --memory= --cpu= --concurrency= --timeout= --max-instances= " +
	"--min-instances= --set-env-vars= --set-secrets= --update-labels="

// buildRoles are the roles that let a custom build account build a
// function: roles/cloudbuild.builds.builder, or the three the documentation
// names (https://cloud.google.com/functions/docs/securing/build-custom-sa).
var buildRoles = [][]string{
	{"roles/cloudbuild.builds.builder"},
	{"roles/logging.logWriter", "roles/storage.objectViewer", "roles/artifactregistry.writer"},
}

// functionsDeploy creates or updates a function, as gcloud does: flags it
// is not given keep their deployed values, --set-env-vars and --set-secrets
// replace, --update-labels merges. The build runs as the build account: one
// without the roles, or granted them so recently that they are not yet in
// effect, fails the build with the text terraform-genai-knowledge-base#245 quotes ("Build
// failed with status: FAILURE. Could not build the function due to a
// missing permission on the build service account").
func functionsDeploy(c *call) int {
	name := c.args[0]
	f, ok := c.s.Functions[name]
	if !ok {
		f = &Function{Runtime: "", Labels: map[string]string{"deployment-tool": "cli-gcloud"}, Env: map[string]string{}}
	}
	next := *f
	next.Labels = maps.Clone(f.Labels)
	for flag, set := range map[string]func(string) error{
		"--runtime":               func(v string) error { next.Runtime = v; return nil },
		"--entry-point":           func(v string) error { next.EntryPoint = v; return nil },
		"--build-service-account": func(v string) error { next.BuildAccount = v; return nil },
		"--memory":                func(v string) error { next.Memory = v; return nil },
		"--cpu":                   func(v string) error { next.CPU = v; return nil },
		"--service-account":       func(v string) error { next.Account = v; return nil },
		"--concurrency":           func(v string) (err error) { next.Concurrency, err = strconv.Atoi(v); return },
		"--max-instances":         func(v string) (err error) { next.MaxInstances, err = strconv.Atoi(v); return },
		"--min-instances":         func(v string) (err error) { next.MinInstances, err = strconv.Atoi(v); return },
		"--timeout": func(v string) (err error) {
			next.Timeout, err = strconv.Atoi(strings.TrimSuffix(v, "s"))
			return
		},
		"--set-env-vars": func(v string) error {
			next.Env = map[string]string{}
			for _, kv := range splitDelimited(v) {
				k, val, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("bad variable %q", kv)
				}
				next.Env[k] = val
			}
			return nil
		},
		"--set-secrets": func(v string) error {
			next.Secrets = nil
			for _, kv := range splitDelimited(v) {
				k, ref, _ := strings.Cut(kv, "=")
				secret, version, ok := strings.Cut(ref, ":")
				if !ok {
					return fmt.Errorf("bad secret %q", kv)
				}
				next.Secrets = append(next.Secrets, SecretEnv{Key: k, Secret: secret, Version: version})
			}
			return nil
		},
		"--update-labels": func(v string) error {
			for _, kv := range splitDelimited(v) {
				k, val, _ := strings.Cut(kv, "=")
				if len(val) > 63 {
					return fmt.Errorf("label %s: value longer than 63 characters", k)
				}
				next.Labels[k] = val
			}
			return nil
		},
	} {
		if !c.has(flag) {
			continue
		}
		if err := set(c.flag(flag)); err != nil {
			return c.fail("INVALID_ARGUMENT", flag+": "+err.Error())
		}
	}
	build := strings.TrimPrefix(next.BuildAccount, "projects/"+c.s.Project+"/serviceAccounts/")
	if !c.canBuild("serviceAccount:" + build) {
		fmt.Fprintf(c.err, "ERROR: (%s) OperationError: code=13, message=Build failed with status: FAILURE. Could not build "+
			"the function due to a missing permission on the build service account. If you didn't revoke that permission "+
			"explicitly, this could be caused by a change in the organization policies. Please refer to the following "+
			"documentation for more details and resolution: https://cloud.google.com/functions/docs/troubleshooting#build-service-account\n", c.path)
		return 1
	}
	// Functions deployed through the Cloud Functions v2 API log their
	// execution id: the API sets LOG_EXECUTION_ID itself
	// (https://cloud.google.com/functions/docs/concepts/java-runtime#execution_id).
	next.Env["LOG_EXECUTION_ID"] = "true"
	next.State = "ACTIVE"
	c.s.Functions[name] = &next
	svc, ok := c.s.Services[name]
	if !ok {
		svc = &Service{}
		c.s.Services[name] = svc
	}
	// A deploy makes a new revision from the function's settings: what was
	// set on the service directly is gone.
	svc.Env = maps.Clone(next.Env)
	for _, s := range next.Secrets {
		svc.Env[s.Key] = "secretKeyRef:" + s.Secret + ":" + s.Version
	}
	fmt.Fprintf(c.err, "Preparing function...done.\nDeploying function...done.\n")
	return 0
}

func (c *call) canBuild(member string) bool {
	if _, ok := c.s.ServiceAccounts[strings.TrimPrefix(member, "serviceAccount:")]; !ok {
		return false
	}
	for _, set := range buildRoles {
		if !slices.ContainsFunc(set, func(r string) bool { return !c.s.ProjectPolicy.Has(member, r) }) {
			return !c.s.pending("build:" + member)
		}
	}
	return false
}

// splitDelimited splits a gcloud map value at commas, or at the delimiter
// an ^X^ prefix names (gcloud topic escaping).
func splitDelimited(v string) []string {
	sep := ","
	if len(v) > 2 && v[0] == '^' {
		if end := strings.Index(v[1:], "^"); end > 0 {
			sep, v = v[1:1+end], v[2+end:]
		}
	}
	return strings.Split(v, sep)
}

func functionsDelete(c *call) int {
	name := c.args[0]
	if _, ok := c.s.Functions[name]; !ok {
		return c.fail("NOT_FOUND", "Resource 'projects/"+c.s.Project+"/locations/"+c.flag("--region")+"/functions/"+name+"' was not found")
	}
	delete(c.s.Functions, name)
	delete(c.s.Services, name)
	return 0
}

func functionsList(c *call) int {
	region := c.flag("--regions")
	var out []map[string]any
	for _, name := range sortedKeys(c.s.Functions) {
		f := c.s.Functions[name]
		sc := map[string]any{
			"service":                       "projects/" + c.s.Project + "/locations/" + region + "/services/" + name,
			"availableMemory":               f.Memory,
			"availableCpu":                  f.CPU,
			"maxInstanceRequestConcurrency": f.Concurrency,
			"timeoutSeconds":                f.Timeout,
			"maxInstanceCount":              f.MaxInstances,
			"serviceAccountEmail":           f.Account,
			"environmentVariables":          f.Env,
			"ingressSettings":               "ALLOW_ALL",
			"allTrafficOnLatestRevision":    true,
			"uri":                           "https://" + name + "-" + c.s.Number + "." + region + ".run.app",
		}
		if f.MinInstances > 0 { // proto3 JSON leaves a zero out
			sc["minInstanceCount"] = f.MinInstances
		}
		var secrets []map[string]any
		for _, s := range f.Secrets {
			secrets = append(secrets, map[string]any{"key": s.Key, "projectId": c.s.Number, "secret": s.Secret, "version": s.Version})
		}
		if secrets != nil {
			sc["secretEnvironmentVariables"] = secrets
		}
		out = append(out, map[string]any{
			"name":        "projects/" + c.s.Project + "/locations/" + region + "/functions/" + name,
			"environment": "GEN_2",
			"state":       f.State,
			"labels":      f.Labels,
			"url":         "https://" + region + "-" + c.s.Project + ".cloudfunctions.net/" + name,
			"buildConfig": map[string]any{
				"runtime": f.Runtime, "entryPoint": f.EntryPoint, "serviceAccount": f.BuildAccount,
				"source": map[string]any{"storageSource": map[string]any{"bucket": "gcf-v2-sources-" + c.s.Number + "-" + region}},
			},
			"serviceConfig": sc,
		})
	}
	return c.json(orEmpty(out))
}

func invokerBinding(verb string) func(*call) int {
	return func(c *call) int {
		svc, ok := c.s.Services[c.args[0]]
		if !ok {
			return c.fail("NOT_FOUND", "Function "+c.args[0]+" in region "+c.flag("--region")+" in project "+c.s.Project+" does not exist")
		}
		c.flags["--role"] = []string{"roles/run.invoker"}
		return c.policyCall(&svc.Policy, verb)
	}
}

// runList answers in Cloud Run's (Knative) format.
func runList(c *call) int {
	var out []map[string]any
	for _, name := range sortedKeys(c.s.Services) {
		var env []map[string]any
		for _, k := range sortedKeys(c.s.Services[name].Env) {
			v := c.s.Services[name].Env[k]
			if ref, ok := strings.CutPrefix(v, "secretKeyRef:"); ok {
				secret, version, _ := strings.Cut(ref, ":")
				env = append(env, map[string]any{"name": k, "valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": secret, "key": version}}})
			} else {
				env = append(env, map[string]any{"name": k, "value": v})
			}
		}
		out = append(out, map[string]any{
			"apiVersion": "serving.knative.dev/v1", "kind": "Service",
			"metadata": map[string]any{"name": name, "namespace": c.s.Number},
			"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
				"containers": []any{map[string]any{"env": env}},
			}}},
		})
	}
	return c.json(orEmpty(out))
}

func runPolicy(c *call) int {
	svc, ok := c.s.Services[c.args[0]]
	if !ok {
		return c.fail("NOT_FOUND", "Service ["+c.args[0]+"] could not be found.")
	}
	return c.policyCall(&svc.Policy, "get")
}

// --- Cloud Scheduler -------------------------------------------------------

const jobFlags = "--location= --schedule= --time-zone= --topic= --message-body="

func jobsList(c *call) int {
	var out []map[string]any
	for _, name := range sortedKeys(c.s.Jobs) {
		j := c.s.Jobs[name]
		out = append(out, map[string]any{
			"name":     "projects/" + c.s.Project + "/locations/" + c.flag("--location") + "/jobs/" + name,
			"schedule": j.Schedule, "timeZone": j.TimeZone, "state": j.State,
			"pubsubTarget": map[string]any{"topicName": j.Topic, "data": j.Data},
		})
	}
	return c.json(orEmpty(out))
}

func jobsPut(create bool) func(*call) int {
	return func(c *call) int {
		name := c.args[0]
		j, ok := c.s.Jobs[name]
		switch {
		case create && ok:
			return c.fail("ALREADY_EXISTS", "Job projects/"+c.s.Project+"/locations/"+c.flag("--location")+"/jobs/"+name+" already exists.")
		case !create && !ok:
			return c.fail("NOT_FOUND", "Job not found.")
		case create:
			j = &Job{State: "ENABLED"}
			c.s.Jobs[name] = j
		}
		if c.has("--schedule") {
			j.Schedule = c.flag("--schedule")
		}
		if c.has("--time-zone") {
			j.TimeZone = c.flag("--time-zone")
		}
		if c.has("--topic") {
			j.Topic = c.flag("--topic")
		}
		if c.has("--message-body") {
			j.Data = base64.StdEncoding.EncodeToString([]byte(c.flag("--message-body")))
		}
		return 0
	}
}

func jobsDelete(c *call) int {
	if _, ok := c.s.Jobs[c.args[0]]; !ok {
		return c.fail("NOT_FOUND", "Job not found.")
	}
	delete(c.s.Jobs, c.args[0])
	return 0
}

// listFiles asks the real CLI which files it would upload (a local
// command, no project), once per test run: the tree does not change while
// tests run.
func listFiles(c *call) int {
	cache := os.Getenv("FAKE_GCLOUD_LISTING")
	if b, err := os.ReadFile(cache); err == nil && cache != "" {
		_, _ = c.out.Write(b)
		return 0
	}
	cmd := exec.Command(os.Getenv("FAKE_GCLOUD_REAL"), append([]string{"meta", "list-files-for-upload"}, c.args...)...)
	cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+os.Getenv("FAKE_GCLOUD_REAL_CONFIG"), "CLOUDSDK_CORE_DISABLE_PROMPTS=1")
	b, err := cmd.Output()
	if err != nil {
		return c.fail("INTERNAL", "the real gcloud could not list files: "+err.Error())
	}
	if cache != "" {
		_ = os.WriteFile(cache, b, 0o644)
	}
	_, _ = c.out.Write(b)
	return 0
}
