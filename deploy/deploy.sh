#!/usr/bin/env bash
# Deploy phasegate to one Google Cloud project with the Google Cloud CLI,
# from the repository root as the functions' source.
#
#   PROJECT=my-proj REGION=us-west2 PROJECT_NUMBER=123456789012 deploy/deploy.sh
#   PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh --dry-run   # print the plan, run nothing
#   MODE=shadow PREFIX=shd- PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh           # a shadow copy
#   PREFIX=shd- PROJECT=… REGION=… PROJECT_NUMBER=… deploy/deploy.sh --delete              # remove it
#
# Inputs (environment):
#   PROJECT, REGION, PROJECT_NUMBER  required (the Pub/Sub service agent and the
#                     functions' run.app URLs are named by the number)
#   PREFIX            prepended to every name phasegate alone owns (functions,
#                     its subscriptions, the Scheduler job, service accounts,
#                     the sweep topic); lowercase, at most 10 characters
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
#   NOTIFICATION_CHANNELS optional Cloud Monitoring notification channels
#                     (comma-separated projects/…/notificationChannels/…)
#                     the alert policies of deploy/monitoring notify
#
# The Slack webhook URLs come from the Secret Manager secrets
# slack-webhook-url, slack-webhook-url-error and slack-webhook-url-warning,
# which the operator creates once (never plain environment variables):
#   printf %s "$URL" | gcloud secrets create slack-webhook-url --data-file=- --project "$PROJECT"
#
# A real run converges: it creates what is missing and updates what differs;
# running it again changes nothing. --dry-run prints, one per line and
# shell-quoted, every command of the create path (an empty project) and runs
# nothing: no probes, no credentials. Needs: gcloud, jq.
#
# MODE=shadow deploys a copy that runs beside the running system
# (PHASEGATE_MODE=shadow: it writes only shadow_ collections and sends
# nothing); give it a PREFIX so that its functions, subscriptions, Scheduler
# job, sweep topic and service accounts are its own. --delete removes
# everything a run with the same PREFIX created (it refuses an empty PREFIX,
# so it never removes the unprefixed deployment); topics shared with the
# pipeline, the secrets and the Firestore indexes stay, and shadow documents
# expire by their TTL. With --dry-run it prints the removal plan for a
# project that holds the whole copy.
#
# Exit status: 0 done, 1 a command failed, 2 usage.
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

DRY_RUN=false
DELETE=false
for arg in "$@"; do
	case $arg in
	--dry-run) DRY_RUN=true ;;
	--delete) DELETE=true ;;
	-h | --help) usage ;;
	*) die_usage "unknown argument '$arg' (see --help)" ;;
	esac
done

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
[[ -z $NOTIFICATION_CHANNELS || $NOTIFICATION_CHANNELS =~ ^projects/[^,/]+/notificationChannels/[^,/]+(,projects/[^,/]+/notificationChannels/[^,/]+)*$ ]] ||
	die_usage "NOTIFICATION_CHANNELS must be comma-separated projects/PROJECT/notificationChannels/ID names"

# Any failed command ends the run with status 1 (gcloud's own codes vary).
trap 'echo "deploy.sh: failed: $BASH_COMMAND" >&2; exit 1' ERR

# run prints a planned command (--dry-run) or runs it.
run() {
	if $DRY_RUN; then
		local line="" a
		for a in "$@"; do line+="${line:+ }$(printf '%q' "$a")"; done
		printf '%s\n' "$line"
	else
		"$@"
	fi
}
# exists probes the project; a dry run plans for an empty project, so
# nothing exists and nothing is printed.
exists() {
	$DRY_RUN && return 1
	"$@" >/dev/null 2>&1
}

P=(--project "$PROJECT")
RUNTIME_SA=${PREFIX}phasegate-runtime
INVOKER_SA=${PREFIX}phasegate-invoker
BUILD_SA=${PREFIX}phasegate-build
sa_email() { echo "$1@$PROJECT.iam.gserviceaccount.com"; }
PUBSUB_AGENT=serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com
DEAD_LETTER=orchestrator-dead-letter
SWEEP_TOPIC=${PREFIX}orchestrator-sweep
SECRETS=(slack-webhook-url slack-webhook-url-error slack-webhook-url-warning)

