#!/usr/bin/env bash
# Deploy phasegate to one Google Cloud project with the Google Cloud CLI,
# from the repository root as the functions' source.
#
#   PROJECT=my-proj REGION=us-west2 PROJECT_NUMBER=123456789012 deploy/deploy.sh
#   PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh --dry-run   # print the plan, run nothing
#   PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh --check     # compare the project with the plan
#   MODE=shadow PREFIX=shd- PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh           # a shadow copy
#   PREFIX=shd- PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh --delete              # remove it
#
# Inputs (environment):
#   PROJECT, REGION, PROJECT_NUMBER  required (the Pub/Sub service agent and the
#                     functions' run.app URLs are named by the number)
#   PREFIX            prepended to every name phasegate alone owns (functions,
#                     its subscriptions, the Scheduler job, service accounts,
#                     the sweep topic and, for a prefixed copy, its own
#                     dead-letter topic and inspect subscription); lowercase,
#                     at most 10 characters. A prefixed copy gets no log-based
#                     metrics or alert policies and never touches the live ones.
#   MODE              live (default) or shadow
#   PHASES            what to deploy live, comma-separated from phase2_to_phase3,
#                     phase3_to_phase4, phase4_to_phase5, prediction_batch
#                     (default all); becomes PHASEGATE_PHASES
#   CONFIG            optional YAML file in this repository, deployed with the
#                     source and named in ORCHESTRATOR_CONFIG
#   FIRESTORE_LOCATION where to create the Firestore database if the project
#                     has none (default: REGION)
#   BQ_READ_DATASETS  datasets the data checks count rows in (comma-separated;
#                     default nba_raw,nba_analytics,nba_precompute,nba_predictions)
#   BQ_HISTORY_DATASET the history table's dataset (default nba_orchestration)
#   OPERATORS         optional IAM members (comma-separated, e.g.
#                     group:data-platform@example.com) allowed to call Status
#                     and Health
#   NOTIFICATION_CHANNELS Cloud Monitoring notification channels
#                     (comma-separated projects/…/notificationChannels/…) the
#                     alert policies notify; empty keeps the channels each
#                     policy has, `none` removes them
#
# The Slack webhook URLs come from the Secret Manager secrets
# slack-webhook-url, slack-webhook-url-error and slack-webhook-url-warning,
# which the operator creates once (never plain environment variables):
#   printf %s "$URL" | gcloud secrets create slack-webhook-url --data-file=- --project "$PROJECT"
#
# A run reads the project first (lists and IAM policies), checks what the
# plan would collide with, and only then changes what is missing or differs:
# a second run with nothing changed creates, updates, deletes and deploys
# nothing. A function is redeployed only when its source (a hash of the files
# `gcloud meta list-files-for-upload` lists, kept in its label
# phasegate-source) or its settings differ. Where Google Cloud is eventually
# consistent (a new service account, log-based metric, API or role binding;
# Firestore operations on one collection group) it waits with a bounded
# backoff, saying what it waits for. It stops, having changed nothing, when
# a Firestore setting of the index file collides with one already on a
# collection group (one TTL field per collection group; index settings of
# the running system's) and when a deployed function has an environment
# variable deploy.sh does not set (an operator's flag), unless --force.
# --dry-run prints, one per line and shell-quoted, every command of the
# create path (an empty project) and runs nothing: no probes, no credentials.
# --check reads the project and prints one line per planned step: ok,
# missing, differs (with what differs), extra (a grant to phasegate's
# accounts the plan does not make), conflict or unknown (could not read);
# --json prints the same as one JSON object. Needs: gcloud, jq.
#
# MODE=shadow deploys a copy that runs beside the running system
# (PHASEGATE_MODE=shadow: it writes only shadow_ collections and sends
# nothing); give it a PREFIX so that its functions, subscriptions, Scheduler
# job, topics and service accounts are its own. --delete removes everything
# a run with the same PREFIX created, and its grants (it refuses an empty
# PREFIX, so it never removes the unprefixed deployment); topics shared with
# the pipeline, the secrets and the Firestore indexes stay, and shadow
# documents expire by their TTL. With --dry-run it prints the removal plan
# for a project that holds the whole copy.
#
# Exit status: 0 done (--check: everything in place), 1 failed, a conflict
# (--check: drift), 2 usage, 3 --check could not read the project
# (permission denied, API disabled).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
	sed -n '2,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
die_usage() {
	echo "deploy.sh: $*" >&2
	exit 2
}
die() {
	echo "deploy.sh: $*" >&2
	exit 1
}

DRY_RUN=false DELETE=false CHECK=false JSON=false FORCE=false
for arg in "$@"; do
	case $arg in
	--dry-run) DRY_RUN=true ;;
	--delete) DELETE=true ;;
	--check) CHECK=true ;;
	--json) JSON=true ;;
	--force) FORCE=true ;;
	-h | --help) usage ;;
	*) die_usage "unknown argument '$arg' (see --help)" ;;
	esac
done
! $JSON || $CHECK || die_usage "--json goes with --check"
! $CHECK || ! { $DRY_RUN || $DELETE || $FORCE; } || die_usage "--check reads only: it takes no --dry-run, --delete or --force"

[[ -n ${PROJECT:-} ]] || die_usage "PROJECT is required"
[[ -n ${REGION:-} ]] || die_usage "REGION is required"
[[ ${PROJECT_NUMBER:-} =~ ^[0-9]+$ ]] || die_usage "PROJECT_NUMBER is required (digits; gcloud projects describe \$PROJECT --format='value(projectNumber)')"
PREFIX=${PREFIX:-}
[[ -z $PREFIX || $PREFIX =~ ^[a-z][a-z0-9-]{0,9}$ ]] ||
	die_usage "PREFIX '$PREFIX' must be lowercase letters, digits or '-', start with a letter, at most 10 characters"
! $DELETE || [[ -n $PREFIX ]] ||
	die_usage "--delete removes a prefixed copy: set the PREFIX it was deployed with (it never removes the unprefixed deployment)"
MODE=${MODE:-live}
[[ $MODE == live || $MODE == shadow ]] || die_usage "MODE must be live or shadow, not '$MODE'"
ALL_PHASES=phase2_to_phase3,phase3_to_phase4,phase4_to_phase5,prediction_batch
PHASES=${PHASES:-$ALL_PHASES}
IFS=, read -ra phases <<<"$PHASES"
for p in "${phases[@]}"; do
	[[ ,$ALL_PHASES, == *",$p,"* ]] || die_usage "PHASES: unknown phase '$p' (from $ALL_PHASES)"
