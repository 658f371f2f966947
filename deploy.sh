#!/usr/bin/env bash
# Deploy meeting-actions to a Google Cloud project: from an empty project
# with billing on to a working deployment; run again to update in place.
#
# Usage: ./deploy.sh --project ID [options]
#
#   --project ID            Google Cloud project (or GOOGLE_CLOUD_PROJECT / CLOUDSDK_CORE_PROJECT)
#   --region REGION         functions, scheduler and Firestore region (default us-central1; or REGION)
#   --bucket NAME           also deploy the storage trigger on this bucket (or BUCKET)
#   --audio-prefix PREFIX   only transcribe objects under this prefix (or AUDIO_PREFIX)
#   --collection NAME       Firestore collection (default meetings; or FIRESTORE_COLLECTION)
#   --llm-model MODEL       LLM Gateway model (default claude-sonnet-4-6; or LLM_MODEL)
#   --assemblyai-region R   us or eu (default us; or ASSEMBLYAI_REGION)
#   --name-prefix PREFIX    prefix of every resource name (default meeting-actions)
#   --public-submit         let anyone call submit_transcription (default: IAM invokers only)
#   --update-api-key        store a new version of the AssemblyAI API key
#   --rotate-webhook-secret generate and store a new webhook secret
#   --dry-run               print every command in order, run none
#   -h, --help              this text
#
# The AssemblyAI API key is read from ASSEMBLYAI_API_KEY, or prompted for
# without echo. It is only ever passed to gcloud on standard input: never on
# a command line, in the output, or in a function's plain environment.
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "deploy.sh: $*" >&2; exit 1; }

PROJECT=${GOOGLE_CLOUD_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}
REGION=${REGION:-us-central1}
BUCKET=${BUCKET:-}
AUDIO_PREFIX=${AUDIO_PREFIX:-}
COLLECTION=${FIRESTORE_COLLECTION:-meetings}
LLM_MODEL=${LLM_MODEL:-claude-sonnet-4-6}
AAI_REGION=${ASSEMBLYAI_REGION:-us}
PREFIX=meeting-actions
PUBLIC_SUBMIT=false
UPDATE_KEY=false
ROTATE_SECRET=false
DRY_RUN=false
RUNTIME=python312

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) PROJECT=${2:?}; shift 2 ;;
    --region) REGION=${2:?}; shift 2 ;;
    --bucket) BUCKET=${2:?}; shift 2 ;;
    --audio-prefix) AUDIO_PREFIX=${2:?}; shift 2 ;;
    --collection) COLLECTION=${2:?}; shift 2 ;;
    --llm-model) LLM_MODEL=${2:?}; shift 2 ;;
    --assemblyai-region) AAI_REGION=${2:?}; shift 2 ;;
    --name-prefix) PREFIX=${2:?}; shift 2 ;;
    --public-submit) PUBLIC_SUBMIT=true; shift ;;
    --update-api-key) UPDATE_KEY=true; shift ;;
    --rotate-webhook-secret) ROTATE_SECRET=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# Every plain input is checked before any command runs.