# bq_condition is the IAM condition that limits a BigQuery role to some
# datasets: gcloud cannot bind a role on a dataset itself.
bq_condition() { # title, datasets…
	local title=$1 expr="" d
	shift
	for d in "$@"; do
		expr+="${expr:+ || }resource.name == \"projects/$PROJECT/datasets/$d\" || resource.name.startsWith(\"projects/$PROJECT/datasets/$d/\")"
	done
	echo "expression=$expr,title=$title"
}

# Every entry point, and those a push subscription delivers to.
ENTRY_POINTS=(Phase2To3 Phase3To4 Phase4To5 PredictionCompletions Sweep Status Health)
PUSHED=(Phase2To3 Phase3To4 Phase4To5 PredictionCompletions Sweep)
lower() { tr '[:upper:]' '[:lower:]' <<<"$1"; }

# --- --delete: remove a prefixed copy ---------------------------------------
if $DELETE; then
	# present probes the project; a dry run plans for a project that holds
	# the whole copy.
	present() {
		$DRY_RUN && return 0
		"$@" >/dev/null 2>&1
	}
	# bound reports whether member holds role in the IAM policy that the
	# get-iam-policy command given prints.
	bound() { # member role get-iam-policy-command…
		local member=$1 role=$2
		shift 2
		$DRY_RUN && return 0
		"$@" --format json 2>/dev/null | jq -e --arg m "$member" --arg r "$role" \
			'[.bindings[]? | select(.role == $r) | .members[] | select(. == $m)] | length > 0' >/dev/null
	}
	RUNTIME=serviceAccount:$(sa_email "$RUNTIME_SA")
	BUILD=serviceAccount:$(sa_email "$BUILD_SA")
	present gcloud scheduler jobs describe "${PREFIX}orchestrator-sweep" --location "$REGION" "${P[@]}" &&
		run gcloud scheduler jobs delete "${PREFIX}orchestrator-sweep" --location "$REGION" --quiet "${P[@]}"
	for ep in "${PUSHED[@]}"; do
		sub=${PREFIX}phasegate-$(lower "$ep")
		present gcloud pubsub subscriptions describe "$sub" "${P[@]}" &&
			run gcloud pubsub subscriptions delete "$sub" --quiet "${P[@]}"
	done
	present gcloud pubsub subscriptions describe "${PREFIX}orchestrator-dead-letter-inspect" "${P[@]}" &&
		run gcloud pubsub subscriptions delete "${PREFIX}orchestrator-dead-letter-inspect" --quiet "${P[@]}"
	for ep in "${ENTRY_POINTS[@]}"; do
		name=$PREFIX$(lower "$ep")
		present gcloud functions describe "$name" --gen2 --region "$REGION" "${P[@]}" &&
			run gcloud functions delete "$name" --gen2 --region "$REGION" --quiet "${P[@]}"
	done
	present gcloud pubsub topics describe "$SWEEP_TOPIC" "${P[@]}" &&
		run gcloud pubsub topics delete "$SWEEP_TOPIC" --quiet "${P[@]}"
	# Grants on what the copy shares with the pipeline and the live
	# deployment: the topics it published to, the secrets, the project.
	for t in "$DEAD_LETTER" nba-phase3-trigger nba-phase4-trigger nba-predictions-trigger nba-phase5-predictions-complete; do
		bound "$RUNTIME" roles/pubsub.publisher gcloud pubsub topics get-iam-policy "$t" "${P[@]}" &&
			run gcloud pubsub topics remove-iam-policy-binding "$t" --member "$RUNTIME" --role roles/pubsub.publisher "${P[@]}"
	done
	for s in "${SECRETS[@]}"; do
		bound "$RUNTIME" roles/secretmanager.secretAccessor gcloud secrets get-iam-policy "$s" "${P[@]}" &&
			run gcloud secrets remove-iam-policy-binding "$s" --member "$RUNTIME" --role roles/secretmanager.secretAccessor "${P[@]}"
	done
	bound "$RUNTIME" roles/datastore.user gcloud projects get-iam-policy "$PROJECT" &&
		run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$RUNTIME" --role roles/datastore.user --condition None
	bound "$RUNTIME" roles/bigquery.jobUser gcloud projects get-iam-policy "$PROJECT" &&
		run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$RUNTIME" --role roles/bigquery.jobUser --condition None
	bound "$RUNTIME" roles/bigquery.dataViewer gcloud projects get-iam-policy "$PROJECT" &&
		run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$RUNTIME" --role roles/bigquery.dataViewer \
			--condition "$(bq_condition phasegate-data-checks "${bq_read[@]}")"
	bound "$RUNTIME" roles/bigquery.dataEditor gcloud projects get-iam-policy "$PROJECT" &&
		run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$RUNTIME" --role roles/bigquery.dataEditor \
			--condition "$(bq_condition phasegate-history "$BQ_HISTORY_DATASET")"
	bound "$BUILD" roles/cloudbuild.builds.builder gcloud projects get-iam-policy "$PROJECT" &&
		run gcloud projects remove-iam-policy-binding "$PROJECT" --member "$BUILD" --role roles/cloudbuild.builds.builder --condition None
	for sa in "$RUNTIME_SA" "$INVOKER_SA" "$BUILD_SA"; do
		present gcloud iam service-accounts describe "$(sa_email "$sa")" "${P[@]}" &&
			run gcloud iam service-accounts delete "$(sa_email "$sa")" --quiet "${P[@]}"
	done
	$DRY_RUN || echo "deploy.sh: done; the copy ${PREFIX} is removed from $PROJECT/$REGION" >&2
	exit 0
