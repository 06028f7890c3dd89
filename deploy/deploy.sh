#!/usr/bin/env bash
# Deploy phasegate's Cloud Functions (2nd gen), their topics, the sweep's
# schedule, the Firestore indexes and the dedup TTL policy.
#
#   PROJECT=my-project REGION=us-west2 ./deploy/deploy.sh
#
# Optional: ENV_FILE=deploy/env.yaml (passed as --env-vars-file), and
# SERVICE_ACCOUNT for the functions' identity. Idempotent: re-running updates.
set -euo pipefail
: "${PROJECT:?set PROJECT}"
REGION=${REGION:-us-west2}
ENV_FILE=${ENV_FILE:-}
cd "$(dirname "$0")/.."

topics=(nba-phase2-raw-complete nba-phase3-analytics-complete nba-phase4-precompute-complete
  prediction-ready-prod orchestrator-sweep nba-phase3-trigger nba-phase4-trigger
  nba-predictions-trigger nba-phase5-predictions-complete orchestrator-dead-letter)
for t in "${topics[@]}"; do
  gcloud pubsub topics describe "$t" --project "$PROJECT" >/dev/null 2>&1 ||
    gcloud pubsub topics create "$t" --project "$PROJECT"
done

common=(--gen2 --runtime go126 --region "$REGION" --project "$PROJECT" --source .
  --memory 512Mi --timeout 120s)
[ -n "$ENV_FILE" ] && common+=(--env-vars-file "$ENV_FILE")
[ -n "${SERVICE_ACCOUNT:-}" ] && common+=(--service-account "$SERVICE_ACCOUNT")

# Each Pub/Sub-triggered function retries 5xx (--retry); its Eventarc
# subscription gets a dead-letter policy so that a message no redelivery can
# finish (a batch that never appears) ends on orchestrator-dead-letter. The
# Pub/Sub service agent needs roles/pubsub.publisher on that topic and
# roles/pubsub.subscriber on the subscription.
deploy_topic() { # entry point, trigger topic, max instances
  local name
  name=$(echo "$1" | tr '[:upper:]' '[:lower:]')
  gcloud functions deploy "$name" --entry-point "$1" \
    --trigger-topic "$2" --max-instances "$3" --retry "${common[@]}"
  local trigger sub
  trigger=$(gcloud functions describe "$name" --gen2 --region "$REGION" --project "$PROJECT" --format='value(eventTrigger.trigger)')
  sub=$(gcloud eventarc triggers describe "${trigger##*/}" --location "$REGION" --project "$PROJECT" \
    --format='value(transport.pubsub.subscription)')
  gcloud pubsub subscriptions update "$sub" --project "$PROJECT" \
    --dead-letter-topic orchestrator-dead-letter --max-delivery-attempts 20 \
    --min-retry-delay 10s --max-retry-delay 600s
}
deploy_topic Phase2To3 nba-phase2-raw-complete 20
deploy_topic Phase3To4 nba-phase3-analytics-complete 20
deploy_topic Phase4To5 nba-phase4-precompute-complete 20
deploy_topic PredictionCompletions prediction-ready-prod 100
deploy_topic Sweep orchestrator-sweep 2

for ep in Status Health; do
  gcloud functions deploy "$(echo "$ep" | tr '[:upper:]' '[:lower:]')" --entry-point "$ep" --trigger-http \
    --no-allow-unauthenticated "${common[@]}"
done

# The sweep: every 5 minutes. Scheduler is at-least-once; the sweep is safe to race.
gcloud scheduler jobs describe orchestrator-sweep --location "$REGION" --project "$PROJECT" >/dev/null 2>&1 ||
  gcloud scheduler jobs create pubsub orchestrator-sweep --location "$REGION" --project "$PROJECT" \
    --schedule "*/5 * * * *" --time-zone "America/New_York" --topic orchestrator-sweep --message-body '{}'

# Indexes for the sweep's query and the TTL policy that expires dedup keys.
gcloud firestore indexes composite create --project "$PROJECT" --collection-group=phase2_completion \
  --field-config field-path=_open,order=ascending --field-config field-path=_first_completion_at,order=descending || true
gcloud firestore indexes composite create --project "$PROJECT" --collection-group=phase3_completion \
  --field-config field-path=_open,order=ascending --field-config field-path=_first_completion_at,order=descending || true
gcloud firestore indexes composite create --project "$PROJECT" --collection-group=phase4_completion \
  --field-config field-path=_open,order=ascending --field-config field-path=_first_completion_at,order=descending || true
gcloud firestore fields ttls update expires_at --collection-group=pubsub_deduplication --enable-ttl --project "$PROJECT" --quiet || true