done
CONFIG=${CONFIG:-}
if [[ -n $CONFIG ]]; then
	[[ $CONFIG != /* && $CONFIG != *..* && -f $CONFIG ]] ||
		die_usage "CONFIG '$CONFIG' must be a file inside this repository, named relative to its root"
fi
OPERATORS=${OPERATORS:-}
BQ_READ_DATASETS=${BQ_READ_DATASETS:-nba_raw,nba_analytics,nba_precompute,nba_predictions}
BQ_HISTORY_DATASET=${BQ_HISTORY_DATASET:-nba_orchestration}
IFS=, read -ra bq_read <<<"$BQ_READ_DATASETS"
for d in "${bq_read[@]}" "$BQ_HISTORY_DATASET"; do
	[[ $d =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die_usage "BigQuery dataset '$d' is not a dataset name"
done
NOTIFICATION_CHANNELS=${NOTIFICATION_CHANNELS:-}
[[ -z $NOTIFICATION_CHANNELS || $NOTIFICATION_CHANNELS == none ||
	$NOTIFICATION_CHANNELS =~ ^projects/[^,/]+/notificationChannels/[^,/]+(,projects/[^,/]+/notificationChannels/[^,/]+)*$ ]] ||
	die_usage "NOTIFICATION_CHANNELS must be comma-separated projects/PROJECT/notificationChannels/ID names, or none"
INDEXES=deploy/firestore.indexes.json
jq -e '.indexes and .fieldOverrides' "$INDEXES" >/dev/null || die_usage "$INDEXES is not an index file"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
touch "$TMP/calls" "$TMP/changes"

# gcloud counts each call, for the summary a run ends with.
gcloud() {
	echo >>"$TMP/calls"
	command gcloud "$@"
}
quote() {
	local line="" a
	for a in "$@"; do line+="${line:+ }$(printf '%q' "$a")"; done
	printf '%s\n' "$line"
}

# --- Waiting for Google Cloud ---------------------------------------------
# pending tells whether a failed command's output is Google Cloud not having
# caught up with an earlier change yet, and if so sets WAIT_FOR (what) and
# WAIT_LIMIT (how long in all, in seconds). Each text is the one the API
# answers; deploy/internal/fakegcloud, the tests' stand-in for gcloud, cites
# where each was seen.
pending() {
	local text
	text=$(<"$1")
	case $text in
	*"Cannot find metric(s)"*)
		WAIT_FOR="Cloud Monitoring to know the new log-based metrics (up to 10 minutes)" WAIT_LIMIT=900 ;;
	*"Service account "*" does not exist"*)
		WAIT_FOR="IAM to see $(grep -o 'Service account [^ ]*' <<<"$text" | head -1 | cut -d' ' -f3 | sed 's/\.$//')" WAIT_LIMIT=600 ;;
	*[Cc]ontention* | *"underlying data changed"*)
		WAIT_FOR="Firestore to finish another operation on the same collection group" WAIT_LIMIT=1200 ;;
	*SERVICE_DISABLED* | *"has not been used in project"*)
		WAIT_FOR="an API just enabled to answer" WAIT_LIMIT=600 ;;
	*"missing permission on the build service account"*)
		WAIT_FOR="the build account's new roles to take effect" WAIT_LIMIT=600 ;;
	*) return 1 ;;
	esac
}

# attempt runs a gcloud command into $OUT until it succeeds, waiting with a
# bounded backoff (5 s doubling to 60 s) while pending; `sleep` comes from
# PATH, so tests wait for nothing.
attempt() {
	local waited=0 delay=5
	OUT=$TMP/out.$BASHPID
	until "$@" >"$OUT" 2>"$OUT.err"; do
		pending "$OUT.err" || return 1
		if ((waited >= WAIT_LIMIT)); then
			echo "deploy.sh: gave up after ${waited}s waiting for $WAIT_FOR" >&2
			return 1
		fi
		echo "deploy.sh: waiting ${delay}s for $WAIT_FOR ($2 $3 $4)" >&2
		sleep "$delay"
		waited=$((waited + delay))
		delay=$((delay * 2 > 60 ? 60 : delay * 2))
	done
}

# run prints a planned command (--dry-run) or makes the change it names.
run() {
	if $DRY_RUN; then
		quote "$@"
		return
	fi
	echo >>"$TMP/changes"
	if ! attempt "$@"; then
		sed 's/^/  /' "$OUT.err" >&2
		die "failed: $(quote "$@")"
	fi
}

# --- Reading the project ---------------------------------------------------
# fetch NAME DEFAULT API COMMAND… reads in the background into $TMP/r.NAME;
# await collects what was fetched. A dry run plans for an empty project and
# reads nothing. An API that is not enabled holds nothing phasegate made:
# a run reads DEFAULT for it (and reads it again once enabled); --check
# reports it as unreadable.
ENABLED=" serviceusage.googleapis.com "
# UNREADABLE: what could not be read, and why; UNKNOWN: what was not read
# because the list it rests on could not be.
declare -A UNREADABLE=() UNKNOWN=()
fetch() {
	local name=$1 default=$2 api=$3
	shift 3
	if $DRY_RUN || [[ $api != - && $ENABLED != *" $api "* ]]; then
		printf '%s' "$default" >"$TMP/r.$name"
		$DRY_RUN || ! $CHECK || UNREADABLE[$name]="$api is not enabled"
		return 0
	fi
	(
		"$@" >"$TMP/r.$name" 2>"$TMP/r.$name.err" || rc=$?
		if ((${rc:-0} == 0)); then
			# gcloud prints nothing for an empty list in some formats.
			[[ -s $TMP/r.$name ]] || printf '%s' "$default" >"$TMP/r.$name"
		elif no_database "$TMP/r.$name.err"; then
			printf '%s' "$default" >"$TMP/r.$name"
		else
			echo "$rc" >"$TMP/r.$name.rc"
		fi
	) &
}
# no_database reports whether a Firestore read failed for want of a
# database: its indexes and fields are then none.
no_database() { grep -q 'The database (default) does not exist' "$1"; }
await() {
	wait
	local f name
	for f in "$TMP"/r.*.rc; do
		[[ -e $f ]] || continue
		name=${f#"$TMP/r."}
		name=${name%.rc}
		if $CHECK; then
			UNREADABLE[$name]=$(grep -m1 -v '^$' "$TMP/r.$name.err" || echo "exit $(<"$f")")
			rm "$f"
		else
			sed 's/^/  /' "$TMP/r.$name.err" >&2
			die "could not read the project ($name); nothing was changed"
		fi
	done
}
got() { cat "$TMP/r.$1"; }
# unreadable reports whether any of the reads named could not be made.
unreadable() {
	local n
	for n in "$@"; do [[ -z ${UNREADABLE[$n]:-}${UNKNOWN[$n]:-} ]] || return 0; done
	return 1
}

# --- Steps --------------------------------------------------------------------
# step STATUS KEY [READS] -- ACTION…: STATUS is ok, missing, differs: …,
# extra or conflict: … as read from the project. --check prints it (unknown
# when a read it rests on failed); a dry run prints ACTION's commands; a run
# performs ACTION unless STATUS is ok. In a Firestore queue ($QUEUE set) a
# run appends the action to it instead.
REPORT=()
QUEUE=
step() {
	local status=$1 key=$2 reads=
	shift 2
	if [[ $1 != -- ]]; then
		reads=$1
		shift
	fi
	shift
	if $CHECK; then
		# shellcheck disable=SC2086 # reads is a list of names
		if [[ -n $reads ]] && unreadable $reads; then status=unknown; fi
		REPORT+=("$status"$'\t'"$key")
		return
	fi
	[[ $status == ok ]] && return 0
	if [[ -n $QUEUE ]] && ! $DRY_RUN; then
		quote "$@" >>"$QUEUE"
		return
	fi
	if ! $DRY_RUN; then
		if [[ $status == *": "* ]]; then
			echo "deploy.sh: ${status%%: *} $key: ${status#*: }" >&2
		else
			echo "deploy.sh: $status $key" >&2
		fi
	fi
	"$@"
}
# status_of prints ok, missing or differs: WHAT for a resource that exists
# when EXISTS is true and whose differences are DIFF.
status_of() {
	if [[ $1 != true ]]; then
		echo missing
	elif [[ -n $2 ]]; then
		echo "differs: $2"
	else
		echo ok
	fi
}

# --- Names and what the plan wants ---------------------------------------------
P=(--project "$PROJECT")
sa_email() { echo "$1@$PROJECT.iam.gserviceaccount.com"; }
RUNTIME_SA=${PREFIX}phasegate-runtime
INVOKER_SA=${PREFIX}phasegate-invoker
BUILD_SA=${PREFIX}phasegate-build
RUNTIME=serviceAccount:$(sa_email "$RUNTIME_SA")
INVOKER=serviceAccount:$(sa_email "$INVOKER_SA")
BUILD=serviceAccount:$(sa_email "$BUILD_SA")
# The accounts phasegate owns: --check reports every grant to them the plan
# does not make, and a run removes it.
OURS=$(jq -cn --arg a "$RUNTIME" --arg b "$INVOKER" --arg c "$BUILD" '[$a, $b, $c]')
PUBSUB_AGENT=serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com
# A prefixed copy dead-letters into its own topic, read by its own
# subscription: it never delivers into the live deployment's.
DEAD_LETTER=${PREFIX}orchestrator-dead-letter
INSPECT=${PREFIX}orchestrator-dead-letter-inspect
SWEEP_TOPIC=${PREFIX}orchestrator-sweep
JOB=${PREFIX}orchestrator-sweep
SECRETS=(slack-webhook-url slack-webhook-url-error slack-webhook-url-warning)
OUTPUT_TOPICS=(nba-phase3-trigger nba-phase4-trigger nba-predictions-trigger nba-phase5-predictions-complete)
APIS=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com
	pubsub.googleapis.com firestore.googleapis.com cloudscheduler.googleapis.com secretmanager.googleapis.com
	iam.googleapis.com cloudresourcemanager.googleapis.com logging.googleapis.com monitoring.googleapis.com
	bigquery.googleapis.com)
lower() { echo "${1,,}"; }

# Every entry point: the phase that deploys it (- for always), its input and
# output topics, memory, CPU, concurrency, timeout (s) and maximum instances.
# The handlers wait on Firestore and Pub/Sub, so one CPU serves many requests
# at once; Cloud Run needs a whole CPU for a concurrency above 1.
#
#   gates (Phase2To3…): a few dozen events a night, bursts of ~15 on one
#     date; 8 at a time in one instance share its clients and its Pub/Sub
#     breaker. 120 s covers the gate's write retries, a 20 s publish and an
#     8 s alert.
#   PredictionCompletions: 10,000 workers over ~5 minutes (34/s; the
#     batch's shard count follows batch.arrival_rate). Measured with
#     `make loadtest` (README, Load test): one instance at 80 at a time
#     took ~900 completions/s unpaced, 27 times the night's rate, and 4
#     instances added little; every document's write rate is bounded by
#     the design, not by the instance count, so 5 instances are headroom
#     for a re-sent batch and a crashed instance's replacement. 256Mi:
#     85 MiB resident after a 10,000-player batch at 80 at a time.
#   Sweep: every 5 minutes, one at a time (two racing is safe, only
#     wasted); it bounds itself to the 45 s alert flush plus its gate and
#     batch visits, well inside 300 s.
#   Status, Health: operators and uptime checks, a few reads each.
FUNCTIONS=(
	"Phase2To3 phase2_to_phase3 nba-phase2-raw-complete nba-phase3-trigger 256Mi 1 8 120 10"
	"Phase3To4 phase3_to_phase4 nba-phase3-analytics-complete nba-phase4-trigger 256Mi 1 8 120 10"
	"Phase4To5 phase4_to_phase5 nba-phase4-precompute-complete nba-predictions-trigger 256Mi 1 8 120 10"
	"PredictionCompletions prediction_batch prediction-ready-prod nba-phase5-predictions-complete 256Mi 1 80 60 5"
	"Sweep - $SWEEP_TOPIC - 512Mi 1 1 300 2"
	"Status - - - 256Mi 1 20 60 3"
	"Health - - - 256Mi 1 20 60 3"
)
# deployed prints the FUNCTIONS rows this run deploys.
deployed() {
	local row ep phase
	for row in "${FUNCTIONS[@]}"; do
		read -r ep phase _ <<<"$row"
		[[ $phase == - || ,$PHASES, == *",$phase,"* ]] && echo "$row"
	done
	return 0
}
# A push waits for its function: Pub/Sub redelivers a message whose ack
# deadline passes, so the deadline is the timeout plus a margin, within
# Pub/Sub's 600 s maximum.
ack_deadline() { echo $(($1 + 30 > 600 ? 600 : $1 + 30)); }

# bq_condition is the IAM condition that limits a BigQuery role to some
# datasets: gcloud cannot bind a role on a dataset itself.
bq_condition() { # title, datasets…
	local title=$1 expr="" d
	shift
	for d in "$@"; do
		expr+="${expr:+ || }resource.name == \"projects/$PROJECT/datasets/$d\" || resource.name.startsWith(\"projects/$PROJECT/datasets/$d/\")"
	done
	jq -cn --arg e "$expr" --arg t "$title" '{expression: $e, title: $t}'
}

# GRANTS holds every grant the plan makes, one JSON object a line:
# {kind, resource, member, role, condition}. kind is project, secret,
# serviceaccount, topic, subscription or function (run.invoker on its
# Cloud Run service).
GRANTS=$TMP/grants
grant() { # kind resource member role [condition-json]
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-null}" >>"$GRANTS.tsv"
}
# Runtime: read and write Firestore documents (there is no narrower
# predefined role); read the three webhook secrets, each on its own secret;
# run BigQuery query jobs in the project (jobUser carries no data access),
# read only the checked datasets and write only the history table's (an IAM
# condition on each dataset's resource name). Publisher roles are per topic.
# Logs go to stdout, which Cloud Run collects without a role.
grant project "$PROJECT" "$RUNTIME" roles/datastore.user
grant project "$PROJECT" "$RUNTIME" roles/bigquery.jobUser
grant project "$PROJECT" "$RUNTIME" roles/bigquery.dataViewer "$(bq_condition phasegate-data-checks "${bq_read[@]}")"
# A shadow copy writes no history row and publishes nothing (CONTRACT §9).
if [[ $MODE == live ]]; then
	grant project "$PROJECT" "$RUNTIME" roles/bigquery.dataEditor "$(bq_condition phasegate-history "$BQ_HISTORY_DATASET")"
	grant topic "$DEAD_LETTER" "$RUNTIME" roles/pubsub.publisher # bad input is copied there
fi
for s in "${SECRETS[@]}"; do grant secret "$s" "$RUNTIME" roles/secretmanager.secretAccessor; done
# Build: the three roles the functions' Cloud Build needs (logs, the source
# archive, the image), narrower than roles/cloudbuild.builds.builder
# (https://cloud.google.com/functions/docs/securing/build-custom-sa).
for r in roles/logging.logWriter roles/storage.objectViewer roles/artifactregistry.writer; do
	grant project "$PROJECT" "$BUILD" "$r"
done
# Pub/Sub signs each push with an OIDC token of the invoker account: its
# service agent mints those tokens (projects older than April 2021 lack this
# grant), on that one account only. Dead-letter forwarding publishes to the
# dead-letter topic as the service agent.
grant serviceaccount "$(sa_email "$INVOKER_SA")" "$PUBSUB_AGENT" roles/iam.serviceAccountTokenCreator
grant topic "$DEAD_LETTER" "$PUBSUB_AGENT" roles/pubsub.publisher
while read -r ep phase input output _; do
	name=$PREFIX$(lower "$ep")
	if [[ $input != - ]]; then
		grant function "$name" "$INVOKER" roles/run.invoker
		# Forwarding to the dead-letter topic acks on the source subscription
		# as the service agent.
		grant subscription "${PREFIX}phasegate-$(lower "$ep")" "$PUBSUB_AGENT" roles/pubsub.subscriber
	fi
	[[ $output == - || $MODE != live ]] || grant topic "$output" "$RUNTIME" roles/pubsub.publisher
	if [[ $ep == Status || $ep == Health ]] && [[ -n $OPERATORS ]]; then
		IFS=, read -ra members <<<"$OPERATORS"
		for m in "${members[@]}"; do grant function "$name" "$m" roles/run.invoker; done
	fi
done < <(deployed)
jq -Rc 'split("\t") | {kind: .[0], resource: .[1], member: .[2], role: .[3], condition: (.[4] | fromjson)}' "$GRANTS.tsv" >"$GRANTS"


# grant_apply adds (add) or removes (remove) the grant GRANT-JSON. A project
# grant whose member keeps the role under another condition is removed by
# its exact condition; otherwise every condition of it goes (--all).
grant_apply() { # add|remove grant-json [keep-role]
	local verb=$1 g=$2 keep=${3:-false} kind resource member role cond file
	IFS=$'\t' read -r kind resource member role cond < <(jq -r '[.kind, .resource, .member, .role,
		(if .condition then "expression=\(.condition.expression),title=\(.condition.title)" else "None" end)] | join("\t")' <<<"$g")
	case $kind:$verb in
	project:add) run gcloud projects add-iam-policy-binding "$PROJECT" --member "$member" --role "$role" --condition "$cond" ;;
	project:remove)
		if [[ $keep != true ]]; then
			run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$member" --role "$role" --all
		elif [[ $cond == None ]]; then
			run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$member" --role "$role" --condition None
		else
			file=$(mktemp "$TMP/condition.XXXXXX")
			jq '.condition' <<<"$g" >"$file"
			run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$member" --role "$role" --condition-from-file "$file"
		fi
		;;
	secret:*) run gcloud secrets "$verb-iam-policy-binding" "$resource" --member "$member" --role "$role" "${P[@]}" ;;
	serviceaccount:*) run gcloud iam service-accounts "$verb-iam-policy-binding" "$resource" --member "$member" --role "$role" "${P[@]}" ;;
	topic:*) run gcloud pubsub topics "$verb-iam-policy-binding" "$resource" --member "$member" --role "$role" "${P[@]}" ;;
	subscription:*) run gcloud pubsub subscriptions "$verb-iam-policy-binding" "$resource" --member "$member" --role "$role" "${P[@]}" ;;
	function:*) run gcloud functions "$verb-invoker-policy-binding" "$resource" --region "$REGION" --member "$member" "${P[@]}" ;;
	esac
}

# plan_grants compares the grants the plan makes on one resource with its
# IAM policy as read into $TMP/r.READ, and makes each a step: missing ones
# are added; extra ones — a grant to phasegate's accounts the plan does not
# make, or any other invoker of a function — are removed.
plan_grants() { # kind resource read-name
	local kind=$1 res=$2 read=$3 status keep key g
	while IFS=$'\t' read -r status keep key g; do
		if [[ $status == extra ]]; then
			step extra "$key" "$read" -- grant_apply remove "$g" "$keep"
		else
			step "$status" "$key" "$read" -- grant_apply add "$g"
		fi
	done < <(jq -rn --arg kind "$kind" --arg res "$res" --argjson ours "$OURS" --slurpfile grants "$GRANTS" \
		--slurpfile pol "$TMP/r.$read" '
		def cond: if . then {expression, title} else null end;
		[$grants[] | select(.kind == $kind and .resource == $res)] as $want |
		def key: "grant \(.role) to \(.member) on \(.kind) \(.resource)" + (if .condition then
			" if \(.condition.title) (\([.condition.expression | scan("datasets/([A-Za-z0-9_]+)\"")[0]] | unique | join(",")))"
			else "" end);
		[($pol[0].bindings // [])[] | . as $b | $b.members[] |
			{kind: $kind, resource: $res, member: ., role: $b.role, condition: ($b.condition | cond)}] as $have |
		[$want[] | .condition |= cond] as $want |
		($want[] | . as $w | [(if any($have[]; . == $w) then "ok" else "missing" end), "false", key, tojson]),
		($have[] | . as $h | select(any($want[]; . == $h) | not) |
			select(($ours | index($h.member)) != null or ($kind == "function" and $h.role == "roles/run.invoker")) |
			["extra", (any($want[]; .member == $h.member and .role == $h.role) | tostring), key, tojson]) |
		join("\t")')
}
# policy_of prints the policy a project holding the whole plan would have
# on one resource (what a dry run of --delete assumes).
policy_of() { # kind resource
	jq -cs --arg k "$1" --arg r "$2" '{bindings: [.[] | select(.kind == $k and .resource == $r) |
		{role, members: [.member]} + (if .condition then {condition} else {} end)]}' "$GRANTS"
}

# --- Reads --------------------------------------------------------------------
# exists reports whether a list read holds a resource whose name (the last
# path segment, or the field given) is NAME.
exists() { # read-name name [jq-path-to-name]
	local names=$TMP/r.$1.names${3:-.name}
	[[ -e $names ]] || jq -r ".[] | ${3:-.name} // \"\" | split(\"/\") | last" "$TMP/r.$1" >"$names"
	grep -qxF -- "$2" "$names"
}
# listed prints the item of a list read named NAME.
listed() { # read-name name [jq-path-to-name]
	jq -c --arg n "$2" "first(.[] | select((${3:-.name} // \"\" | split(\"/\") | last) == \$n)) // null" "$TMP/r.$1"
}

MONITORED=false
[[ -n $PREFIX ]] || MONITORED=true
# lists runs FETCHER over every list the plan compares with; FETCHER is
# fetch (in the background) or refetch (again, once an API is enabled).
lists() {
	local f=$1
	$f sas '[]' iam.googleapis.com gcloud iam service-accounts list --format json "${P[@]}"
	$f project '{}' cloudresourcemanager.googleapis.com gcloud projects get-iam-policy "$PROJECT" --format json
	$f secrets '[]' secretmanager.googleapis.com gcloud secrets list --format json "${P[@]}"
	$f topics '[]' pubsub.googleapis.com gcloud pubsub topics list --format json "${P[@]}"
	$f subs '[]' pubsub.googleapis.com gcloud pubsub subscriptions list --format json "${P[@]}"
	$f functions '[]' cloudfunctions.googleapis.com gcloud functions list --regions "$REGION" --format json "${P[@]}"
	$f jobs '[]' cloudscheduler.googleapis.com gcloud scheduler jobs list --location "$REGION" --format json "${P[@]}"
	$DELETE && return
	$f run '[]' run.googleapis.com gcloud run services list --region "$REGION" --format json "${P[@]}"
	$f dbs '[]' firestore.googleapis.com gcloud firestore databases list --format json "${P[@]}"
	$f composite '[]' firestore.googleapis.com gcloud firestore indexes composite list --format json "${P[@]}"
	$f fields '[]' firestore.googleapis.com gcloud firestore indexes fields list --format json "${P[@]}"
	$f ttls '[]' firestore.googleapis.com gcloud firestore fields ttls list --format json "${P[@]}"
	if $MONITORED; then
		$f metrics '[]' logging.googleapis.com gcloud logging metrics list --format json "${P[@]}"
		$f policies '[]' monitoring.googleapis.com gcloud alpha monitoring policies list --format json "${P[@]}"
	fi
}
JUST_ENABLED=" "
refetch() {
	local name=$1 default=$2 api=$3
	shift 3
	[[ $JUST_ENABLED == *" $api "* ]] || return 0
	rm -f "$TMP/r.$name.names".*
	if attempt "$@"; then
		cp "$OUT" "$TMP/r.$name"
	elif no_database "$OUT.err"; then
		printf '%s' "$default" >"$TMP/r.$name"
	else
		sed 's/^/  /' "$OUT.err" >&2
		die "could not read the project ($name)"
	fi
}
# policies reads the IAM policy of every existing resource the plan grants
# on, or could have granted on before (an output topic of a phase no longer
# deployed, the live dead-letter topic for a prefixed copy).
policies() {
	local s t n ep input
	for s in "${SECRETS[@]}"; do
		fetch_if secret "$s" secrets gcloud secrets get-iam-policy "$s" --format json "${P[@]}"
	done
	for t in ${PREFIX:+orchestrator-dead-letter} "${OUTPUT_TOPICS[@]}"; do
		fetch_if topic "$t" topics gcloud pubsub topics get-iam-policy "$t" --format json "${P[@]}"
	done
	# What --delete removes goes with its grants.
	$DELETE && return
	fetch_if topic "$DEAD_LETTER" topics gcloud pubsub topics get-iam-policy "$DEAD_LETTER" --format json "${P[@]}"
	fetch_if serviceaccount "$(sa_email "$INVOKER_SA")" sas --path .email \
		gcloud iam service-accounts get-iam-policy "$(sa_email "$INVOKER_SA")" --format json "${P[@]}"
	while read -r ep _ input _; do
		n=$PREFIX$(lower "$ep")
		[[ $input == - ]] ||
			fetch_if subscription "${PREFIX}phasegate-$(lower "$ep")" subs \
				gcloud pubsub subscriptions get-iam-policy "${PREFIX}phasegate-$(lower "$ep")" --format json "${P[@]}"
		fetch_if function "$n" run --path .metadata.name \
			gcloud run services get-iam-policy "$n" --region "$REGION" --format json "${P[@]}"
	done < <(deployed)
}
# fetch_if reads a resource's IAM policy into pol.KIND.NAME when the list
# read LIST holds it; a resource the project lacks has an empty policy.
fetch_if() { # kind name list [--path jq-path] command…
	local kind=$1 name=$2 list=$3 path=.name
	shift 3
	if [[ $1 == --path ]]; then
		path=$2
		shift 2
	fi
	if $DRY_RUN; then
		policy_of "$kind" "$name" >"$TMP/r.pol.$kind.$name"
		$DELETE || echo '{}' >"$TMP/r.pol.$kind.$name"
	elif unreadable "$list"; then
		UNKNOWN[pol.$kind.$name]=$list
		echo '{}' >"$TMP/r.pol.$kind.$name"
	elif exists "$list" "$name" "$path"; then
		fetch "pol.$kind.$name" '{}' - "$@"
	else
		echo '{}' >"$TMP/r.pol.$kind.$name"
	fi
}

# source_hash is the hash of the functions' source: every file gcloud
# uploads, by name and content, cut to a label value (at most 63
# characters). A dry run takes git's view of the tree, which is gcloud's but
# for .gitignore itself (deploy_test.go checks they agree).
source_hash() {
	if $DRY_RUN; then
		git ls-files -co --exclude-standard 2>/dev/null | grep -vxE '\.gitignore|\.gcloudignore' ||
			find . -type f -not -path './.git/*' | sed 's|^\./||'
	else
		got files
	fi | LC_ALL=C sort | tr '\n' '\0' | xargs -0 sha256sum -- | sha256sum | cut -c1-40
}

# --- --delete: remove a prefixed copy ---------------------------------------
# A dry run plans for a project that holds the whole copy.
present() { $DRY_RUN || exists "$@"; }
if $DELETE; then
	if ! $DRY_RUN; then
		fetch services '[]' - gcloud services list --enabled --format json "${P[@]}"
		await
		ENABLED+=$(jq -r '[.[] | .config.name // (.name | split("/") | last)] | join(" ")' "$TMP/r.services")" "
	fi
	lists fetch
	await
	policies
	await
	present jobs "$JOB" && step missing "scheduler job $JOB" -- run gcloud scheduler jobs delete "$JOB" --location "$REGION" --quiet "${P[@]}"
	for row in "${FUNCTIONS[@]}"; do
		read -r ep _ input _ <<<"$row"
		[[ $input == - ]] && continue
		sub=${PREFIX}phasegate-$(lower "$ep")
		present subs "$sub" && step missing "subscription $sub" -- run gcloud pubsub subscriptions delete "$sub" --quiet "${P[@]}"
	done
	present subs "$INSPECT" && step missing "subscription $INSPECT" -- run gcloud pubsub subscriptions delete "$INSPECT" --quiet "${P[@]}"
	for row in "${FUNCTIONS[@]}"; do
		name=$PREFIX$(lower "${row%% *}")
		present functions "$name" &&
			step missing "function $name" -- run gcloud functions delete "$name" --gen2 --region "$REGION" --quiet "${P[@]}"
	done
	for t in "$SWEEP_TOPIC" "$DEAD_LETTER"; do
		present topics "$t" && step missing "topic $t" -- run gcloud pubsub topics delete "$t" --quiet "${P[@]}"
	done
	# The copy's grants on what it shares with the pipeline and the live
	# deployment: the project, topics and secrets. What it owns went with it.
	if $DRY_RUN; then policy_of project "$PROJECT" >"$TMP/r.project"; fi
	while IFS=$'\t' read -r member role; do
		step missing "grant $role to $member on project $PROJECT" -- \
			run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$member" --role "$role" --all
	done < <(jq -r --argjson ours "$OURS" '[(.bindings // [])[] | .role as $r | .members[] | select(IN($ours[])) | [., $r]] | unique[] | @tsv' "$TMP/r.project")
	for f in "$TMP"/r.pol.*; do
		[[ $f == *.err ]] && continue
		IFS=. read -r kind resource <<<"${f#"$TMP/r.pol."}"
		while IFS=$'\t' read -r member role; do
			step missing "grant $role to $member on $kind $resource" -- grant_apply remove \
				"$(jq -cn --arg k "$kind" --arg r "$resource" --arg m "$member" --arg role "$role" '{kind: $k, resource: $r, member: $m, role: $role}')"
		done < <(jq -r --argjson ours "$OURS" '(.bindings // [])[] | .role as $r | .members[] | select(IN($ours[])) | [., $r] | @tsv' "$f")
	done
	for sa in "$RUNTIME_SA" "$INVOKER_SA" "$BUILD_SA"; do
		present sas "$(sa_email "$sa")" .email &&
			step missing "service account $sa" -- run gcloud iam service-accounts delete "$(sa_email "$sa")" --quiet "${P[@]}"
	done
	$DRY_RUN || echo "deploy.sh: done; the copy $PREFIX is removed from $PROJECT/$REGION:" \
		"$(wc -l <"$TMP/changes") changes, $(wc -l <"$TMP/calls") gcloud calls, $SECONDS s" >&2
	exit 0
fi

# --- Read the project, then check what the plan would collide with ----------
if ! $DRY_RUN; then
	fetch services '[]' - gcloud services list --enabled --format json "${P[@]}"
	await
	if unreadable services; then
		$JSON && jq -n --arg e "${UNREADABLE[services]}" '{status: "unreadable", unreadable: [{read: "services", error: $e}], steps: []}'
		$JSON || echo "unreadable services: ${UNREADABLE[services]}"
		exit 3
	fi
	ENABLED+=$(jq -r '[.[] | .config.name // (.name | split("/") | last)] | join(" ")' "$TMP/r.services")" "
fi
lists fetch
fetch files "" - gcloud meta list-files-for-upload .
await
SOURCE=$(source_hash)

# The environment variables deploy.sh sets (the webhook URLs as secrets), and
# the one Cloud Functions adds itself (https://cloud.google.com/functions/docs/concepts/java-runtime#execution_id).
OWNED_ENV='["GCP_PROJECT","PHASEGATE_PHASES","PHASEGATE_MODE","PHASEGATE_DEAD_LETTER_TOPIC","ORCHESTRATOR_CONFIG","SLACK_WEBHOOK_URL","SLACK_WEBHOOK_URL_ERROR","SLACK_WEBHOOK_URL_WARNING"]'
PLATFORM_ENV='["LOG_EXECUTION_ID"]'
# function_state prints, for deployed function NAME, whether it exists, how
# it differs from WANT in the fields Cloud Functions lists (the source by its
# label), and the environment variables it has that deploy.sh does not set —
# in its settings, or set on its Cloud Run service directly (gcloud run
# services update --update-env-vars) — joined by \x1f.
function_state() { # name want-json
	jq -rn --arg name "$1" --argjson w "$2" --argjson owned "$OWNED_ENV" --argjson platform "$PLATFORM_ENV" \
		--slurpfile fs "$TMP/r.functions" --slurpfile runs "$TMP/r.run" '
		def d(what; have; want): if have == want then empty else "\(what) \(have // "unset") (want \(want))" end;
		(first($fs[0][] | select(.name | split("/") | last == $name)) // null) as $f |
		(first($runs[0][] | select(.metadata.name == $name)) // null) as $r |
		($f.serviceConfig.environmentVariables // {}) as $env |
		([($env | keys[]), ($r.spec.template.spec.containers[0].env[]?.name)] | unique |
			map(select(IN($owned[], $platform[]) | not)) | join(" ")) as $foreign |
		[($f != null | tostring),
		 ([d("state"; $f.state; "ACTIVE"),
		   d("runtime"; $f.buildConfig.runtime; $w.runtime),
		   d("entry point"; $f.buildConfig.entryPoint; $w.entryPoint),
		   d("build account"; $f.buildConfig.serviceAccount; $w.buildAccount),
		   d("memory"; $f.serviceConfig.availableMemory; $w.memory),
		   d("cpu"; $f.serviceConfig.availableCpu; $w.cpu),
		   d("concurrency"; $f.serviceConfig.maxInstanceRequestConcurrency; $w.concurrency),
		   d("timeout"; $f.serviceConfig.timeoutSeconds; $w.timeout),
		   d("max instances"; $f.serviceConfig.maxInstanceCount; $w.maxInstances),
		   d("min instances"; $f.serviceConfig.minInstanceCount // 0; 0),
		   d("service account"; $f.serviceConfig.serviceAccountEmail; $w.account),
		   ($w.env | to_entries[] | d("env \(.key)"; $env[.key]; .value)),
		   ($env | keys[] | . as $k | select(IN($owned[]) and ($w.env | has($k) | not)) | "env \($k) set (want unset)"),
		   (if $foreign == "" then empty else "env \($foreign) set outside deploy.sh" end),
		   d("secrets"; [($f.serviceConfig.secretEnvironmentVariables // [])[] | "\(.key)=\(.secret):\(.version)"] | sort | join(",");
			$w.secrets),
		   d("source"; $f.labels["phasegate-source"]; $w.source)] | join("; ")),
		 $foreign] | join("\u001f")'
}
# Firestore: what the index file sets that would collide with what a
# collection group already has (the running system shares collections).
firestore_conflicts() {
	jq -rn --slurpfile file "$INDEXES" --slurpfile fields "$TMP/r.fields" --slurpfile ttls "$TMP/r.ttls" \
		--arg project "$PROJECT" --arg path "$INDEXES" '
		def gf: .name | capture("collectionGroups/(?<g>[^/]+)/fields/(?<f>.+)$");
		def want_idx: [.indexes[] | {queryScope: (.queryScope // "COLLECTION"), mode: (.order // .arrayConfig)}] | sort;
		def have_idx: [.indexConfig.indexes[]? | {queryScope, mode: (.fields[0].order // .fields[0].arrayConfig)}] | sort;
		($ttls[0] | map(gf + {state: .ttlConfig.state})) as $t |
		($fields[0] | map(gf + {idx: have_idx})) as $x |
		($file[0].fieldOverrides | map(select(.ttl == true)) | group_by(.collectionGroup)[] |
			if length > 1 then
				"\(.[0].collectionGroup): \($path) sets \(length) TTL fields (\(map(.fieldPath) | join(", "))), and Firestore allows one per collection group. Fix: keep one in \($path)"
			else .[0] as $o | $t[] | select(.g == $o.collectionGroup and .f != $o.fieldPath) |
				"\(.g): its TTL policy is on \(.f) (\(.state)), and Firestore allows one TTL field per collection group; \($path) sets it on \($o.fieldPath). Fix: if nothing relies on \(.f) expiring documents, `gcloud firestore fields ttls update \(.f) --collection-group \(.g) --disable-ttl --project \($project)` and run again; otherwise make \(.f) the TTL field of \(.g) in \($path)"
			end),
		($file[0].fieldOverrides[] | select(has("indexes")) | . as $o | want_idx as $w |
			$x[] | select(.g == $o.collectionGroup and .f == $o.fieldPath and (.idx | length) > 0 and .idx != $w) |
			"\(.g).\(.f): has index settings of its own (\(.idx | map(.mode) | join(", "))) that \($path) would replace with \(if $w == [] then "none" else ($w | map(.mode) | join(", ")) end); queries of the running system may need them. Fix: if nothing queries \(.g) by \(.f), `gcloud firestore indexes fields update \(.f) --collection-group \(.g) --clear-exemption --project \($project)` and run again; otherwise set these indexes in \($path)")'
}

# The pre-flight: a run stops here, having changed nothing, on a missing
# secret, a Firestore collision or an environment variable deploy.sh would
# remove; --check reports them.
if ! $DRY_RUN; then
	STOP=()
	for s in "${SECRETS[@]}"; do
		exists secrets "$s" && continue
		fix="create it first: printf %s \"\$URL\" | gcloud secrets create $s --data-file=- --project $PROJECT"
		STOP+=("secret $s is missing; $fix")
		! $CHECK || step missing "secret $s ($fix)" secrets -- true
	done
	while IFS= read -r c; do
		STOP+=("firestore $c")
		! $CHECK || step "conflict: ${c#*: }" "firestore ${c%%: *}" "fields ttls" -- true
	done < <(firestore_conflicts)
	if ! $FORCE && ! $CHECK; then
		while IFS=$'\t' read -r name vars; do
			STOP+=("function $name has environment variables deploy.sh does not set and a deploy would remove: $vars (an operator's flag?). Fix: put what should stay into CONFIG, remove them (gcloud run services update $name --remove-env-vars … --region $REGION), or run with --force to drop them")
		done < <(jq -rn --argjson owned "$OWNED_ENV" --argjson platform "$PLATFORM_ENV" --arg names "$(deployed | while read -r ep _; do lower "$PREFIX$ep"; done)" \
			--slurpfile fs "$TMP/r.functions" --slurpfile runs "$TMP/r.run" '
			($names | split("\n"))[] as $name |
			[($fs[0][] | select(.name | split("/") | last == $name) | .serviceConfig.environmentVariables // {} | keys[]),
			 ($runs[0][] | select(.metadata.name == $name) | .spec.template.spec.containers[0].env[]?.name)] |
			unique | map(select(IN($owned[], $platform[]) | not)) | select(. != []) | "\($name)\t\(join(" "))"')
	fi
	if ! $CHECK && ((${#STOP[@]} > 0)); then
		for c in "${STOP[@]}"; do echo "deploy.sh: stopped before any change: $c" >&2; done
		exit 1
	fi
fi

yes_no() { if "$@"; then echo true; else echo false; fi; }
enabled() { [[ $ENABLED == *" $1 "* ]]; }

# --- APIs -------------------------------------------------------------------
missing_apis=()
for api in "${APIS[@]}"; do
	if ! $DRY_RUN && enabled "$api"; then
		! $CHECK || step ok "api $api" services -- true
	else
		missing_apis+=("$api")
		! $CHECK || step missing "api $api" services -- true
	fi
done
if ! $CHECK && ((${#missing_apis[@]} > 0)); then
	step missing "apis ${missing_apis[*]}" -- run gcloud services enable "${missing_apis[@]}" "${P[@]}"
	JUST_ENABLED+="${missing_apis[*]} "
	$DRY_RUN || lists refetch
fi
policies
await

# --- Identities and what each may do -----------------------------------------
# The Pub/Sub service agent exists once something names it; a project that
# never used Pub/Sub may not have it yet.
agent=false
if ! $DRY_RUN && grep -qF "${PUBSUB_AGENT#serviceAccount:}" "$TMP/r.project" "$TMP"/r.pol.*; then agent=true; fi
step "$(status_of $agent "")" "pubsub service agent ${PUBSUB_AGENT#serviceAccount:}" project -- \
	run gcloud beta services identity create --service pubsub.googleapis.com "${P[@]}"
for sa in "$RUNTIME_SA:phasegate functions (runtime)" "$INVOKER_SA:phasegate push subscriptions (invoker)" \
	"$BUILD_SA:phasegate function builds"; do
	step "$(status_of "$(yes_no exists sas "$(sa_email "${sa%%:*}")" .email)" "")" "service account ${sa%%:*}" sas -- \
		run gcloud iam service-accounts create "${sa%%:*}" --display-name "${sa#*:}" "${P[@]}"
done
plan_grants project "$PROJECT" project
for s in "${SECRETS[@]}"; do plan_grants secret "$s" "pol.secret.$s"; done
plan_grants serviceaccount "$(sa_email "$INVOKER_SA")" "pol.serviceaccount.$(sa_email "$INVOKER_SA")"

# --- Topics -------------------------------------------------------------------
mapfile -t topics < <({
	echo "$DEAD_LETTER"
	echo "$SWEEP_TOPIC"
	deployed | awk '{ print $3; print $4 }'
} | grep -vx -- - | awk '!seen[$0]++')
for t in "${topics[@]}"; do
	step "$(status_of "$(yes_no exists topics "$t")" "")" "topic $t" topics -- run gcloud pubsub topics create "$t" "${P[@]}"
done
for t in "$DEAD_LETTER" ${PREFIX:+orchestrator-dead-letter} "${OUTPUT_TOPICS[@]}"; do
	plan_grants topic "$t" "pol.topic.$t"
done

# --- Subscriptions ----------------------------------------------------------
# sub_diff prints how subscription NAME differs from WANT (the fields of
# the subscription as Pub/Sub lists them).
sub_diff() { # name want-json
	jq -rn --arg name "$1" --argjson w "$2" --slurpfile subs "$TMP/r.subs" '
		first($subs[0][] | select(.name | split("/") | last == $name)) // null | {topic, pushEndpoint: .pushConfig.pushEndpoint, pushAccount: .pushConfig.oidcToken.serviceAccountEmail,
			ackDeadlineSeconds, deadLetterTopic: .deadLetterPolicy.deadLetterTopic,
			maxDeliveryAttempts: .deadLetterPolicy.maxDeliveryAttempts, minimumBackoff: .retryPolicy.minimumBackoff,
			maximumBackoff: .retryPolicy.maximumBackoff, messageRetentionDuration,
			expiration: (.expirationPolicy | if . == null then "default" else .ttl // "never" end)} as $h |
		[$w | to_entries[] | select($h[.key] != .value) | "\(.key) \($h[.key] // "unset") (want \(.value))"] | join("; ")'
}
# subscription makes subscription NAME on TOPIC with FLAGS a step: created
# when missing, updated in place when it differs, and deleted and created
# again when its topic differs (Pub/Sub cannot change a subscription's
# topic; a copy's inspect subscription used to read the live topic).
subscription() { # name topic want-json flags…
	local name=$1 topic=$2 want=$3 diff how=update
	shift 3
	local present=false
	! exists subs "$name" || present=true
	diff=$(sub_diff "$name" "$want")
	[[ $diff != *"topic "* ]] || how=recreate
	$present || how=create
	step "$(status_of $present "$diff")" "subscription $name" subs -- put_subscription "$name" "$topic" "$how" "$@"
}
put_subscription() { # name topic create|update|recreate flags…
	local name=$1 topic=$2 how=$3
	shift 3
	[[ $how != recreate ]] || run gcloud pubsub subscriptions delete "$name" --quiet "${P[@]}"
	if [[ $how == update ]]; then
		run gcloud pubsub subscriptions update "$name" "$@" "${P[@]}"
	else
		run gcloud pubsub subscriptions create "$name" --topic "$topic" "$@" "${P[@]}"
	fi
}
# Dead letters are kept a week for `phasegate dead-letters` to read and
# replay; without a subscription Pub/Sub would drop them.
subscription "$INSPECT" "$DEAD_LETTER" \
	"$(jq -cn --arg t "projects/$PROJECT/topics/$DEAD_LETTER" '{topic: $t, messageRetentionDuration: "604800s", expiration: "never"}')" \
	--message-retention-duration 7d --expiration-period never

# --- Firestore: the database, every index and field override of the index file
exists_db=false
! exists dbs '(default)' || exists_db=true
step "$(status_of $exists_db "")" "firestore database (default)" dbs -- \
	run gcloud firestore databases create --database '(default)' --location "${FIRESTORE_LOCATION:-$REGION}" \
	--type firestore-native "${P[@]}"
# Every composite index and field override of the index file, one step a
# line: the read it rests on, its collection group, status, name and the
# gcloud arguments that make it (joined by \x1f). Compared by collection
# group, scope and fields; the list's own index names are server-assigned.
firestore_steps() {
	jq -rn --slurpfile file "$INDEXES" --slurpfile composite "$TMP/r.composite" --slurpfile fields "$TMP/r.fields" \
		--slurpfile ttls "$TMP/r.ttls" '
		def fields_of: [.[] | {fieldPath, order, arrayConfig} | with_entries(select(.value != null))];
		def lower: ascii_downcase;
		def mode: if .order then "order=\(.order | lower)" else "array-config=\(.arrayConfig | lower)" end;
		def norm: sort | map("\(.mode | lower)\(if .queryScope == "COLLECTION_GROUP" then " (collection group)" else "" end)") |
			join(", ") | if . == "" then "none" else . end;
		def at($g; $f): first(.[] | select(.name | endswith("/collectionGroups/\($g)/fields/\($f)"))) // null;
		($file[0].indexes[] | . as $ix | ($ix.queryScope // "COLLECTION") as $scope |
			["composite", $ix.collectionGroup,
			 (if any($composite[0][]; (.name | split("/")[5]) == $ix.collectionGroup and .queryScope == $scope and
				([.fields[] | select(.fieldPath != "__name__")] | fields_of) == ($ix.fields | fields_of)) then "ok" else "missing" end),
			 "firestore index \($ix.collectionGroup) (\([$ix.fields[] | "\(.fieldPath) \(.order // .arrayConfig | lower)"] | join(", ")))",
			 (["firestore", "indexes", "composite", "create", "--collection-group", $ix.collectionGroup,
			   "--query-scope", ($scope | lower | sub("_group"; "-group"))] +
			  [$ix.fields[] | "--field-config", "field-path=\(.fieldPath),\(mode)"] | join("\u001f"))]),
		($file[0].fieldOverrides[] | . as $o | $o.collectionGroup as $g | $o.fieldPath as $f |
			(select(has("indexes")) |
				if any($o.indexes[]; (.queryScope // "COLLECTION") != "COLLECTION") then
					["error", $g, "error", "\($g).\($f): gcloud sets only collection-scoped single-field indexes", "-"]
				else
					[$o.indexes[] | {queryScope: (.queryScope // "COLLECTION"), mode: (.order // .arrayConfig)}] as $w |
					($fields[0] | at($g; $f)) as $h |
					[$h.indexConfig.indexes[]? | {queryScope, mode: (.fields[0].order // .fields[0].arrayConfig)}] as $have |
					["fields", $g,
					 (if $h == null then "missing" elif ($have | sort) == ($w | sort) then "ok"
					  else "differs: indexes \($have | norm) (want \($w | norm))" end),
					 "firestore field \($g).\($f) indexes \($w | norm)",
					 (["firestore", "indexes", "fields", "update", $f, "--collection-group", $g] +
					  (if $w == [] then ["--disable-indexes"] else [$o.indexes[] | "--index", mode] end) + ["--quiet"] | join("\u001f"))]
				end),
			(select(has("ttl")) | (($ttls[0] | at($g; $f)).ttlConfig.state // "off") as $have |
				["ttls", $g,
				 (if $o.ttl then (if $have == "ACTIVE" or $have == "CREATING" then "ok" elif $have == "off" then "missing" else "differs: TTL \($have)" end)
				  else (if $have == "off" then "ok" else "differs: TTL \($have)" end) end),
				 "firestore field \($g).\($f) TTL \(if $o.ttl then "on" else "off" end)",
				 (["firestore", "fields", "ttls", "update", $f, "--collection-group", $g,
				   (if $o.ttl then "--enable-ttl" else "--disable-ttl" end), "--quiet"] | join("\u001f"))])) |
		join("\t")'
}
# Field operations on one collection group run one at a time, each waited
# for (Firestore answers contention to a second one); collection groups run
# side by side. A run queues each group's operations, then runs the queues.
while IFS=$'\t' read -r read group st key args; do
	[[ $read != error ]] || die "$INDEXES: $key"
	IFS=$'\x1f' read -ra argv <<<"$args"
	QUEUE=$TMP/fsq.$group step "$st" "$key" "$read" -- run gcloud "${argv[@]}" "${P[@]}"
done < <(firestore_steps)
if ! $DRY_RUN && ! $CHECK; then
	pids=()
	for q in "$TMP"/fsq.*; do
		[[ -e $q ]] || continue
		(while IFS= read -r line; do eval "$line"; done <"$q") &
		pids+=($!)
	done
	failed=0
	for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
	((failed == 0)) || die "a Firestore index or field operation failed (above)"
fi

# --- Functions and their push subscriptions -----------------------------------
# A prefixed copy copies bad input to its own dead-letter topic.
env_vars="GCP_PROJECT=$PROJECT|PHASEGATE_PHASES=$PHASES|PHASEGATE_MODE=$MODE|PHASEGATE_DEAD_LETTER_TOPIC=$DEAD_LETTER"
[[ -n $CONFIG ]] && env_vars+="|ORCHESTRATOR_CONFIG=/workspace/serverless_function_source_code/$CONFIG"
secrets="SLACK_WEBHOOK_URL=slack-webhook-url:latest,SLACK_WEBHOOK_URL_ERROR=slack-webhook-url-error:latest"
secrets+=",SLACK_WEBHOOK_URL_WARNING=slack-webhook-url-warning:latest"

deploy_function() { # entry-point memory cpu concurrency timeout max-instances
	run gcloud functions deploy "$PREFIX$(lower "$1")" --gen2 --runtime go126 --region "$REGION" --source . \
		--entry-point "$1" --trigger-http --no-allow-unauthenticated \
		--service-account "$(sa_email "$RUNTIME_SA")" \
		--build-service-account "projects/$PROJECT/serviceAccounts/$(sa_email "$BUILD_SA")" \
		--memory "$2" --cpu "$3" --concurrency "$4" --timeout "${5}s" --max-instances "$6" --min-instances 0 \
		--set-env-vars "^|^$env_vars" --set-secrets "$secrets" --update-labels "phasegate-source=$SOURCE" "${P[@]}"
}
while read -r ep _ input _ memory cpu concurrency timeout max; do
	name=$PREFIX$(lower "$ep")
	want=$(jq -cn --arg ep "$ep" --arg build "projects/$PROJECT/serviceAccounts/$(sa_email "$BUILD_SA")" \
		--arg memory "$memory" --arg cpu "$cpu" --argjson concurrency "$concurrency" --argjson timeout "$timeout" \
		--argjson max "$max" --arg account "$(sa_email "$RUNTIME_SA")" --arg env "$env_vars" --arg secrets "$secrets" \
		--arg source "$SOURCE" '{runtime: "go126", entryPoint: $ep, buildAccount: $build, memory: $memory, cpu: $cpu,
			concurrency: $concurrency, timeout: $timeout, maxInstances: $max, account: $account,
			env: ($env | split("|") | map(split("=") | {key: .[0], value: (.[1:] | join("="))}) | from_entries),
			secrets: ($secrets | split(",") | sort | join(",")), source: $source}')
	IFS=$'\x1f' read -r present diff _ < <(function_state "$name" "$want")
	st=$(status_of "$present" "$diff")
	step "$st" "function $name" "functions run files" -- deploy_function "$ep" "$memory" "$cpu" "$concurrency" "$timeout" "$max"
	# A deploy may reset the service's invokers (it did to the running
	# system): plan them from the policy as the deploy left it.
	if [[ $st != ok ]] && ! $DRY_RUN && ! $CHECK; then
		if ! attempt gcloud run services get-iam-policy "$name" --region "$REGION" --format json "${P[@]}"; then
			sed 's/^/  /' "$OUT.err" >&2
			die "could not read the invokers of $name"
		fi
		cp "$OUT" "$TMP/r.pol.function.$name"
	fi
	plan_grants function "$name" "pol.function.$name"
	[[ $input == - ]] && continue
	# Pub/Sub pushes the topic to the function as the invoker account,
	# redelivers a 5xx with backoff, and after 20 attempts forwards the
	# message to the dead-letter topic. It never expires (the off-season is
	# longer than Pub/Sub's 31-day default).
	sub=${PREFIX}phasegate-$(lower "$ep")
	url=https://$name-$PROJECT_NUMBER.$REGION.run.app
	ack=$(ack_deadline "$timeout")
	subscription "$sub" "$input" \
		"$(jq -cn --arg t "projects/$PROJECT/topics/$input" --arg url "$url" --arg sa "$(sa_email "$INVOKER_SA")" \
			--argjson ack "$ack" --arg dl "projects/$PROJECT/topics/$DEAD_LETTER" '{topic: $t, pushEndpoint: $url,
			pushAccount: $sa, ackDeadlineSeconds: $ack, deadLetterTopic: $dl, maxDeliveryAttempts: 20,
			minimumBackoff: "10s", maximumBackoff: "600s", expiration: "never"}')" \
		--push-endpoint "$url" --push-auth-service-account "$(sa_email "$INVOKER_SA")" --ack-deadline "$ack" \
		--dead-letter-topic "$DEAD_LETTER" --max-delivery-attempts 20 \
		--min-retry-delay 10s --max-retry-delay 600s --expiration-period never
	plan_grants subscription "$sub" "pol.subscription.$sub"
done < <(deployed)

# --- The sweep's schedule ---------------------------------------------------
# Every 5 minutes; Scheduler is at-least-once and the sweep is safe to race.
job_flags=(--location "$REGION" --schedule '*/5 * * * *' --time-zone America/New_York
	--topic "projects/$PROJECT/topics/$SWEEP_TOPIC" --message-body '{}' "${P[@]}")
job_diff=$(jq -rn --slurpfile j <(listed jobs "$JOB") --arg t "projects/$PROJECT/topics/$SWEEP_TOPIC" '
	def d(what; have; want): if have == want then empty else "\(what) \(have // "unset") (want \(want))" end;
	$j[0] | [d("schedule"; .schedule; "*/5 * * * *"), d("time zone"; .timeZone; "America/New_York"),
		d("topic"; .pubsubTarget.topicName; $t), d("message"; .pubsubTarget.data; "e30=")] | join("; ")')
if exists jobs "$JOB"; then
	step "$(status_of true "$job_diff")" "scheduler job $JOB" jobs -- run gcloud scheduler jobs update pubsub "$JOB" "${job_flags[@]}"
	# A paused job is an operator's decision: reported, never resumed.
	paused=$(listed jobs "$JOB" | jq -r '.state')
	[[ $paused != PAUSED ]] || step "differs: paused (gcloud scheduler jobs resume $JOB --location $REGION)" "scheduler job $JOB runs" jobs -- true
else
	step missing "scheduler job $JOB" jobs -- run gcloud scheduler jobs create pubsub "$JOB" "${job_flags[@]}"
fi

# --- Monitoring: log-based metrics and alert policies -------------------------
# Only the unprefixed deployment has them: their filters name its functions
# (resource.labels.service_name), so a prefixed copy neither counts in them
# nor pages through them, and a prefixed run never touches them.
if $MONITORED; then
	for f in deploy/monitoring/metrics/*.json; do
		m=$(basename "$f" .json)
		diff=$(jq -rn --arg m "$m" --slurpfile want "$f" --slurpfile have "$TMP/r.metrics" '
			def view: {description, filter, labelExtractors: (.labelExtractors // {}),
				labels: [.metricDescriptor.labels[]? | {key, description}] | sort_by(.key)};
			(first($have[0][] | select(.name == $m)) // {} | view) as $h | ($want[0] | view) as $w |
			[$w | keys[] | select($h[.] != $w[.])] | if . == [] then "" else join(", ") end')
		if exists metrics "$m"; then
			step "$(status_of true "$diff")" "log-based metric $m" metrics -- run gcloud logging metrics update "$m" --config-from-file "$f" "${P[@]}"
		else
			step missing "log-based metric $m" metrics -- run gcloud logging metrics create "$m" --config-from-file "$f" "${P[@]}"
		fi
	done
	# A policy is found by its display name (`policies create` would add a
	# duplicate on every run) and compared by the hash of its file, kept in
	# its label phasegate-config. `update --policy-from-file` replaces the
	# whole policy, channels included: the channels to keep are given again.
	for f in deploy/monitoring/policies/*.json; do
		title=$(jq -r .displayName "$f")
		hash=$(sha256sum "$f" | cut -c1-40)
		read -r count name have_hash have_channels < <(jq -r --arg t "$title" '[.[] | select(.displayName == $t)] |
			[length, (.[0].name // "-"), (.[0].userLabels["phasegate-config"] // "-"),
			 ((.[0].notificationChannels // []) | sort | join(",") | if . == "" then "-" else . end)] | @tsv' "$TMP/r.policies")
		[[ $have_channels != - ]] || have_channels=
		case $NOTIFICATION_CHANNELS in
		none) channels= ;;
		"") channels=$have_channels ;;
		*) channels=$(tr , '\n' <<<"$NOTIFICATION_CHANNELS" | LC_ALL=C sort | paste -sd,) ;;
		esac
		diffs=()
		[[ $have_hash == "$hash" ]] || diffs+=("content (file $f changed, or the policy was edited)")
		[[ $have_channels == "$channels" ]] || diffs+=("channels ${have_channels:-none} (want ${channels:-none})")
		((count <= 1)) || diffs+=("$count policies are named '$title' (only the first is kept up to date)")
		key="alert policy $title"
		if ((count == 0)); then
			step missing "$key" policies -- run gcloud alpha monitoring policies create --policy-from-file "$f" \
				--user-labels "phasegate-config=$hash" ${channels:+--notification-channels "$channels"} "${P[@]}"
		elif [[ $have_hash != "$hash" ]]; then
			step "differs: $(IFS=';'; echo "${diffs[*]}")" "$key" policies -- run gcloud alpha monitoring policies update "$name" \
				--policy-from-file "$f" --update-user-labels "phasegate-config=$hash" \
				${channels:+--set-notification-channels "$channels"} "${P[@]}"
		elif [[ $have_channels != "$channels" ]]; then
			step "differs: ${diffs[*]}" "$key" policies -- run gcloud alpha monitoring policies update "$name" \
				$([[ -n $channels ]] && echo --set-notification-channels "$channels" || echo --clear-notification-channels) "${P[@]}"
		else
			step "$(status_of true "${diffs[*]}")" "$key" policies -- true
		fi
	done
fi

# --- What a run did, or what --check found ------------------------------------
if $CHECK; then
	code=0
	for r in "${REPORT[@]}"; do [[ $r == ok$'\t'* ]] || code=1; done
	((${#UNREADABLE[@]} == 0)) || code=3
	if $JSON; then
		{
			printf '%s\n' "${REPORT[@]}"
		} | jq -Rn --argjson code "$code" --arg project "$PROJECT" --arg prefix "$PREFIX" \
			--argjson unreadable "$(for k in "${!UNREADABLE[@]}"; do jq -cn --arg r "$k" --arg e "${UNREADABLE[$k]}" '{read: $r, error: $e}'; done | jq -cs .)" '
			{project: $project, prefix: $prefix,
			 status: (if $code == 0 then "in place" elif $code == 1 then "drift" else "unreadable" end),
			 unreadable: $unreadable,
			 steps: [inputs | split("\t") | {status: (.[0] | split(": ")[0]), step: .[1]} +
				(if (.[0] | contains(": ")) then {detail: (.[0] | split(": ")[1:] | join(": "))} else {} end)]}'
	else
		for k in "${!UNREADABLE[@]}"; do printf 'unreadable %s: %s\n' "$k" "${UNREADABLE[$k]}"; done
		for r in "${REPORT[@]}"; do
			IFS=$'\t' read -r status key <<<"$r"
			if [[ $status == *": "* ]]; then
				printf '%-9s %s: %s\n' "${status%%: *}" "$key" "${status#*: }"
			else
				printf '%-9s %s\n' "$status" "$key"
			fi
		done
	fi
	exit "$code"
fi
$DRY_RUN || echo "deploy.sh: done; phasegate ${PREFIX:+($PREFIX) }is deployed in $PROJECT/$REGION:" \
	"$(wc -l <"$TMP/changes") changes, $(wc -l <"$TMP/calls") gcloud calls, $SECONDS s" >&2