fi

# --- APIs -------------------------------------------------------------------
run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com \
	cloudbuild.googleapis.com artifactregistry.googleapis.com pubsub.googleapis.com \
	firestore.googleapis.com cloudscheduler.googleapis.com secretmanager.googleapis.com \
	iam.googleapis.com logging.googleapis.com monitoring.googleapis.com bigquery.googleapis.com "${P[@]}"

if ! $DRY_RUN; then
	for s in "${SECRETS[@]}"; do
		exists gcloud secrets describe "$s" "${P[@]}" || {
			echo "deploy.sh: secret $s is missing; create it first: printf %s \"\$URL\" | gcloud secrets create $s --data-file=- --project $PROJECT" >&2
			exit 1
		}
	done
fi

# --- Identities and what each may do -----------------------------------------
ensure_sa() { # id, display name
	exists gcloud iam service-accounts describe "$(sa_email "$1")" "${P[@]}" ||
		run gcloud iam service-accounts create "$1" --display-name "$2" "${P[@]}"
}
ensure_sa "$RUNTIME_SA" "phasegate functions (runtime)"
ensure_sa "$INVOKER_SA" "phasegate push subscriptions (invoker)"
ensure_sa "$BUILD_SA" "phasegate function builds"
RUNTIME=serviceAccount:$(sa_email "$RUNTIME_SA")
INVOKER=serviceAccount:$(sa_email "$INVOKER_SA")

# Runtime: read and write Firestore documents (there is no narrower
# predefined role); read the three webhook secrets, each on its own secret.
# Publisher roles are granted per topic below. Logs go to stdout, which
# Cloud Run collects without a role.
run gcloud projects add-iam-policy-binding "$PROJECT" --member "$RUNTIME" \
	--role roles/datastore.user --condition None
for s in "${SECRETS[@]}"; do
	run gcloud secrets add-iam-policy-binding "$s" --member "$RUNTIME" \
		--role roles/secretmanager.secretAccessor "${P[@]}"
done
# BigQuery: run query jobs in the project (jobUser carries no data access);
# read only the checked datasets, and write only the history table's — each
# an IAM condition on the dataset's resource name, as gcloud cannot bind a
# role on a dataset itself.
run gcloud projects add-iam-policy-binding "$PROJECT" --member "$RUNTIME" \
	--role roles/bigquery.jobUser --condition None
run gcloud projects add-iam-policy-binding "$PROJECT" --member "$RUNTIME" \
	--role roles/bigquery.dataViewer --condition "$(bq_condition phasegate-data-checks "${bq_read[@]}")"
