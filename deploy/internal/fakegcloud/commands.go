package fakegcloud

import (
	"slices"
	"strings"
)

const (
	iamAPI       = "iam.googleapis.com"
	crmAPI       = "cloudresourcemanager.googleapis.com"
	secretsAPI   = "secretmanager.googleapis.com"
	pubsubAPI    = "pubsub.googleapis.com"
	functionsAPI = "cloudfunctions.googleapis.com"
	runAPI       = "run.googleapis.com"
	schedulerAPI = "cloudscheduler.googleapis.com"
	firestoreAPI = "firestore.googleapis.com"
	loggingAPI   = "logging.googleapis.com"
	monitorAPI   = "monitoring.googleapis.com"
	binding      = "--member= --role="
)

// commands is every command the fake answers. Reads (read: true) are the
// ones a test can make unreadable.
var commands = []command{
	{words: "services list", flags: "--enabled", handler: servicesList, read: true},
	{words: "services enable", handler: servicesEnable},
	{words: "beta services identity create", flags: "--service=", handler: identityCreate},
	{words: "meta list-files-for-upload", handler: listFiles, read: true},

	{words: "iam service-accounts list", api: iamAPI, handler: saList, read: true},
	{words: "iam service-accounts create", api: iamAPI, flags: "--display-name=", handler: saCreate},
	{words: "iam service-accounts delete", api: iamAPI, handler: saDelete},
	{words: "iam service-accounts get-iam-policy", api: iamAPI, handler: saPolicy("get"), read: true},
	{words: "iam service-accounts add-iam-policy-binding", api: iamAPI, flags: binding, handler: saPolicy("add")},
	{words: "iam service-accounts remove-iam-policy-binding", api: iamAPI, flags: binding, handler: saPolicy("remove")},
	{words: "projects get-iam-policy", api: crmAPI, handler: projectPolicy("get"), read: true},
	{words: "projects add-iam-policy-binding", api: crmAPI, flags: binding + " --condition=", handler: projectPolicy("add")},
	{words: "projects remove-iam-policy-binding", api: crmAPI, flags: binding + " --condition= --condition-from-file= --all", handler: projectPolicy("remove")},

	{words: "secrets list", api: secretsAPI, handler: secretsList, read: true},
	{words: "secrets get-iam-policy", api: secretsAPI, handler: secretPolicy("get"), read: true},
	{words: "secrets add-iam-policy-binding", api: secretsAPI, flags: binding, handler: secretPolicy("add")},
	{words: "secrets remove-iam-policy-binding", api: secretsAPI, flags: binding, handler: secretPolicy("remove")},

	{words: "pubsub topics list", api: pubsubAPI, handler: topicsList, read: true},
	{words: "pubsub topics create", api: pubsubAPI, handler: topicsCreate},
	{words: "pubsub topics delete", api: pubsubAPI, handler: topicsDelete},
	{words: "pubsub topics get-iam-policy", api: pubsubAPI, handler: topicPolicy("get"), read: true},
	{words: "pubsub topics add-iam-policy-binding", api: pubsubAPI, flags: binding, handler: topicPolicy("add")},
	{words: "pubsub topics remove-iam-policy-binding", api: pubsubAPI, flags: binding, handler: topicPolicy("remove")},
	{words: "pubsub subscriptions list", api: pubsubAPI, handler: subsList, read: true},
	{words: "pubsub subscriptions create", api: pubsubAPI, flags: "--topic= " + subscriptionFlags, handler: subsCreate},
	{words: "pubsub subscriptions update", api: pubsubAPI, flags: subscriptionFlags, handler: subsUpdate},
	{words: "pubsub subscriptions delete", api: pubsubAPI, handler: subsDelete},
	{words: "pubsub subscriptions get-iam-policy", api: pubsubAPI, handler: subPolicy("get"), read: true},
	{words: "pubsub subscriptions add-iam-policy-binding", api: pubsubAPI, flags: binding, handler: subPolicy("add")},
	{words: "pubsub subscriptions remove-iam-policy-binding", api: pubsubAPI, flags: binding, handler: subPolicy("remove")},

	{words: "functions list", api: functionsAPI, flags: "--regions=", handler: functionsList, read: true},
	{words: "functions deploy", api: functionsAPI, flags: deployFlags, handler: functionsDeploy},
	{words: "functions delete", api: functionsAPI, flags: "--gen2 --region=", handler: functionsDelete},
	{words: "functions add-invoker-policy-binding", api: functionsAPI, flags: "--region= --member=", handler: invokerBinding("add")},
	{words: "functions remove-invoker-policy-binding", api: functionsAPI, flags: "--region= --member=", handler: invokerBinding("remove")},
	{words: "run services list", api: runAPI, flags: "--region=", handler: runList, read: true},
	{words: "run services get-iam-policy", api: runAPI, flags: "--region=", handler: runPolicy, read: true},

	{words: "scheduler jobs list", api: schedulerAPI, flags: "--location=", handler: jobsList, read: true},
	{words: "scheduler jobs create pubsub", api: schedulerAPI, flags: jobFlags, handler: jobsPut(true)},
	{words: "scheduler jobs update pubsub", api: schedulerAPI, flags: jobFlags, handler: jobsPut(false)},
	{words: "scheduler jobs delete", api: schedulerAPI, flags: "--location=", handler: jobsDelete},

	{words: "firestore databases list", api: firestoreAPI, handler: dbList, read: true},
	{words: "firestore databases create", api: firestoreAPI, flags: "--database= --location= --type=", handler: dbCreate},
	{words: "firestore indexes composite list", api: firestoreAPI, handler: compositeList, read: true},
	{words: "firestore indexes composite create", api: firestoreAPI, flags: "--collection-group= --query-scope= --field-config= --async", handler: compositeCreate},
	{words: "firestore indexes fields list", api: firestoreAPI, handler: fieldsList, read: true},
	{words: "firestore indexes fields update", api: firestoreAPI, flags: "--collection-group= --disable-indexes --index= --clear-exemption --async", handler: fieldsUpdate},
	{words: "firestore fields ttls list", api: firestoreAPI, handler: ttlsList, read: true},
	{words: "firestore fields ttls update", api: firestoreAPI, flags: "--collection-group= --enable-ttl --disable-ttl --async", handler: ttlsUpdate},

	{words: "logging metrics list", api: loggingAPI, handler: metricsList, read: true},
	{words: "logging metrics create", api: loggingAPI, flags: "--config-from-file=", handler: metricsPut(true)},
	{words: "logging metrics update", api: loggingAPI, flags: "--config-from-file=", handler: metricsPut(false)},
	{words: "alpha monitoring policies list", api: monitorAPI, handler: policiesList, read: true},
	{words: "alpha monitoring policies create", api: monitorAPI, flags: "--policy-from-file= --user-labels= --notification-channels=", handler: policiesCreate},
	{words: "alpha monitoring policies update", api: monitorAPI,
		flags: "--policy-from-file= --update-user-labels= --set-notification-channels= --clear-notification-channels", handler: policiesUpdate},
}

// lookup finds the command args call: the longest whose words begin them.
func lookup(args []string) *command {
	var best *command
	for i := range commands {
		w := strings.Fields(commands[i].words)
		if len(args) >= len(w) && slices.Equal(args[:len(w)], w) &&
			(best == nil || len(w) > len(strings.Fields(best.words))) {
			best = &commands[i]
		}
	}
	return best
}

// Read reports whether a call (its arguments as logged) only reads.
func Read(args []string) bool {
	c := lookup(args)
	return c != nil && c.read
}

// Shape names a call by its command and the flags it gives, not their
// values: calls of one shape are parsed alike by the real CLI.
func Shape(args []string) string {
	c := lookup(args)
	if c == nil {
		return strings.Join(args, " ")
	}
	var flags []string
	for _, a := range args {
		if name, _, _ := strings.Cut(a, "="); strings.HasPrefix(name, "--") && !slices.Contains(flags, name) {
			flags = append(flags, name)
		}
	}
	slices.Sort(flags)
	return c.words + " " + strings.Join(flags, " ")
}
