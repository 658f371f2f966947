#!/usr/bin/env bash
# Deploy meeting-actions to a Google Cloud project: from an empty project
# with billing on to a working deployment; run again to update in place.
# Operators are told too: log-based metrics, alert policies and a dashboard
# from the files in monitoring/ (README, Operate).
#
# Usage: ./deploy.sh --project ID [options]          deploy, then verify
#        ./deploy.sh --verify --project ID [options] check a deployment; changes nothing
#        ./deploy.sh --delete --project ID [options] remove what deploy created (asks first)
#
#   --project ID            Google Cloud project (or GOOGLE_CLOUD_PROJECT / CLOUDSDK_CORE_PROJECT)
#   --region REGION         functions, scheduler and Firestore region (default us-central1; or REGION)
#   --bucket NAME           also deploy the storage trigger on this bucket (or BUCKET)
#   --audio-prefix PREFIX   only transcribe objects under this prefix (or AUDIO_PREFIX)
#   --collection NAME       Firestore collection (default meetings; or FIRESTORE_COLLECTION)
#   --llm-model MODEL       LLM Gateway model (default claude-sonnet-4-6; or LLM_MODEL);
#                           letters, digits and . _ : / - only (never a comma or '=')
#   --llm-fallback-models M1,M2  models tried in order after --llm-model when it is not on
#                           the gateway's list, refuses or is rate limited (or LLM_FALLBACK_MODELS)
#   --assemblyai-region R   us or eu (default us; or ASSEMBLYAI_REGION)
#   --notify-url URL        https URL told when a meeting from the bucket is done (or NOTIFY_URL)
#   --name-prefix PREFIX    prefix of every resource name, up to 20 characters (default meeting-actions)
#   --alert-email ADDRESS   e-mail the alerts to ADDRESS (repeatable); a rerun keeps the
#                           addresses given before (README, Operate)
#   --public-submit         let anyone call submit_transcription (default: IAM invokers only)
#   --retention-days N      every meeting and upload document expires N days after it is
#                           created (1-3650; or RETENTION_DAYS): a Firestore TTL policy on
#                           expire_at deletes it within about a day after (README, Privacy)
#   --delete-transcripts    delete each transcript at AssemblyAI once its items are written
#   --redact-pii POLICIES   ask AssemblyAI to redact these PII policies by default,
#                           comma-separated (e.g. phone_number,email_address)
#   --redact-pii-sub SUB    hash or entity_name (default: AssemblyAI's, hash)
#   --update-api-key        store a new version of the AssemblyAI API key
#   --rotate-webhook-secret generate a new webhook secret; the previous one stays accepted for 24 h
#   --verify                only check the deployment (it also runs at the end of every deploy)
#   --delete                delete the functions, job, secrets, service accounts, alerts,
#                           metrics and dashboard (not the data)
#   --yes                   with --delete: do not ask first
#   --dry-run               print every command in order, run none
#   -h, --help              this text
#
# The AssemblyAI API key is read from ASSEMBLYAI_API_KEY, or prompted for
# without echo. It is only ever passed to gcloud (and, by --verify, to curl)
# on standard input: never on a command line, in the output, or in a
# function's plain environment.
#
# IAM changes take minutes to propagate. The steps that race them are retried
# on Google's own error texts, up to DEPLOY_RETRY_ATTEMPTS times (default 8),
# waiting DEPLOY_RETRY_BASE_SECONDS (default 15) doubling up to 120 s between.
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
die() { echo "deploy.sh: $*" >&2; exit 1; }

cd "$(dirname "$0")"
ORIG_ARGS=("$@")

PROJECT=${GOOGLE_CLOUD_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}
REGION=${REGION:-us-central1}
BUCKET=${BUCKET:-}
AUDIO_PREFIX=${AUDIO_PREFIX:-}
COLLECTION=${FIRESTORE_COLLECTION:-meetings}
DEFAULT_LLM_MODEL=claude-sonnet-4-6 # the functions' own default too (meeting_actions/config.py)
LLM_MODEL=${LLM_MODEL:-$DEFAULT_LLM_MODEL}
LLM_FALLBACK_MODELS=${LLM_FALLBACK_MODELS:-}
AAI_REGION=${ASSEMBLYAI_REGION:-us}
NOTIFY_URL=${NOTIFY_URL:-}
ALERT_EMAILS=()
RETENTION_DAYS=${RETENTION_DAYS:-}
DELETE_TRANSCRIPTS=false
REDACT_PII_POLICIES=
REDACT_PII_SUB=
PREFIX=meeting-actions
PUBLIC_SUBMIT=false
UPDATE_KEY=false
ROTATE_SECRET=false
DRY_RUN=false
MODE=deploy
ASSUME_YES=false
RUNTIME=python312
RETRY_ATTEMPTS=${DEPLOY_RETRY_ATTEMPTS:-8}
RETRY_BASE=${DEPLOY_RETRY_BASE_SECONDS:-15}
RETRY_MAX=120
# How long the previous webhook secret stays accepted after a rotation: a
# transcript submitted just before it is delivered (or found by the sweep)
# well within a day, even for long recordings and a full round of retries.
ROTATION_WINDOW=86400

set_mode() {
  [[ $MODE == deploy || $MODE == "$1" ]] || die "--verify and --delete cannot be combined"
  MODE=$1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project | --region | --bucket | --audio-prefix | --collection | --llm-model | \
      --llm-fallback-models | --assemblyai-region | --notify-url | --name-prefix | --alert-email | \
      --retention-days | --redact-pii | --redact-pii-sub)
      [[ $# -ge 2 ]] || die "$1 needs a value (see --help)" ;;
  esac
  case "$1" in
    --project) PROJECT=$2; shift 2 ;;
    --region) REGION=$2; shift 2 ;;
    --bucket) BUCKET=$2; shift 2 ;;
    --audio-prefix) AUDIO_PREFIX=$2; shift 2 ;;
    --collection) COLLECTION=$2; shift 2 ;;
    --llm-model) LLM_MODEL=$2; shift 2 ;;
    --llm-fallback-models) LLM_FALLBACK_MODELS=$2; shift 2 ;;
    --assemblyai-region) AAI_REGION=$2; shift 2 ;;
    --notify-url) NOTIFY_URL=$2; shift 2 ;;
    --name-prefix) PREFIX=$2; shift 2 ;;
    --alert-email) ALERT_EMAILS+=("${2,,}"); shift 2 ;;
    --public-submit) PUBLIC_SUBMIT=true; shift ;;
    --retention-days) RETENTION_DAYS=$2; shift 2 ;;
    --delete-transcripts) DELETE_TRANSCRIPTS=true; shift ;;
    --redact-pii) REDACT_PII_POLICIES=$2; shift 2 ;;
    --redact-pii-sub) REDACT_PII_SUB=$2; shift 2 ;;
    --update-api-key) UPDATE_KEY=true; shift ;;
    --rotate-webhook-secret) ROTATE_SECRET=true; shift ;;
    --verify) set_mode verify; shift ;;
    --delete) set_mode delete; shift ;;
    --yes) ASSUME_YES=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# --- every input that reaches a gcloud argument is checked before anything runs -------