# A shadow copy writes no history row (CONTRACT §9): no write access.
if [[ $MODE == live ]]; then
	run gcloud projects add-iam-policy-binding "$PROJECT" --member "$RUNTIME" \
		--role roles/bigquery.dataEditor --condition "$(bq_condition phasegate-history "$BQ_HISTORY_DATASET")"
fi
# Build: what Cloud Build needs to build and store the function images, in
# place of the project's default compute account (often without roles).
run gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$(sa_email "$BUILD_SA")" \
	--role roles/cloudbuild.builds.builder --condition None
# Pub/Sub signs each push with an OIDC token of the invoker account; its
# service agent needs to mint those tokens (projects older than April 2021
# lack this grant), on that one account only.
run gcloud iam service-accounts add-iam-policy-binding "$(sa_email "$INVOKER_SA")" \
	--member "$PUBSUB_AGENT" --role roles/iam.serviceAccountTokenCreator "${P[@]}"

# --- Topics -----------------------------------------------------------------
ensure_topic() {
	exists gcloud pubsub topics describe "$1" "${P[@]}" || run gcloud pubsub topics create "$1" "${P[@]}"
}
publish_to() { # topic the runtime account publishes to
	# A shadow copy publishes nothing (CONTRACT §9): it gets no grant to.
	[[ $MODE == live ]] || return 0
	run gcloud pubsub topics add-iam-policy-binding "$1" --member "$RUNTIME" --role roles/pubsub.publisher "${P[@]}"
}
ensure_topic "$DEAD_LETTER"
ensure_topic "$SWEEP_TOPIC"
publish_to "$DEAD_LETTER" # bad input is copied there
# Pub/Sub's dead-letter forwarding publishes as the service agent.
run gcloud pubsub topics add-iam-policy-binding "$DEAD_LETTER" --member "$PUBSUB_AGENT" \
	--role roles/pubsub.publisher "${P[@]}"

# --- Subscriptions ----------------------------------------------------------
# ensure_subscription name topic flags…: create, or update in place (a
# subscription's topic cannot change).
ensure_subscription() {
	local name=$1 topic=$2
	shift 2
	if exists gcloud pubsub subscriptions describe "$name" "${P[@]}"; then
		run gcloud pubsub subscriptions update "$name" "$@" "${P[@]}"
	else
		run gcloud pubsub subscriptions create "$name" --topic "$topic" "$@" "${P[@]}"
	fi
}
# Dead letters are kept a week for `phasegate dead-letters` to read and
# replay; without a subscription Pub/Sub would drop them.
ensure_subscription "${PREFIX}orchestrator-dead-letter-inspect" "$DEAD_LETTER" \
	--message-retention-duration 7d --expiration-period never

# --- Firestore: the database, every index and field override of the index file
exists gcloud firestore databases describe --database '(default)' "${P[@]}" ||
	run gcloud firestore databases create --database '(default)' --location "${FIRESTORE_LOCATION:-$REGION}" \
		--type firestore-native "${P[@]}"
INDEXES=deploy/firestore.indexes.json
existing_indexes='[]'
$DRY_RUN || existing_indexes=$(gcloud firestore indexes composite list --format json "${P[@]}")
while IFS= read -r index; do
	group=$(jq -r .collectionGroup <<<"$index")
	scope=$(jq -r '.queryScope // "COLLECTION" | ascii_downcase | sub("_group"; "-group")' <<<"$index")
	mapfile -t fields < <(jq -r '.fields[] | "field-path=\(.fieldPath),\(if .order then "order=\(.order|ascii_downcase)" else "array-config=\(.arrayConfig|ascii_downcase)" end)"' <<<"$index")
	# Compare by collection group, scope and field list; the list's own
	# index names are server-assigned.
	present=$(jq --argjson want "$index" '[.[] | select(
		(.name | split("/")[5]) == $want.collectionGroup and
		.queryScope == ($want.queryScope // "COLLECTION") and
		([.fields[] | select(.fieldPath != "__name__") | {fieldPath, order, arrayConfig} | with_entries(select(.value != null))]
			== [$want.fields[] | {fieldPath, order, arrayConfig} | with_entries(select(.value != null))]))] | length' <<<"$existing_indexes")
	if [[ $present == 0 ]]; then
		args=()
		for f in "${fields[@]}"; do args+=(--field-config "$f"); done
		run gcloud firestore indexes composite create --collection-group "$group" \
			--query-scope "$scope" "${args[@]}" --async "${P[@]}"
	fi