[[ -n $PROJECT ]] || die "no project: pass --project ID or set GOOGLE_CLOUD_PROJECT"
[[ $AAI_REGION == us || $AAI_REGION == eu ]] || die "--assemblyai-region must be us or eu"
[[ $PREFIX =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "--name-prefix must be lowercase letters, digits and dashes"
[[ $COLLECTION =~ ^[A-Za-z0-9_-]+$ ]] || die "--collection must be letters, digits, _ or -"

SA_NAME="$PREFIX-runtime"
SA="$SA_NAME@$PROJECT.iam.gserviceaccount.com"
KEY_SECRET="$PREFIX-assemblyai-api-key"
HOOK_SECRET="$PREFIX-webhook-secret"
FN_WEBHOOK="$PREFIX-webhook"
FN_SUBMIT="$PREFIX-submit"
FN_STORAGE="$PREFIX-storage"
FN_RECOVER="$PREFIX-recover"
JOB="$PREFIX-recover"

# run: a command that changes something (printed, and skipped in a dry run).
run() {
  echo "+ $*"
  [[ $DRY_RUN == true ]] || "$@"
}

# run_with_stdin LABEL CMD...: the same, with a secret on standard input.
# The label says where the data comes from; the data itself is never shown.
run_with_stdin() {
  local data=$1 label=$2
  shift 2
  echo "+ $* < ($label)"
  [[ $DRY_RUN == true ]] || printf '%s' "$data" | "$@"
}

# exists CMD...: whether a describe call succeeds (a dry run assumes not).
exists() {
  [[ $DRY_RUN == false ]] && "$@" >/dev/null 2>&1
}

# The project-level bindings there already, one "role member" per line.
PROJECT_BINDINGS=""
load_project_bindings() {
  [[ $DRY_RUN == true ]] && return 0
  PROJECT_BINDINGS=$(gcloud projects get-iam-policy "$PROJECT" \
    --flatten='bindings[].members' --format='value(bindings.role,bindings.members)' | tr '\t' ' ')
}

ensure_project_binding() {
  local member=$1 role=$2
  if grep -qxF "$role $member" <<<"$PROJECT_BINDINGS"; then
    echo "  (already bound: $role to $member)"
  else
    run gcloud projects add-iam-policy-binding "$PROJECT" --member="$member" --role="$role" --condition=None --quiet
  fi
}

random_secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# ensure_secret NAME DATA LABEL ROTATE: create when absent, add a version when asked.
ensure_secret() {
  local name=$1 data=$2 label=$3 rotate=$4
  if exists gcloud secrets describe "$name" --project="$PROJECT"; then
    if [[ $rotate == true ]]; then
      run_with_stdin "$data" "$label" gcloud secrets versions add "$name" --data-file=- --project="$PROJECT"
    else
      echo "  (secret $name kept)"
    fi
  else
    run_with_stdin "$data" "$label" gcloud secrets create "$name" --data-file=- --replication-policy=automatic --project="$PROJECT"
  fi
}

function_url() {
  if [[ $DRY_RUN == true ]]; then
    echo "https://$1-<hash>-$REGION.run.app"
  else
    gcloud functions describe "$1" --region="$REGION" --project="$PROJECT" --format='value(serviceConfig.uri)'
  fi
}

COMMON_ENV="FIRESTORE_COLLECTION=$COLLECTION,LLM_MODEL=$LLM_MODEL,ASSEMBLYAI_REGION=$AAI_REGION,GOOGLE_CLOUD_PROJECT=$PROJECT"
SECRETS="ASSEMBLYAI_API_KEY=$KEY_SECRET:latest,WEBHOOK_SECRET=$HOOK_SECRET:latest"

deploy_function() {
  local name=$1 entry=$2
  shift 2
  run gcloud functions deploy "$name" --gen2 --region="$REGION" --project="$PROJECT" \
    --runtime="$RUNTIME" --source=. --entry-point="$entry" --service-account="$SA" \
    --set-secrets="$SECRETS" "$@" --quiet
}

# --- the API key: settled before anything changes ------------------------------
API_KEY=${ASSEMBLYAI_API_KEY:-}
need_key=$UPDATE_KEY
if ! exists gcloud secrets describe "$KEY_SECRET" --project="$PROJECT"; then
  need_key=true
fi
if [[ $need_key == true && -z $API_KEY ]]; then
  if [[ $DRY_RUN == true ]]; then
    API_KEY="(not read in a dry run)"
  elif [[ -t 0 ]]; then
    read -rsp "AssemblyAI API key (not echoed): " API_KEY
    echo
  fi
  [[ -n $API_KEY ]] || die "no AssemblyAI API key: set ASSEMBLYAI_API_KEY (it is stored in Secret Manager, never on a command line)"
fi

echo "Deploying meeting-actions to project $PROJECT, region $REGION"

# --- APIs, Firestore, identity -----------------------------------------------------
run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com \
  cloudbuild.googleapis.com artifactregistry.googleapis.com eventarc.googleapis.com \
  pubsub.googleapis.com firestore.googleapis.com secretmanager.googleapis.com \
  iamcredentials.googleapis.com cloudscheduler.googleapis.com storage.googleapis.com \
  logging.googleapis.com --project="$PROJECT"

if ! exists gcloud firestore databases describe --database='(default)' --project="$PROJECT"; then
  run gcloud firestore databases create --database='(default)' --location="$REGION" --type=firestore-native --project="$PROJECT"
fi

if ! exists gcloud iam service-accounts describe "$SA" --project="$PROJECT"; then
  run gcloud iam service-accounts create "$SA_NAME" --display-name="meeting-actions functions" --project="$PROJECT"
fi

# --- secrets -------------------------------------------------------------------------
ensure_secret "$KEY_SECRET" "$API_KEY" "AssemblyAI API key" "$UPDATE_KEY"
ensure_secret "$HOOK_SECRET" "$(random_secret)" "a newly generated webhook secret" "$ROTATE_SECRET"

# --- least privilege for the runtime service account ------------------------------
# add-iam-policy-binding on a secret, a bucket or a service account adds a
# binding only if it is not there, so rerunning these changes nothing.
load_project_bindings
ensure_project_binding "serviceAccount:$SA" roles/datastore.user
for secret in "$KEY_SECRET" "$HOOK_SECRET"; do
  run gcloud secrets add-iam-policy-binding "$secret" --member="serviceAccount:$SA" \
    --role=roles/secretmanager.secretAccessor --project="$PROJECT" --quiet
done

# --- functions -------------------------------------------------------------------------
# The webhook is public: AssemblyAI cannot present Google credentials; its
# lock is the X-Webhook-Secret header. 80 requests per instance on 80
# threads: most of a delivery is waiting on the gateway. 540 s covers the
# longest gateway call; the claim (CLAIM_SECONDS=600) outlives it.
deploy_function "$FN_WEBHOOK" assemblyai_webhook --trigger-http --allow-unauthenticated \
  --timeout=540s --memory=512Mi --cpu=1 --concurrency=80 --max-instances=10 \
  --set-env-vars="$COMMON_ENV,THREADS=80,CLAIM_SECONDS=600"
WEBHOOK_URL=$(function_url "$FN_WEBHOOK")

submit_access=--no-allow-unauthenticated
[[ $PUBLIC_SUBMIT == true ]] && submit_access=--allow-unauthenticated
deploy_function "$FN_SUBMIT" submit_transcription --trigger-http "$submit_access" \
  --timeout=60s --memory=256Mi --cpu=1 --concurrency=20 \
  --set-env-vars="$COMMON_ENV,WEBHOOK_URL=$WEBHOOK_URL"
SUBMIT_URL=$(function_url "$FN_SUBMIT")

# The recovery sweep, private, called every minute by Cloud Scheduler.
deploy_function "$FN_RECOVER" recover_meetings --trigger-http --no-allow-unauthenticated \
  --timeout=540s --memory=256Mi --cpu=1 --concurrency=1 --max-instances=1 \
  --set-env-vars="$COMMON_ENV,RECOVERY_BATCH=20"
RECOVER_URL=$(function_url "$FN_RECOVER")
run gcloud functions add-invoker-policy-binding "$FN_RECOVER" --region="$REGION" \
  --member="serviceAccount:$SA" --project="$PROJECT"
job_flags=(--location="$REGION" --schedule='* * * * *' --uri="$RECOVER_URL" --http-method=post
  --oidc-service-account-email="$SA" --attempt-deadline=540s --project="$PROJECT")
if exists gcloud scheduler jobs describe "$JOB" --location="$REGION" --project="$PROJECT"; then
  run gcloud scheduler jobs update http "$JOB" "${job_flags[@]}"
else
  run gcloud scheduler jobs create http "$JOB" "${job_flags[@]}"
fi

if [[ -n $BUCKET ]]; then
  # Signing URLs through signBlob needs Token Creator on itself; reading
  # the recordings needs object reader on this bucket only.
  run gcloud iam service-accounts add-iam-policy-binding "$SA" --member="serviceAccount:$SA" \
    --role=roles/iam.serviceAccountTokenCreator --project="$PROJECT" --quiet
  run gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$SA" \
    --role=roles/storage.objectViewer --project="$PROJECT"
  if [[ $DRY_RUN == true ]]; then
    GCS_AGENT="service-<project-number>@gs-project-accounts.iam.gserviceaccount.com"
    PROJECT_NUMBER="<project-number>"
  else
    GCS_AGENT=$(gcloud storage service-agent --project="$PROJECT")
    PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
  fi
  ensure_project_binding "serviceAccount:$GCS_AGENT" roles/pubsub.publisher
  ensure_project_binding "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-eventarc.iam.gserviceaccount.com" roles/eventarc.serviceAgent
  ensure_project_binding "serviceAccount:$SA" roles/eventarc.eventReceiver
  storage_env="$COMMON_ENV,WEBHOOK_URL=$WEBHOOK_URL"
  [[ -n $AUDIO_PREFIX ]] && storage_env="$storage_env,AUDIO_PREFIX=$AUDIO_PREFIX"
  deploy_function "$FN_STORAGE" transcribe_uploaded_audio --trigger-bucket="$BUCKET" --retry \
    --trigger-service-account="$SA" --timeout=300s --memory=512Mi --cpu=1 \
    --set-env-vars="$storage_env"
  run gcloud functions add-invoker-policy-binding "$FN_STORAGE" --region="$REGION" \
    --member="serviceAccount:$SA" --project="$PROJECT"
fi

cat <<EOF

Done. meeting-actions is running in $PROJECT ($REGION).

Submit a recording (callers need roles/run.invoker on $FN_SUBMIT unless --public-submit):
  curl -X POST -H "Authorization: Bearer \$(gcloud auth print-identity-token)" \\
    -H 'Content-Type: application/json' \\
    -d '{"audio_url": "https://example.com/meeting.mp3"}' \\
    $SUBMIT_URL

Watch the meetings arrive in the Firestore console:
  https://console.cloud.google.com/firestore/databases/-default-/data/panel/$COLLECTION?project=$PROJECT
EOF
if [[ -n $BUCKET ]]; then
  echo
  echo "Recordings uploaded to gs://$BUCKET/${AUDIO_PREFIX} start the same pipeline."
fi