# Environment variables go to gcloud in its alternate-delimiter form
# (--set-env-vars=^|^A=1|B=2, see `gcloud topic escaping`), so a comma in a
# value stays in that value; no value may contain the delimiter itself.
DELIM='|'
[[ -n $PROJECT ]] || die "no project: pass --project ID or set GOOGLE_CLOUD_PROJECT"
[[ $PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] ||
  die "--project must be a project ID: 6 to 30 lowercase letters, digits and dashes"
[[ $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "--region must be a region such as us-central1"
[[ -z $BUCKET || $BUCKET =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]] ||
  die "--bucket must be a bucket name (lowercase letters, digits, . _ -), without gs://"
[[ ${#AUDIO_PREFIX} -le 1024 && $AUDIO_PREFIX != *[[:cntrl:]]* && $AUDIO_PREFIX != *"$DELIM"* ]] ||
  die "--audio-prefix must be at most 1024 characters, without control characters or '$DELIM'"
[[ $COLLECTION =~ ^[A-Za-z0-9_-]{1,100}$ && ! $COLLECTION =~ ^__.*__$ ]] ||
  die "--collection must be letters, digits, _ or -"
[[ $LLM_MODEL != *[,=]* ]] || die "--llm-model must not contain a comma or '=': got '$LLM_MODEL'"
[[ $LLM_MODEL =~ ^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$ ]] ||
  die "--llm-model must be a model name: letters, digits and . _ : / -"
FALLBACKS=()
if [[ -n $LLM_FALLBACK_MODELS ]]; then
  IFS=, read -r -a FALLBACKS <<<"$LLM_FALLBACK_MODELS"
  for model in "${FALLBACKS[@]}"; do
    [[ $model =~ ^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$ ]] ||
      die "--llm-fallback-models must be model names separated by commas (letters, digits and . _ : / -): got '$LLM_FALLBACK_MODELS'"
  done
fi
[[ $AAI_REGION == us || $AAI_REGION == eu ]] || die "--assemblyai-region must be us or eu"
url_re='^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*)?$'
[[ -z $NOTIFY_URL || (${#NOTIFY_URL} -le 2048 && $NOTIFY_URL =~ $url_re) ]] ||
  die "--notify-url must be an https URL (no user name or password, no spaces or '$DELIM')"
# The longest service account id is PREFIX-scheduler: 30 characters at most.
[[ $PREFIX =~ ^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$ ]] ||
  die "--name-prefix must be up to 20 lowercase letters, digits and dashes, starting with a letter"
email_re='^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$'
for address in "${ALERT_EMAILS[@]}"; do
  [[ ${#address} -le 254 && $address =~ $email_re ]] ||
    die "--alert-email must be an e-mail address (name@domain): got '$address'"
done
[[ -z $RETENTION_DAYS || ($RETENTION_DAYS =~ ^[1-9][0-9]{0,3}$ && $RETENTION_DAYS -le 3650) ]] ||
  die "--retention-days must be a whole number of days from 1 to 3650"
[[ -z $REDACT_PII_POLICIES || $REDACT_PII_POLICIES =~ ^[a-z_]+(,[a-z_]+)*$ ]] ||
  die "--redact-pii must be AssemblyAI policy names, comma-separated (e.g. phone_number,email_address)"
[[ -z $REDACT_PII_SUB || $REDACT_PII_SUB == hash || $REDACT_PII_SUB == entity_name ]] ||
  die "--redact-pii-sub must be hash or entity_name"
[[ -z $REDACT_PII_SUB || -n $REDACT_PII_POLICIES ]] || die "--redact-pii-sub needs --redact-pii"
[[ $RETRY_ATTEMPTS =~ ^[1-9][0-9]{0,2}$ ]] || die "DEPLOY_RETRY_ATTEMPTS must be a whole number from 1"
[[ $RETRY_BASE =~ ^[0-9]{1,4}$ ]] || die "DEPLOY_RETRY_BASE_SECONDS must be a whole number of seconds"
[[ $ASSUME_YES == false || $MODE == delete ]] || die "--yes only goes with --delete"
[[ $DRY_RUN == false || $MODE != verify ]] || die "--verify changes nothing: run it without --dry-run"

# --- names -------------------------------------------------------------------------------
SA_DOMAIN="$PROJECT.iam.gserviceaccount.com"
KEY_SECRET="$PREFIX-assemblyai-api-key"
HOOK_SECRET="$PREFIX-webhook-secret"
NOTIFY_SECRET="$PREFIX-notify-signing-secret"
FN_WEBHOOK="$PREFIX-webhook"
FN_SUBMIT="$PREFIX-submit"
FN_RECOVER="$PREFIX-recover"
FN_STORAGE="$PREFIX-storage"
FN_REGEN="$PREFIX-regenerate"
JOB="$PREFIX-recover"
# One identity per function, each holding only its own roles (README, Deploy).
BUILD_SA="$PREFIX-build@$SA_DOMAIN"
WEBHOOK_SA="$PREFIX-webhook@$SA_DOMAIN"
SUBMIT_SA="$PREFIX-submit@$SA_DOMAIN"
RECOVER_SA="$PREFIX-recover@$SA_DOMAIN"
SCHEDULER_SA="$PREFIX-scheduler@$SA_DOMAIN"
STORAGE_SA="$PREFIX-storage@$SA_DOMAIN"
REGEN_SA="$PREFIX-regen@$SA_DOMAIN"
EVENTS_SA="$PREFIX-events@$SA_DOMAIN"
# The single account every function ran as before; moved off, never reused.
LEGACY_SA="$PREFIX-runtime@$SA_DOMAIN"
ALL_SAS=("$BUILD_SA" "$WEBHOOK_SA" "$SUBMIT_SA" "$RECOVER_SA" "$SCHEDULER_SA" "$STORAGE_SA"
  "$REGEN_SA" "$EVENTS_SA")
# Monitoring (README, Operate): one log-based metric per file in monitoring/metrics, named
# PREFIX-FILE; the policies, the dashboard and the e-mail channels are found by display name.
METRIC_NAMES=()
for metric_file in monitoring/metrics/*.json; do
  METRIC_NAMES+=("$PREFIX-$(basename "$metric_file" .json)")
done
CHANNEL_PREFIX="$PREFIX: alerts to "

# --- running commands ------------------------------------------------------------------------
# show CMD...: print a command the way a shell would take it back.
show() {
  local out="+" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=" $a"
    else
      out+=" '${a//\'/\'\\\'\'}'"
    fi
  done
  echo "$out"
}

# run: a command that changes something (printed, and skipped in a dry run).
run() {
  show "$@"
  [[ $DRY_RUN == true ]] || "$@"
}

# run_with_stdin DATA LABEL CMD...: the same, with a secret on standard input.
# The label says where the data comes from; the data itself is never shown.
run_with_stdin() {
  local data=$1 label=$2
  shift 2
  echo "$(show "$@") < ($label)"
  [[ $DRY_RUN == true ]] || printf '%s' "$data" | "$@"
}

# exists CMD...: whether a describe call succeeds. A dry run of a deploy
# assumes nothing exists yet; a dry run of --delete assumes everything does.
DRY_ASSUME=absent
exists() {
  if [[ $DRY_RUN == true ]]; then
    [[ $DRY_ASSUME == present ]]
    return
  fi
  "$@" >/dev/null 2>&1
}

# The flags that may be given again after a failure: a rotation or a new key
# already stored must not be repeated by the rerun.
KEY_STORED=false
HOOK_ROTATED=false
rerun_command() {
  local out="./deploy.sh" a
  [[ " ${ORIG_ARGS[*]} " == *" --project "* ]] || out+=" --project $PROJECT"
  for a in "${ORIG_ARGS[@]}"; do
    [[ $a == --rotate-webhook-secret && $HOOK_ROTATED == true ]] && continue
    [[ $a == --update-api-key && $KEY_STORED == true ]] && continue
    out+=" $(show "$a" | cut -c3-)"
  done
  echo "$out"
}

# propagation_wait ERROR: what a known IAM propagation error says we are
# waiting for; fails for any other error. The texts are Google's own.
propagation_wait() {
  local text=${1,,}
  case $text in
    *"permission denied on secret"* | *"secretmanager.versions.access"*"denied"*)
      echo "the secret access granted to the function's service account to take effect" ;;
    *"permission denied while using the eventarc service agent"*)
      echo "the Eventarc service agent's permissions to propagate" ;;
    *"unable to publish to cloud pub/sub topics"*)
      echo "the Cloud Storage service agent's Pub/Sub publisher role to take effect" ;;
    *"missing permission on the build service account"*)
      echo "the build service account's Cloud Build role to take effect" ;;
    *"service account"*"does not exist"*)
      echo "the new service account to become visible to IAM" ;;
    *"cannot find metric(s) that match type"* | *"metric referenced by the provided filter is unknown"*)
      echo "the new log-based metrics to become visible to Cloud Monitoring (up to 10 minutes)" ;;
    *) return 1 ;;
  esac
}

# tell CMD...: a command for the operator to run, printed, not run.
tell() { show "$@" | cut -c3- | sed 's/^/  /'; }

give_up() {
  {
    echo "deploy.sh: gave up waiting for $1 after $2 attempts (${3}s of waiting)."
    echo "IAM changes usually take effect within 2 minutes, sometimes 7 or more. Everything done so"
    echo "far is kept and a rerun repeats nothing twice: in a few minutes, run"
    echo "  $(rerun_command)"
  } >&2
  exit 1
}

next_delay() { local d=$(($1 * 2)); echo $((d > RETRY_MAX ? RETRY_MAX : d)); }

# run_retrying CMD...: run (printed), and while it fails with a known
# propagation error, say what it waits for and try again, a bounded number
# of times. Its error output is shown as it comes and kept to be read.
run_retrying() {
  show "$@"
  [[ $DRY_RUN == true ]] && return 0
  local attempt=1 delay=$RETRY_BASE waited=0 errfile what
  errfile=$(mktemp)
  while :; do
    if { "$@" 2>&1 1>&3 3>&- | tee "$errfile" >&2; } 3>&1; then
      rm -f "$errfile"
      return 0
    fi
    if ! what=$(propagation_wait "$(<"$errfile")"); then
      rm -f "$errfile"
      die "this failed (see the error above): $(show "$@" | cut -c3-)"
    fi
    if ((attempt >= RETRY_ATTEMPTS)); then
      rm -f "$errfile"
      give_up "$what" "$attempt" "$waited"
    fi
    echo "  waiting ${delay}s for $what (attempt $attempt of $RETRY_ATTEMPTS)"
    sleep "$delay"
    waited=$((waited + delay))
    attempt=$((attempt + 1))
    delay=$(next_delay "$delay")
  done
}

# Timestamps: RFC 3339 to seconds and back, with GNU or BSD date.
epoch_of() {
  local ts=${1%%.*}
  ts=${ts%Z}
  date -u -d "${ts}Z" +%s 2>/dev/null || date -u -j -f '%Y-%m-%dT%H:%M:%S' "$ts" +%s
}
date_of() { date -u -d "@$1" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || date -u -r "$1" '+%Y-%m-%d %H:%M UTC'; }

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
    run_retrying gcloud projects add-iam-policy-binding "$PROJECT" --member="$member" --role="$role" \
      --condition=None --format=none --quiet
    PROJECT_BINDINGS+=$'\n'"$role $member"
  fi
}

# add-iam-policy-binding on a secret, a bucket, a service account or a
# function adds a binding only if it is not there, so rerunning changes nothing.
grant_secret() {
  local secret=$1 sa
  shift
  for sa in "$@"; do
    run_retrying gcloud secrets add-iam-policy-binding "$secret" --member="serviceAccount:$sa" \
      --role=roles/secretmanager.secretAccessor --project="$PROJECT" --format=none --quiet
  done
}

grant_invoker() {
  run_retrying gcloud functions add-invoker-policy-binding "$1" --region="$REGION" \
    --member="serviceAccount:$2" --project="$PROJECT" --format=none
}

ensure_sa() {
  local email=$1 what=$2
  if exists gcloud iam service-accounts describe "$email" --project="$PROJECT"; then
    echo "  (service account ${email%%@*} kept)"
  else
    run gcloud iam service-accounts create "${email%%@*}" --display-name="meeting-actions: $what" \
      --project="$PROJECT"
  fi
}

# detect_bucket: without --bucket, the bucket of the storage trigger already
# deployed, so a rerun keeps updating it (its secrets and settings too).
detect_bucket() {
  [[ -z $BUCKET && $DRY_RUN == false ]] || return 0
  local found
  found=$(gcloud functions describe "$FN_STORAGE" --region="$REGION" --project="$PROJECT" \
    --format='value(eventTrigger.eventFilters[0].value)' 2>/dev/null) || return 0
  if [[ $found =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]]; then
    BUCKET=$found
    echo "  ($FN_STORAGE is deployed on gs://$BUCKET: it is included)"
  fi
}

function_url() {
  if [[ $DRY_RUN == true ]]; then
    echo "https://$1-<hash>-$REGION.run.app"
  else
    gcloud functions describe "$1" --region="$REGION" --project="$PROJECT" --format='value(serviceConfig.uri)'
  fi
}

# env_flag KEY=VALUE...: one --set-env-vars argument in the alternate-delimiter form.
env_flag() {
  local out="" kv
  for kv in "$@"; do
    [[ $kv != *"$DELIM"* ]] || die "the value of ${kv%%=*} contains '$DELIM'"
    out+="${out:+$DELIM}$kv"
  done
  echo "--set-env-vars=^$DELIM^$out"
}

COMMON_ENV=("FIRESTORE_COLLECTION=$COLLECTION" "LLM_MODEL=$LLM_MODEL" "ASSEMBLYAI_REGION=$AAI_REGION"
  "GOOGLE_CLOUD_PROJECT=$PROJECT")
[[ -z $LLM_FALLBACK_MODELS ]] || COMMON_ENV+=("LLM_FALLBACK_MODELS=$LLM_FALLBACK_MODELS")
# Privacy (README, Privacy): every function reads the same settings.
[[ -n $RETENTION_DAYS ]] && COMMON_ENV+=("RETENTION_DAYS=$RETENTION_DAYS")
[[ $DELETE_TRANSCRIPTS == true ]] && COMMON_ENV+=("DELETE_TRANSCRIPT_AFTER_ITEMS=true")
if [[ -n $REDACT_PII_POLICIES ]]; then
  COMMON_ENV+=("REDACT_PII=true" "REDACT_PII_POLICIES=$REDACT_PII_POLICIES")
  [[ -n $REDACT_PII_SUB ]] && COMMON_ENV+=("REDACT_PII_SUB=$REDACT_PII_SUB")
fi

# deploy_function NAME ENTRY SERVICE_ACCOUNT TIMEOUT_SECONDS SECRETS ENV... -- FLAGS...
# Every function is told its own timeout (FUNCTION_TIMEOUT_SECONDS) and is
# built by the dedicated build service account.
deploy_function() {
  local name=$1 entry=$2 sa=$3 timeout=$4 secrets=$5
  shift 5
  local -a env=()
  while [[ $1 != -- ]]; do
    env+=("$1")
    shift
  done
  shift
  local env_arg
  env_arg=$(env_flag "${COMMON_ENV[@]}" "${env[@]}" "FUNCTION_TIMEOUT_SECONDS=$timeout")
  run_retrying gcloud functions deploy "$name" --gen2 --region="$REGION" --project="$PROJECT" \
    --runtime="$RUNTIME" --source=. --entry-point="$entry" --service-account="$sa" \
    --build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SA" --timeout="${timeout}s" \
    --set-secrets="$secrets" "$env_arg" "$@" --quiet
}

# --- monitoring: the files in monitoring/, made for this deployment -----------------------
# The files name the deployment as @PREFIX@, @PROJECT@ and @REGION@ (all checked above to
# hold only letters, digits and dashes); deploy.sh hands gcloud copies with them filled in.
RENDERED=""
render_monitoring() {
  [[ -z $RENDERED ]] || return 0
  RENDERED=$(mktemp -d "${TMPDIR:-/tmp}/meeting-actions-monitoring.XXXXXX")
  if [[ $DRY_RUN == false ]]; then
    trap 'rm -rf "$RENDERED"' EXIT
  fi
  mkdir -p "$RENDERED/metrics" "$RENDERED/policies"
  local f
  for f in monitoring/metrics/*.json monitoring/policies/*.json monitoring/dashboard.json; do
    sed -e "s/@PREFIX@/$PREFIX/g" -e "s/@PROJECT@/$PROJECT/g" -e "s/@REGION@/$REGION/g" \
      "$f" >"$RENDERED/${f#monitoring/}"
  done
  if grep -rq '@[A-Z_]*@' "$RENDERED"; then
    die "monitoring/ uses a placeholder other than @PREFIX@, @PROJECT@ and @REGION@"
  fi
}

# display_name_of FILE: its top-level displayName (the files are JSON indented by 2).
display_name_of() {
  local name re="^[A-Za-z0-9 :,.'()-]+$"
  name=$(sed -n 's/^  "displayName": "\(.*\)",$/\1/p' "$1" | head -n 1)
  [[ $name =~ $re ]] || die "$1 has no top-level \"displayName\" that deploy.sh can read"
  echo "$name"
}

# line_for LIST DISPLAY_NAME: the line of LIST (NAME<tab>DISPLAY_NAME[<tab>...]) whose
# display name is exactly DISPLAY_NAME; a list --filter may match more than that.
line_for() {
  local line name display
  while IFS= read -r line; do
    IFS=$'\t' read -r name display _ <<<"$line"
    if [[ -n $name && $display == "$2" ]]; then
      echo "$line"
      return 0
    fi
  done <<<"$1"
  return 1
}
has_display() { line_for "$@" >/dev/null; }

# run_for VAR PLACEHOLDER CMD...: run (printed) and keep what it prints in VAR; a dry
# run keeps PLACEHOLDER instead.
run_for() {
  local var=$1 placeholder=$2 out
  shift 2
  show "$@"
  if [[ $DRY_RUN == true ]]; then
    out=$placeholder
  else
    out=$("$@")
  fi
  printf -v "$var" '%s' "$out"
}

# This deployment's e-mail channels and alert policies, one "NAME<tab>DISPLAY_NAME" a line
# (none in a dry run). Both carry the user label app=PREFIX.
CHANNEL_LIST=""
POLICY_LIST=""
load_channels() {
  [[ $DRY_RUN == true ]] && return 0
  CHANNEL_LIST=$(gcloud beta monitoring channels list --filter="type=\"email\" AND userLabels.app=\"$PREFIX\"" \
    --format='value(name,displayName)' --project="$PROJECT")
}
load_policies() {
  [[ $DRY_RUN == true ]] && return 0
  POLICY_LIST=$(gcloud alpha monitoring policies list --filter="userLabels.app=\"$PREFIX\"" \
    --format='value(name,displayName)' --project="$PROJECT")
}
dashboard_list() {
  [[ $DRY_RUN == true ]] && return 0
  gcloud monitoring dashboards list --filter="displayName=\"$1\"" \
    --format='value(name,displayName,etag)' --project="$PROJECT"
}

ensure_metrics() {
  local f name
  for f in "$RENDERED"/metrics/*.json; do
    name="$PREFIX-$(basename "$f" .json)"
    if exists gcloud logging metrics describe "$name" --project="$PROJECT"; then
      run gcloud logging metrics update "$name" --config-from-file="$f" --project="$PROJECT"
    else
      run gcloud logging metrics create "$name" --config-from-file="$f" --project="$PROJECT"
    fi
  done
}

# The channels the policies notify: every e-mail channel deploy.sh made before (a rerun
# without --alert-email keeps them) and one for each --alert-email address not there yet.
CHANNELS=()
ensure_channels() {
  local name display address
  load_channels
  while IFS=$'\t' read -r name display; do
    if [[ -n $name && $display == "$CHANNEL_PREFIX"* ]]; then
      CHANNELS+=("$name")
    fi
  done <<<"$CHANNEL_LIST"
  for address in "${ALERT_EMAILS[@]}"; do
    if has_display "$CHANNEL_LIST" "$CHANNEL_PREFIX$address"; then
      echo "  (e-mail channel for $address kept)"
      continue
    fi
    run_for name "projects/$PROJECT/notificationChannels/NEW-CHANNEL-FOR-$address" \
      gcloud beta monitoring channels create --type=email --display-name="$CHANNEL_PREFIX$address" \
      --channel-labels="email_address=$address" --user-labels="app=$PREFIX" \
      --description="meeting-actions alerts, made by deploy.sh --alert-email" \
      --project="$PROJECT" --format='value(name)'
    [[ $name =~ ^projects/[^/]+/notificationChannels/[A-Za-z0-9@._-]+$ ]] ||
      die "could not read the name of the new e-mail channel for $address (got '$name')"
    CHANNELS+=("$name")
  done
}

ensure_policies() {
  local f display line name joined
  local -a create_flags=() update_flags=(--clear-notification-channels)
  if ((${#CHANNELS[@]} > 0)); then
    joined=$(IFS=,; echo "${CHANNELS[*]}")
    create_flags=(--notification-channels="$joined")
    update_flags=(--set-notification-channels="$joined")
  else
    echo "  (no --alert-email: the alert policies open incidents in the console but e-mail"
    echo "   nobody; run ./deploy.sh again with --alert-email ADDRESS to be told)"
  fi
  load_policies
  for f in "$RENDERED"/policies/*.json; do
    display=$(display_name_of "$f")
    if line=$(line_for "$POLICY_LIST" "$display"); then
      IFS=$'\t' read -r name _ <<<"$line"
      run_retrying gcloud alpha monitoring policies update "$name" --policy-from-file="$f" \
        "${update_flags[@]}" --project="$PROJECT" --format=none
    else
      run_retrying gcloud alpha monitoring policies create --policy-from-file="$f" \
        "${create_flags[@]}" --project="$PROJECT" --format=none
    fi
  done
}

ensure_dashboard() {
  local f="$RENDERED/dashboard.json" display line name etag
  display=$(display_name_of "$f")
  if line=$(line_for "$(dashboard_list "$display")" "$display"); then
    IFS=$'\t' read -r name _ etag <<<"$line"
    # With the etag it was listed with: an edit made meanwhile is not overwritten blindly.
    awk -v etag="$etag" 'NR == 1 && etag ~ /^[A-Za-z0-9]+$/ { print; print "  \"etag\": \"" etag "\","; next }
      { print }' "$f" >"$f.update"
    run gcloud monitoring dashboards update "$name" --config-from-file="$f.update" \
      --project="$PROJECT" --format=none
  else
    run gcloud monitoring dashboards create --config-from-file="$f" --project="$PROJECT" --format=none
  fi
}

verify_monitoring() {
  render_monitoring
  load_channels 2>/dev/null || true
  load_policies 2>/dev/null || true
  local name f display address
  local -a missing=()
  for name in "${METRIC_NAMES[@]}"; do
    gcloud logging metrics describe "$name" --project="$PROJECT" >/dev/null 2>&1 || missing+=("$name")
  done
  check "log-based metrics exist (${#METRIC_NAMES[@]})" "$(holds [ "${#missing[@]}" = 0 ])" \
    "missing: ${missing[*]} (./deploy.sh makes them)"
  missing=()
  for f in "$RENDERED"/policies/*.json; do
    display=$(display_name_of "$f")
    has_display "$POLICY_LIST" "$display" || missing+=("\"$display\"")
  done
  check "alert policies exist" "$(holds [ "${#missing[@]}" = 0 ])" \
    "missing: ${missing[*]} (./deploy.sh makes them)"
  display=$(display_name_of "$RENDERED/dashboard.json")
  check "dashboard exists" \
    "$(holds has_display "$(dashboard_list "$display" 2>/dev/null || true)" "$display")" \
    "no dashboard named \"$display\" (./deploy.sh makes it)"
  for address in "${ALERT_EMAILS[@]}"; do
    check "alerts are e-mailed to $address" \
      "$(holds has_display "$CHANNEL_LIST" "$CHANNEL_PREFIX$address")" "no e-mail channel for it"
  done
  if ! grep -qF "$CHANNEL_PREFIX" <<<"$CHANNEL_LIST"; then
    echo "  note  the alert policies e-mail nobody (deploy with --alert-email ADDRESS)"
  fi
}

delete_monitoring() {
  render_monitoring
  # A list that fails is shown and counted; the rest is still deleted.
  load_channels || DELETE_FAILED=$((DELETE_FAILED + 1))
  load_policies || DELETE_FAILED=$((DELETE_FAILED + 1))
  local f name display line
  if [[ $DRY_RUN == true ]]; then
    for f in "$RENDERED"/policies/*.json; do
      remove gcloud alpha monitoring policies delete "<the policy \"$(display_name_of "$f")\">" \
        --project="$PROJECT" --quiet
    done
    remove gcloud beta monitoring channels delete "<each e-mail channel \"$CHANNEL_PREFIX...\">" \
      --force --project="$PROJECT" --quiet
  fi
  # Every policy and channel of this deployment, also those of files since removed.
  while IFS=$'\t' read -r name display; do
    if [[ -n $name && $display == "$PREFIX: "* ]]; then
      remove gcloud alpha monitoring policies delete "$name" --project="$PROJECT" --quiet
    fi
  done <<<"$POLICY_LIST"
  while IFS=$'\t' read -r name display; do
    if [[ -n $name && $display == "$CHANNEL_PREFIX"* ]]; then
      remove gcloud beta monitoring channels delete "$name" --force --project="$PROJECT" --quiet
    fi
  done <<<"$CHANNEL_LIST"
  display=$(display_name_of "$RENDERED/dashboard.json")
  if [[ $DRY_RUN == true ]]; then
    remove gcloud monitoring dashboards delete "<the dashboard \"$display\">" --project="$PROJECT" --quiet
  elif line=$(line_for "$(dashboard_list "$display")" "$display"); then
    IFS=$'\t' read -r name _ <<<"$line"
    remove gcloud monitoring dashboards delete "$name" --project="$PROJECT" --quiet
  fi
  for name in "${METRIC_NAMES[@]}"; do
    if exists gcloud logging metrics describe "$name" --project="$PROJECT"; then
      remove gcloud logging metrics delete "$name" --project="$PROJECT" --quiet
    fi
  done
}

# --- the webhook secret's versions: which are mounted, and for how long ----------------
# hook_versions: "NUMBER CREATE_TIME" of the two newest enabled versions.
hook_versions() {
  gcloud secrets versions list "$HOOK_SECRET" --project="$PROJECT" --filter='state:ENABLED' \
    --sort-by='~createTime' --limit=2 --format='value(name.basename(),createTime)'
}

HOOK_VERSION=latest
HOOK_PREVIOUS=""
warn_if_rotation_in_progress() {
  [[ $DRY_RUN == true ]] && return 0
  local newest="" newest_t="" prev="" age
  { read -r newest newest_t && read -r prev _; } <<<"$(hook_versions 2>/dev/null)" || true
  [[ -n $prev && -n $newest_t ]] || return 0
  age=$(($(date -u +%s) - $(epoch_of "$newest_t")))
  if ((age < ROTATION_WINDOW)); then
    echo "  WARNING: the last rotation (version $newest) is less than 24 h old. Rotating again stops"
    echo "  accepting version $prev now: deliveries for transcripts submitted before that rotation are"
    echo "  refused (401), and only the recovery sweep can still finish those meetings."
  fi
}

settle_hook_versions() {
  [[ $DRY_RUN == true ]] && return 0
  local newest="" newest_t="" prev="" age expires
  { read -r newest newest_t && read -r prev _; } <<<"$(hook_versions)" || true
  [[ $newest =~ ^[0-9]+$ && -n $newest_t ]] || die "could not read the versions of secret $HOOK_SECRET"
  HOOK_VERSION=$newest
  [[ $prev =~ ^[0-9]+$ ]] || return 0
  age=$(($(date -u +%s) - $(epoch_of "$newest_t")))
  expires=$(date_of $(($(epoch_of "$newest_t") + ROTATION_WINDOW)))
  if ((age < ROTATION_WINDOW)); then
    HOOK_PREVIOUS=$prev
    echo "  webhook secret rotation in progress: version $newest is current; version $prev stays"
    echo "  accepted (WEBHOOK_SECRET_PREVIOUS, on the webhook only) until $expires. The first run of"
    echo "  ./deploy.sh after that removes it."
  else
    echo "  (webhook secret version $newest; the previous one is no longer accepted since $expires)"
  fi
}

# --- verify ------------------------------------------------------------------------------
CHECKS=0
FAILED_CHECKS=0
# holds TEST...: "true" or "false", for check.
holds() { if "$@"; then echo true; else echo false; fi; }
check() {
  local what=$1 ok=$2 detail=${3:-}
  CHECKS=$((CHECKS + 1))
  if [[ $ok == true ]]; then
    echo "  ok    $what"
  else
    FAILED_CHECKS=$((FAILED_CHECKS + 1))
    echo "  FAIL  $what${detail:+: $detail}"
  fi
}

# http_status METHOD URL [CURL ARGS...]: the HTTP status code, 000 when unreachable.
# Headers that carry a credential come on standard input (-H @-), never argv.
http_status() {
  local method=$1 url=$2
  shift 2
  curl -sS -o /dev/null -w '%{http_code}' --max-time 60 -X "$method" "$@" "$url" 2>/dev/null || true
}

# verify_models: one check per configured LLM model (LLM_MODEL, then each fallback):
# is it on the gateway's list (GET /v1/models)? The models, region and gateway are the
# webhook's own settings, or this script's when it cannot be described. The API key is
# read from Secret Manager and reaches curl as a header on standard input only.
verify_models() {
  local e=serviceConfig.environmentVariables settings model fallbacks region base source
  local key out code ids reason=""
  local -a configured=() models=()
  if settings=$(gcloud functions describe "$FN_WEBHOOK" --region="$REGION" --project="$PROJECT" \
    --format="value[separator=\"|\"]($e.LLM_MODEL,$e.LLM_FALLBACK_MODELS,$e.ASSEMBLYAI_REGION,$e.LLM_GATEWAY_BASE_URL)" \
    2>/dev/null); then
    IFS='|' read -r model fallbacks region base <<<"$settings" || true
    source="the environment of $FN_WEBHOOK"
  else
    model=$LLM_MODEL fallbacks=$LLM_FALLBACK_MODELS region=$AAI_REGION base=""
    source="this script's options ($FN_WEBHOOK could not be described)"
  fi
  # As the functions read them (config.py): blanks dropped, each model once, in order.
  model=${model//[[:space:]]/}
  IFS=, read -r -a configured <<<"${model:-$DEFAULT_LLM_MODEL},${fallbacks//[[:space:]]/}"
  for model in "${configured[@]}"; do
    if [[ -n $model && " ${models[*]} " != *" $model "* ]]; then
      models+=("$model")
    fi
  done
  region=${region,,}
  if [[ -z $base ]]; then
    base=https://llm-gateway.assemblyai.com/v1
    [[ $region == eu ]] && base=https://llm-gateway.eu.assemblyai.com/v1
  fi
  base=${base%/}
  echo "  (LLM models from $source; gateway $base)"

  if ! [[ $base =~ $url_re ]]; then
    reason="the gateway URL is not https (LLM_GATEWAY_BASE_URL): the API key is not sent to it"
  elif ! key=$(gcloud secrets versions access latest --secret="$KEY_SECRET" --project="$PROJECT" 2>/dev/null) ||
    [[ -z $key ]]; then
    reason="could not read the API key from secret $KEY_SECRET: the account running deploy.sh"
    reason+=" needs secretmanager.versions.access on it (roles/secretmanager.secretAccessor)"
  else
    out=$(printf 'Authorization: %s\n' "$key" | curl -sS --max-time 30 -w '\n%{http_code}' -H @- \
      "$base/models" 2>/dev/null || true)
    key=""
    code=${out##*$'\n'}
    ids=$(grep -oE '"id"[[:space:]]*:[[:space:]]*"[^"]*"' <<<"${out%$'\n'*}" |
      sed -E 's/.*"([^"]*)"$/\1/; s#\\/#/#g' || true)
    if [[ $code == 401 ]]; then
      reason="the gateway refused the stored API key (HTTP 401; store a new one with --update-api-key)"
    elif [[ $code != 200 ]]; then
      reason="the gateway's list could not be read (HTTP ${code:-000} from GET $base/models)"
    elif [[ -z $ids ]]; then
      reason="the gateway's list has no model ids"
    fi
  fi
  for model in "${models[@]}"; do
    if [[ -n $reason ]]; then
      check "model $model is on the gateway's list" false "$reason"
    else
      check "model $model is on the gateway's list" "$(holds grep -qxF -- "$model" <<<"$ids")" \
        "not listed; the gateway lists $(grep -c . <<<"$ids") models, such as: $(head -n 5 <<<"$ids" | paste -sd ' ')"
    fi
  done
}

verify() {
  echo
  echo "Verifying meeting-actions in $PROJECT ($REGION): proves it answers, spends nothing."
  detect_bucket
  local fn state url code token last status
  local -a fns=("$FN_WEBHOOK" "$FN_SUBMIT" "$FN_RECOVER" "$FN_REGEN")
  [[ -n $BUCKET ]] && fns+=("$FN_STORAGE")
  for fn in "${fns[@]}"; do
    state=$(gcloud functions describe "$fn" --region="$REGION" --project="$PROJECT" \
      --format='value(state)' 2>/dev/null || echo missing)
    check "function $fn is ACTIVE" "$(holds [ "$state" = ACTIVE ])" "${state:-unknown}"
  done

  url=$(function_url "$FN_WEBHOOK" 2>/dev/null || true)
  code=$(http_status POST "$url" -H 'Content-Type: application/json' \
    -H 'X-Webhook-Secret: deploy-verify-not-the-secret' --data-binary '{}')
  check "webhook answers 401 to a wrong secret" "$(holds [ "$code" = 401 ])" "got $code"
  code=$(http_status GET "$url")
  check "webhook answers 405 to a GET" "$(holds [ "$code" = 405 ])" "got $code"

  url=$(function_url "$FN_SUBMIT" 2>/dev/null || true)
  if token=$(gcloud auth print-identity-token 2>/dev/null) && [[ -n $token ]]; then
    code=$(printf 'Authorization: Bearer %s\n' "$token" | http_status POST "$url" -H @- \
      -H 'Content-Type: application/json' --data-binary '')
  else
    code="no identity token (gcloud auth print-identity-token failed)"
  fi
  check "submit answers 400 to an empty body with an identity token" \
    "$(holds [ "$code" = 400 ])" "got $code"
  code=$(http_status POST "$url" -H 'Content-Type: application/json' --data-binary '')
  if [[ $PUBLIC_SUBMIT == true ]]; then
    check "submit (public) answers 400 to an empty body without a token" \
      "$(holds [ "$code" = 400 ])" "got $code"
  else
    check "submit answers 403 without an identity token" \
      "$(holds [ "$code" = 403 ])" "got $code"
  fi

  if status=$(gcloud scheduler jobs describe "$JOB" --location="$REGION" --project="$PROJECT" \
    --format='value(lastAttemptTime,status.code)' 2>/dev/null); then
    check "scheduler job $JOB exists" true
    IFS=$'\t' read -r last code <<<"$status" || true
    if [[ -z $last ]]; then
      check "scheduler job's last run succeeded" false "it has not run yet (it runs every minute)"
    else
      check "scheduler job's last run succeeded" "$(holds [ -z "$code" -o "$code" = 0 ])" \
        "status code $code at $last (7 = PERMISSION_DENIED: the invoker role; see gcloud functions logs read $FN_RECOVER --region=$REGION --project=$PROJECT)"
    fi
  else
    check "scheduler job $JOB exists" false "not found in $REGION"
    check "scheduler job's last run succeeded" false "no job"
  fi

  verify_models
  verify_monitoring

  if ((FAILED_CHECKS > 0)); then
    die "verify: $FAILED_CHECKS of $CHECKS checks failed"
  fi
  echo "All $CHECKS checks passed."
}

if [[ $MODE == verify ]]; then
  verify
  exit 0
fi

# --- delete --------------------------------------------------------------------------------
DELETE_FAILED=0
# remove CMD...: run (printed); an answer that it is already gone is fine,
# any other failure is shown and counted, and the rest still runs.
remove() {
  show "$@"
  [[ $DRY_RUN == true ]] && return 0
  local err
  if err=$("$@" 2>&1 >/dev/null); then
    return 0
  fi
  if [[ ${err,,} == *"not found"* || ${err,,} == *"does not exist"* || ${err,,} == *"not_found"* ]]; then
    echo "  (already gone)"
  else
    printf '%s\n' "$err" >&2
    DELETE_FAILED=$((DELETE_FAILED + 1))
  fi
}

delete_all() {
  DRY_ASSUME=present
  load_project_bindings
  local fn secret sa role member answer
  detect_bucket
  local bucket=$BUCKET

  cat <<EOF
This deletes meeting-actions ($PREFIX-*) from project $PROJECT ($REGION):
  the functions, the Cloud Scheduler job $JOB, the secrets (the API key, the webhook
  secret, the notification signing secret: the receivers' copy stops verifying), the service
  accounts and every role they hold${bucket:+ (including on gs://$bucket)}, and what tells
  operators: the alert policies, their e-mail channels, the log-based metrics, the dashboard.
It does NOT delete the Firestore data: the meetings in collection $COLLECTION stay, and so
does a TTL policy on expire_at (--retention-days): documents go on expiring.
EOF
  if [[ $ASSUME_YES == false && $DRY_RUN == false ]]; then
    [[ -t 0 ]] || die "--delete asks first; without a terminal, pass --yes"
    read -rp "Delete? Type the project id ($PROJECT) to confirm: " answer
    [[ $answer == "$PROJECT" ]] || die "not confirmed; nothing was deleted"
  fi

  # Policies before the metrics and channels they name.
  delete_monitoring
  if exists gcloud scheduler jobs describe "$JOB" --location="$REGION" --project="$PROJECT"; then
    remove gcloud scheduler jobs delete "$JOB" --location="$REGION" --project="$PROJECT" --quiet
  fi
  for fn in "$FN_WEBHOOK" "$FN_SUBMIT" "$FN_RECOVER" "$FN_STORAGE" "$FN_REGEN"; do
    if exists gcloud functions describe "$fn" --region="$REGION" --project="$PROJECT"; then
      remove gcloud functions delete "$fn" --region="$REGION" --project="$PROJECT" --quiet
    fi
  done
  # A secret's bindings go with it; so do a function's invoker bindings.
  for secret in "$KEY_SECRET" "$HOOK_SECRET" "$NOTIFY_SECRET"; do
    if exists gcloud secrets describe "$secret" --project="$PROJECT"; then
      remove gcloud secrets delete "$secret" --project="$PROJECT" --quiet
    fi
  done
  if [[ -n $bucket ]]; then
    for sa in "$STORAGE_SA" "$LEGACY_SA"; do
      remove gcloud storage buckets remove-iam-policy-binding "gs://$bucket" --member="serviceAccount:$sa" \
        --role=roles/storage.objectViewer --format=none
    done
  else
    echo "  (no bucket known: pass --bucket NAME if the storage trigger was deployed and already deleted)"
  fi
  # Project roles first, then the accounts: a deleted account's bindings
  # would otherwise stay behind as deleted:serviceAccount:... members.
  for sa in "${ALL_SAS[@]}" "$LEGACY_SA"; do
    while read -r role member; do
      [[ $member == "serviceAccount:$sa" ]] || continue
      remove gcloud projects remove-iam-policy-binding "$PROJECT" --member="$member" --role="$role" \
        --all --format=none --quiet
    done <<<"$PROJECT_BINDINGS"
    if exists gcloud iam service-accounts describe "$sa" --project="$PROJECT"; then
      remove gcloud iam service-accounts delete "$sa" --project="$PROJECT" --quiet
    fi
  done

  cat <<EOF

Deleted meeting-actions from $PROJECT ($REGION).
Left in place on purpose:
  - the Firestore database and ALL ITS DATA: the meetings in collection $COLLECTION and the
    upload claims in $COLLECTION-uploads. Delete them in the console if you want them gone:
    https://console.cloud.google.com/firestore/databases/-default-/data/panel/$COLLECTION?project=$PROJECT
  - the TTL policies on expire_at (--retention-days), if any: documents keep expiring. To
    stop that: gcloud firestore fields ttls update expire_at --collection-group=$COLLECTION --disable-ttl
  - the APIs deploy.sh enabled, and the roles of Google's own service agents (Eventarc:
    roles/eventarc.serviceAgent; Cloud Storage: roles/pubsub.publisher), which other triggers
    in the project may rely on.
EOF
  if ((DELETE_FAILED > 0)); then
    die "$DELETE_FAILED step(s) failed (shown above); run ./deploy.sh --delete --yes again"
  fi
}

if [[ $MODE == delete ]]; then
  delete_all
  exit 0
fi

# --- deploy: the API key, settled before anything changes -----------------------------------
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
detect_bucket
render_monitoring

# --- APIs, Firestore ---------------------------------------------------------------------------
run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com \
  cloudbuild.googleapis.com artifactregistry.googleapis.com eventarc.googleapis.com \
  pubsub.googleapis.com firestore.googleapis.com secretmanager.googleapis.com \
  iam.googleapis.com iamcredentials.googleapis.com cloudscheduler.googleapis.com \
  storage.googleapis.com logging.googleapis.com monitoring.googleapis.com --project="$PROJECT"

if ! exists gcloud firestore databases describe --database='(default)' --project="$PROJECT"; then
  run gcloud firestore databases create --database='(default)' --location="$REGION" --type=firestore-native --project="$PROJECT"
fi
# The Firestore trigger must sit where the database is (which may be a
# multi-region such as nam5, when the database was there before).
DB_LOCATION=$REGION
if [[ $DRY_RUN == false ]]; then
  DB_LOCATION=$(gcloud firestore databases describe --database='(default)' --project="$PROJECT" \
    --format='value(locationId)')
  [[ $DB_LOCATION =~ ^[a-z0-9-]+$ ]] || die "could not read the location of the Firestore database"
fi

# --- retention: Firestore deletes a document within about a day after its expire_at -------
# On both collection groups; a policy already there is set again (the same). --delete
# leaves it, with the data.
if [[ -n $RETENTION_DAYS ]]; then
  for group in "$COLLECTION" "$COLLECTION-uploads"; do
    run gcloud firestore fields ttls update expire_at --collection-group="$group" \
      --database='(default)' --enable-ttl --async --project="$PROJECT"
  done
fi

# --- log-based metrics: early, so Cloud Monitoring knows them when the policies come --------
ensure_metrics

# --- identities --------------------------------------------------------------------------------
LEGACY=false
if exists gcloud iam service-accounts describe "$LEGACY_SA" --project="$PROJECT"; then
  LEGACY=true
fi
ensure_sa "$BUILD_SA" "builds the functions"
ensure_sa "$WEBHOOK_SA" "assemblyai_webhook"
ensure_sa "$SUBMIT_SA" "submit_transcription"
ensure_sa "$RECOVER_SA" "recover_meetings (the sweep)"
ensure_sa "$SCHEDULER_SA" "Cloud Scheduler's caller of the sweep"
ensure_sa "$REGEN_SA" "regenerate_action_items"
ensure_sa "$EVENTS_SA" "Eventarc's caller of the event functions"
[[ -n $BUCKET ]] && ensure_sa "$STORAGE_SA" "transcribe_uploaded_audio"

# --- secrets -----------------------------------------------------------------------------------
random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
random_whsec() { printf 'whsec_%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"; }

# ensure_secret NAME DATA LABEL ROTATE: create when absent, add a version when asked.
ensure_secret() {
  local name=$1 data=$2 label=$3 rotate=$4
  if exists gcloud secrets describe "$name" --project="$PROJECT"; then
    if [[ $rotate == true ]]; then
      run_with_stdin "$data" "$label" gcloud secrets versions add "$name" --data-file=- --project="$PROJECT"
    else
      echo "  (secret $name kept)"
      return 1
    fi
  else
    run_with_stdin "$data" "$label" gcloud secrets create "$name" --data-file=- --replication-policy=automatic --project="$PROJECT"
  fi
}

if ensure_secret "$KEY_SECRET" "$API_KEY" "AssemblyAI API key" "$UPDATE_KEY"; then KEY_STORED=true; fi
[[ $ROTATE_SECRET == true ]] && warn_if_rotation_in_progress
if ensure_secret "$HOOK_SECRET" "$(random_hex)" "a newly generated webhook secret" "$ROTATE_SECRET"; then
  HOOK_ROTATED=true
fi
ensure_secret "$NOTIFY_SECRET" "$(random_whsec)" "a newly generated whsec_ signing secret" false || true
settle_hook_versions

# --- least privilege: each identity gets only its own roles ----------------------------------
load_project_bindings
if [[ $DRY_RUN == true ]]; then
  PROJECT_NUMBER="<project-number>"
else
  PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
fi
ensure_project_binding "serviceAccount:$BUILD_SA" roles/cloudbuild.builds.builder
for sa in "$WEBHOOK_SA" "$SUBMIT_SA" "$RECOVER_SA" "$REGEN_SA"; do
  ensure_project_binding "serviceAccount:$sa" roles/datastore.user
done
ensure_project_binding "serviceAccount:$EVENTS_SA" roles/eventarc.eventReceiver
ensure_project_binding "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-eventarc.iam.gserviceaccount.com" \
  roles/eventarc.serviceAgent
grant_secret "$KEY_SECRET" "$WEBHOOK_SA" "$SUBMIT_SA" "$RECOVER_SA" "$REGEN_SA"
grant_secret "$HOOK_SECRET" "$WEBHOOK_SA" "$SUBMIT_SA"
grant_secret "$NOTIFY_SECRET" "$WEBHOOK_SA" "$RECOVER_SA" "$REGEN_SA"
if [[ -n $BUCKET ]]; then
  # Only the storage function reads recordings (this bucket only) and signs
  # URLs for them, through signBlob as itself (Token Creator on itself).
  ensure_project_binding "serviceAccount:$STORAGE_SA" roles/datastore.user
  grant_secret "$KEY_SECRET" "$STORAGE_SA"
  grant_secret "$HOOK_SECRET" "$STORAGE_SA"
  run_retrying gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$STORAGE_SA" \
    --role=roles/storage.objectViewer --format=none
  run_retrying gcloud iam service-accounts add-iam-policy-binding "$STORAGE_SA" \
    --member="serviceAccount:$STORAGE_SA" --role=roles/iam.serviceAccountTokenCreator \
    --project="$PROJECT" --format=none --quiet
  if [[ $DRY_RUN == true ]]; then
    GCS_AGENT="service-<project-number>@gs-project-accounts.iam.gserviceaccount.com"
  else
    GCS_AGENT=$(gcloud storage service-agent --project="$PROJECT")
  fi
  ensure_project_binding "serviceAccount:$GCS_AGENT" roles/pubsub.publisher
fi

# --- functions ---------------------------------------------------------------------------------
S_KEY="ASSEMBLYAI_API_KEY=$KEY_SECRET:latest"
S_HOOK="WEBHOOK_SECRET=$HOOK_SECRET:$HOOK_VERSION"
S_NOTIFY="NOTIFY_SIGNING_SECRET=$NOTIFY_SECRET:latest"
webhook_secrets="$S_KEY,$S_HOOK,$S_NOTIFY"
[[ -n $HOOK_PREVIOUS ]] && webhook_secrets+=",WEBHOOK_SECRET_PREVIOUS=$HOOK_SECRET:$HOOK_PREVIOUS"

# The webhook is public: AssemblyAI cannot present Google credentials; its
# lock is the X-Webhook-Secret header. 80 requests per instance on 80
# threads: most of a delivery is waiting on the gateway. 540 s covers the
# longest gateway call; the code derives its claim (timeout + 60 s) and its
# deadlines from FUNCTION_TIMEOUT_SECONDS. 1 GiB / 80 = 12.8 MiB per meeting
# in flight; a 10-hour meeting holds about 7 (BENCHMARKS.md, "Memory under
# a burst": 80 ten-hour meetings at once peaked at 686 MiB).
deploy_function "$FN_WEBHOOK" assemblyai_webhook "$WEBHOOK_SA" 540 "$webhook_secrets" \
  THREADS=80 -- \
  --trigger-http --allow-unauthenticated --memory=1Gi --cpu=1 --concurrency=80 --max-instances=10
WEBHOOK_URL=$(function_url "$FN_WEBHOOK")

submit_access=--no-allow-unauthenticated
[[ $PUBLIC_SUBMIT == true ]] && submit_access=--allow-unauthenticated
deploy_function "$FN_SUBMIT" submit_transcription "$SUBMIT_SA" 60 "$S_KEY,$S_HOOK" \
  THREADS=20 "WEBHOOK_URL=$WEBHOOK_URL" -- \
  --trigger-http "$submit_access" --memory=256Mi --cpu=1 --concurrency=20
SUBMIT_URL=$(function_url "$FN_SUBMIT")

# The recovery sweep, private, called every minute by Cloud Scheduler as its
# own identity, which may invoke this function and nothing else. One run at
# a time (its batch is sized to the gateway's rate limit: RECOVERY_BATCH).
deploy_function "$FN_RECOVER" recover_meetings "$RECOVER_SA" 540 "$S_KEY,$S_NOTIFY" \
  THREADS=1 -- \
  --trigger-http --no-allow-unauthenticated --memory=512Mi --cpu=1 --concurrency=1 --max-instances=1
RECOVER_URL=$(function_url "$FN_RECOVER")
grant_invoker "$FN_RECOVER" "$SCHEDULER_SA"
job_flags=(--location="$REGION" --schedule='* * * * *' --uri="$RECOVER_URL" --http-method=post
  --oidc-service-account-email="$SCHEDULER_SA" --attempt-deadline=540s --project="$PROJECT")
if exists gcloud scheduler jobs describe "$JOB" --location="$REGION" --project="$PROJECT"; then
  run_retrying gcloud scheduler jobs update http "$JOB" "${job_flags[@]}"
else
  run_retrying gcloud scheduler jobs create http "$JOB" "${job_flags[@]}"
fi

if [[ -n $BUCKET ]]; then
  storage_env=("WEBHOOK_URL=$WEBHOOK_URL")
  [[ -n $AUDIO_PREFIX ]] && storage_env+=("AUDIO_PREFIX=$AUDIO_PREFIX")
  [[ -n $NOTIFY_URL ]] && storage_env+=("NOTIFY_URL=$NOTIFY_URL")
  deploy_function "$FN_STORAGE" transcribe_uploaded_audio "$STORAGE_SA" 540 "$S_KEY,$S_HOOK" \
    THREADS=1 "${storage_env[@]}" -- \
    --trigger-bucket="$BUCKET" --retry --trigger-service-account="$EVENTS_SA" \
    --memory=512Mi --cpu=1 --concurrency=1
  grant_invoker "$FN_STORAGE" "$EVENTS_SA"
elif [[ -n $NOTIFY_URL ]]; then
  echo "  (--notify-url is the storage trigger's default: it needs --bucket, so it is not used)"
fi

# Regenerate from the console: a person sets regenerate: true on a meeting.
deploy_function "$FN_REGEN" regenerate_action_items "$REGEN_SA" 540 "$S_KEY,$S_NOTIFY" \
  THREADS=1 -- \
  --trigger-event-filters=type=google.cloud.firestore.document.v1.updated \
  --trigger-event-filters='database=(default)' \
  --trigger-event-filters-path-pattern="document=$COLLECTION/{id}" \
  --trigger-location="$DB_LOCATION" --retry --trigger-service-account="$EVENTS_SA" \
  --memory=512Mi --cpu=1 --concurrency=1 --max-instances=10
grant_invoker "$FN_REGEN" "$EVENTS_SA"

# --- operators are told: e-mail channels, alert policies, the dashboard (README, Operate) ---
ensure_channels
ensure_policies
ensure_dashboard

# --- the scheduler's first call: waits for its invoker role to propagate --------------------
# Done last, so the deploys above have already given IAM time.
job_state() {
  gcloud scheduler jobs describe "$JOB" --location="$REGION" --project="$PROJECT" \
    --format='value(lastAttemptTime,status.code)'
}
wait_for_scheduler() {
  local before="" last="" code="" attempt=1 delay=$RETRY_BASE waited=0 what
  [[ $DRY_RUN == true ]] || IFS=$'\t' read -r before _ <<<"$(job_state)" || true
  run gcloud scheduler jobs run "$JOB" --location="$REGION" --project="$PROJECT"
  [[ $DRY_RUN == true ]] && return 0
  while :; do
    sleep "$delay"
    waited=$((waited + delay))
    IFS=$'\t' read -r last code <<<"$(job_state)" || true
    if [[ -n $last && $last != "$before" ]]; then
      if [[ -z $code || $code == 0 ]]; then
        echo "  the scheduler's call to $FN_RECOVER succeeded"
        return 0
      fi
      [[ $code == 7 || $code == 16 ]] ||
        die "the scheduler's call to $FN_RECOVER failed (status code $code): gcloud functions logs read $FN_RECOVER --region=$REGION --project=$PROJECT"
      what="the invoker role on $FN_RECOVER to reach the scheduler's calls (refused: $([[ $code == 7 ]] && echo PERMISSION_DENIED || echo UNAUTHENTICATED))"
      before=$last
    else
      what="the scheduler's call to $FN_RECOVER to finish"
    fi
    ((attempt < RETRY_ATTEMPTS)) || give_up "$what" "$attempt" "$waited"
    delay=$(next_delay "$delay")
    echo "  waiting ${delay}s for $what (attempt $attempt of $RETRY_ATTEMPTS)"
    [[ $what == *refused* ]] && run gcloud scheduler jobs run "$JOB" --location="$REGION" --project="$PROJECT"
    attempt=$((attempt + 1))
  done
}
wait_for_scheduler

cat <<EOF

Done. meeting-actions is running in $PROJECT ($REGION).

Submit a recording (callers need roles/run.invoker on $FN_SUBMIT unless --public-submit):
  curl -X POST -H "Authorization: Bearer \$(gcloud auth print-identity-token)" \\
    -H 'Content-Type: application/json' \\
    -d '{"audio_url": "https://example.com/meeting.mp3"}' \\
    $SUBMIT_URL

Watch the meetings arrive in the Firestore console:
  https://console.cloud.google.com/firestore/databases/-default-/data/panel/$COLLECTION?project=$PROJECT

Notifications are signed with the secret $NOTIFY_SECRET (Standard Webhooks, whsec_...).
A receiver gets it with:
  gcloud secrets versions access latest --secret=$NOTIFY_SECRET --project=$PROJECT

Operators: ${#METRIC_NAMES[@]} log-based metrics, the alert policies and the dashboard
"$(display_name_of "$RENDERED/dashboard.json")" (README, Operate):
  https://console.cloud.google.com/monitoring/dashboards?project=$PROJECT
EOF
if ((${#CHANNELS[@]} > 0)); then
  echo "The alerts are e-mailed through ${#CHANNELS[@]} e-mail channel(s) named \"$CHANNEL_PREFIX...\";"
  echo "a rerun keeps them. To stop e-mailing an address, delete its channel (its policies drop it):"
  tell gcloud beta monitoring channels list --filter="type=\"email\" AND userLabels.app=\"$PREFIX\"" \
    --format='value(name,displayName)' --project="$PROJECT"
  tell gcloud beta monitoring channels delete CHANNEL_NAME --force --project="$PROJECT"
else
  echo "The alerts e-mail nobody yet: run ./deploy.sh again with --alert-email ADDRESS."
fi
if [[ $DRY_RUN == true ]]; then
  echo "(dry run: the monitoring files as this deployment gets them are in $RENDERED)"
fi
if [[ -n $BUCKET ]]; then
  echo
  echo "Recordings uploaded to gs://$BUCKET/${AUDIO_PREFIX} start the same pipeline."
fi

if [[ $LEGACY == true ]]; then
  legacy="serviceAccount:$LEGACY_SA"
  echo
  echo "The functions now run as their own service accounts. The account they all shared before,"
  echo "$LEGACY_SA, is left in place with its roles (nothing runs as it any more)."
  echo "When you no longer need it, remove its roles and delete it:"
  tell gcloud functions remove-invoker-policy-binding "$FN_RECOVER" --region="$REGION" --member="$legacy" --project="$PROJECT"
  [[ -n $BUCKET ]] && tell gcloud functions remove-invoker-policy-binding "$FN_STORAGE" --region="$REGION" --member="$legacy" --project="$PROJECT"
  for secret in "$KEY_SECRET" "$HOOK_SECRET"; do
    tell gcloud secrets remove-iam-policy-binding "$secret" --member="$legacy" --role=roles/secretmanager.secretAccessor --project="$PROJECT"
  done
  [[ -n $BUCKET ]] && tell gcloud storage buckets remove-iam-policy-binding "gs://$BUCKET" --member="$legacy" --role=roles/storage.objectViewer
  while read -r role member; do
    [[ $member == "$legacy" ]] || continue
    tell gcloud projects remove-iam-policy-binding "$PROJECT" --member="$legacy" --role="$role" --all
  done <<<"$PROJECT_BINDINGS"
  tell gcloud iam service-accounts delete "$LEGACY_SA" --project="$PROJECT"
  echo "(./deploy.sh --delete also removes it, with everything else.)"
fi

if [[ $DRY_RUN == true ]]; then
  echo
  echo "(dry run: ./deploy.sh --verify runs here after a real deploy)"
else
  verify
fi