done < <(jq -c '.indexes[]' "$INDEXES")
while IFS= read -r override; do
	group=$(jq -r .collectionGroup <<<"$override")
	field=$(jq -r .fieldPath <<<"$override")
	if [[ $(jq '.indexes | length' <<<"$override") == 0 ]]; then
		run gcloud firestore indexes fields update "$field" --collection-group "$group" \
			--disable-indexes --async --quiet "${P[@]}"
	fi
	if [[ $(jq '.ttl // false' <<<"$override") == true ]]; then
		run gcloud firestore fields ttls update "$field" --collection-group "$group" \
			--enable-ttl --async --quiet "${P[@]}"
	fi
done < <(jq -c '.fieldOverrides[]' "$INDEXES")

# --- Functions --------------------------------------------------------------
env_vars="GCP_PROJECT=$PROJECT|PHASEGATE_PHASES=$PHASES|PHASEGATE_MODE=$MODE"
[[ -n $CONFIG ]] && env_vars+="|ORCHESTRATOR_CONFIG=/workspace/serverless_function_source_code/$CONFIG"
secrets="SLACK_WEBHOOK_URL=slack-webhook-url:latest,SLACK_WEBHOOK_URL_ERROR=slack-webhook-url-error:latest"
secrets+=",SLACK_WEBHOOK_URL_WARNING=slack-webhook-url-warning:latest"

# deploy_function entry-point memory cpu concurrency timeout max-instances.
# gcloud functions deploy creates or updates; --set-env-vars and
# --set-secrets replace what was there, so a re-run converges.
deploy_function() {
	local ep=$1 name
	name=$PREFIX$(lower "$ep")
	run gcloud functions deploy "$name" --gen2 --runtime go126 --region "$REGION" --source . \
		--entry-point "$ep" --trigger-http --no-allow-unauthenticated \
		--service-account "$(sa_email "$RUNTIME_SA")" \
		--build-service-account "projects/$PROJECT/serviceAccounts/$(sa_email "$BUILD_SA")" \
		--memory "$2" --cpu "$3" --concurrency "$4" --timeout "$5" --max-instances "$6" --min-instances 0 \
		--set-env-vars "^|^$env_vars" --set-secrets "$secrets" "${P[@]}"
}
# push_to entry-point topic ack-deadline: Pub/Sub pushes the topic to the
# function as the invoker account, redelivers a 5xx with backoff, and after
# 20 attempts forwards the message to the dead-letter topic. It never
# expires (the off-season is longer than Pub/Sub's 31-day default).
push_to() {
	local ep=$1 topic=$2 name url
	name=$PREFIX$(lower "$ep")
	url=https://$name-$PROJECT_NUMBER.$REGION.run.app
	run gcloud functions add-invoker-policy-binding "$name" --region "$REGION" --member "$INVOKER" "${P[@]}"
	ensure_subscription "${PREFIX}phasegate-${name#"$PREFIX"}" "$topic" --push-endpoint "$url" \
		--push-auth-service-account "$(sa_email "$INVOKER_SA")" --ack-deadline "$3" \
		--dead-letter-topic "$DEAD_LETTER" --max-delivery-attempts 20 \
		--min-retry-delay 10s --max-retry-delay 600s --expiration-period never
	# Dead-letter forwarding acks the message on this subscription as the
	# service agent.
	run gcloud pubsub subscriptions add-iam-policy-binding "${PREFIX}phasegate-${name#"$PREFIX"}" --member "$PUBSUB_AGENT" \
		--role roles/pubsub.subscriber "${P[@]}"
}

# Per-function resources. Every handler spends its time waiting on
# Firestore and Pub/Sub, so one CPU serves many requests at once; Cloud Run
# needs a whole CPU for a concurrency above 1. The push ack deadline equals
# the function timeout, so Pub/Sub never redelivers a request still running.
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
gate_function() { # phase name, entry point, input topic, output topic
	[[ ,$PHASES, == *",$1,"* ]] || return 0
	ensure_topic "$3"
	ensure_topic "$4"
	publish_to "$4"
	deploy_function "$2" 256Mi 1 8 120s 10
	push_to "$2" "$3" 120
}
gate_function phase2_to_phase3 Phase2To3 nba-phase2-raw-complete nba-phase3-trigger
gate_function phase3_to_phase4 Phase3To4 nba-phase3-analytics-complete nba-phase4-trigger
gate_function phase4_to_phase5 Phase4To5 nba-phase4-precompute-complete nba-predictions-trigger
if [[ ,$PHASES, == *,prediction_batch,* ]]; then
	ensure_topic prediction-ready-prod
	ensure_topic nba-phase5-predictions-complete
	publish_to nba-phase5-predictions-complete
	deploy_function PredictionCompletions 256Mi 1 80 60s 5
	push_to PredictionCompletions prediction-ready-prod 60
fi
deploy_function Sweep 512Mi 1 1 300s 2
push_to Sweep "$SWEEP_TOPIC" 300
for ep in Status Health; do
	deploy_function "$ep" 256Mi 1 20 60s 3
	if [[ -n $OPERATORS ]]; then
		IFS=, read -ra members <<<"$OPERATORS"
		for m in "${members[@]}"; do
			run gcloud functions add-invoker-policy-binding "$PREFIX$(lower "$ep")" \
				--region "$REGION" --member "$m" "${P[@]}"
		done
	fi
done

# --- The sweep's schedule ---------------------------------------------------
# Every 5 minutes; Scheduler is at-least-once and the sweep is safe to race.
job=(--location "$REGION" --schedule '*/5 * * * *' --time-zone America/New_York
	--topic "projects/$PROJECT/topics/$SWEEP_TOPIC" --message-body '{}' "${P[@]}")
if exists gcloud scheduler jobs describe "${PREFIX}orchestrator-sweep" --location "$REGION" "${P[@]}"; then
	run gcloud scheduler jobs update pubsub "${PREFIX}orchestrator-sweep" "${job[@]}"
else
	run gcloud scheduler jobs create pubsub "${PREFIX}orchestrator-sweep" "${job[@]}"
fi

# --- Monitoring: log-based metrics and alert policies -------------------------
# One set per project, whatever the PREFIX: the metrics count every phasegate
# function's lines. A metric is created or updated from its file. A policy
# is found by its display name (`policies create` would add a duplicate on
# every run) and then replaced from its file, or created.
for f in deploy/monitoring/metrics/*.yaml; do
	m=$(basename "$f" .yaml)
	if exists gcloud logging metrics describe "$m" "${P[@]}"; then
		run gcloud logging metrics update "$m" --config-from-file "$f" "${P[@]}"
	else
		run gcloud logging metrics create "$m" --config-from-file "$f" "${P[@]}"
	fi
done
for f in deploy/monitoring/policies/*.json; do
	title=$(jq -r .displayName "$f")
	found=()
	$DRY_RUN || mapfile -t found < <(gcloud alpha monitoring policies list --filter "displayName=\"$title\"" \
		--format 'value(name)' "${P[@]}")
	if ((${#found[@]} > 0)); then
		((${#found[@]} == 1)) || echo "deploy.sh: ${#found[@]} policies are named '$title'; updating ${found[0]}" >&2
		run gcloud alpha monitoring policies update "${found[0]}" --policy-from-file "$f" \
			${NOTIFICATION_CHANNELS:+--set-notification-channels "$NOTIFICATION_CHANNELS"} "${P[@]}"
	else
		run gcloud alpha monitoring policies create --policy-from-file "$f" \
			${NOTIFICATION_CHANNELS:+--notification-channels "$NOTIFICATION_CHANNELS"} "${P[@]}"
	fi
done

$DRY_RUN || echo "deploy.sh: done; phasegate ${PREFIX:+($PREFIX) }is deployed in $PROJECT/$REGION" >&2
