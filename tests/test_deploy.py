"""deploy.sh against a fake gcloud and a fake curl that keep the state of one
project, so a second run sees what the first one created, --delete can be
checked for leftovers, and --verify's checks can be broken one at a time.

The fake is strict where Google is: a function cannot mount a secret its
service account may not read, a trigger needs the Eventarc agent's role, a
build needs the build account's role, a binding needs an existing member.
Propagation delays are injected as the first N calls of a step failing with
Google's own error texts.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "gcloud"
API_KEY = "aai-key-DISTINCTIVE-4f9c2"
PROJECT = "acme-meetings"
P = "meeting-actions"


def sa(name: str) -> str:
    return f"{P}-{name}@{PROJECT}.iam.gserviceaccount.com"


# Google's texts, as gcloud prints them (from real reports of each failure).
SECRET_DENIED = (
    "ERROR: (gcloud.functions.deploy) OperationError: code=7, message=Could not create or update "
    "Cloud Run service {name}, Permission denied on secret: projects/123456789012/secrets/"
    "meeting-actions-webhook-secret/versions/1 for Revision service account {sa}. The service "
    "account used must be granted the 'Secret Manager Secret Accessor' role "
    "(roles/secretmanager.secretAccessor) at the secret, project or higher level."
)
SECRET_ACCESS_DENIED = (
    "ERROR: (gcloud.functions.deploy) OperationError: code=3, message=Could not fetch secret "
    '"projects/123456789012/secrets/meeting-actions-assemblyai-api-key/versions/latest": '
    "Permission 'secretmanager.versions.access' denied for resource "
    "'projects/123456789012/secrets/meeting-actions-assemblyai-api-key/versions/latest' "
    "(or it may not exist)."
)
BUILD_DENIED = (
    "ERROR: (gcloud.functions.deploy) OperationError: code=3, message=Build failed: Could not "
    "build the function due to a missing permission on the build service account. If you didn't "
    "revoke that permission explicitly, this could be caused by a change in the organization "
    "policies. Please refer to the following documentation for more details and resolution: "
    "https://cloud.google.com/functions/docs/troubleshooting#build-service-account"
)
EVENTARC_DENIED = (
    "ERROR: (gcloud.functions.deploy) OperationError: code=9, message=Validation failed for "
    "trigger projects/acme-meetings/locations/us-central1/triggers/{name}-417923: Invalid "
    'resource state for "": Permission denied while using the Eventarc Service Agent. If you '
    "recently started to use Eventarc, it may take a few minutes before all necessary "
    "permissions are propagated to the Service Agent. Otherwise, verify that it has Eventarc "
    "Service Agent role."
)
GCS_PUBLISHER_DENIED = (
    "ERROR: (gcloud.functions.deploy) OperationError: code=7, message=Validation failed for "
    "trigger projects/acme-meetings/locations/us-central1/triggers/{name}-417923: The Cloud "
    "Storage service account for your bucket is unable to publish to Cloud Pub/Sub topics in "
    "the specified project. To use GCS CloudEvent triggers, the GCS service account requires "
    "the Pub/Sub Publisher (roles/pubsub.publisher) IAM role in the specified project."
)
SA_MISSING = (
    'ERROR: Policy modification failed. For a binding with condition, run "gcloud alpha iam '
    'policies lint-condition" to identify issues in condition.\n'
    "ERROR: ({cmd}) INVALID_ARGUMENT: Service account {sa} does not exist."
)

FAKE = r'''
"""Fake gcloud, or fake curl when called as curl: one project's state in JSON.
Only quick imports: it runs some eighty times per deploy."""
import json, os, sys

STATE = os.environ["FAKE_GCLOUD_STATE"]
DB = os.path.join(STATE, "cloud.json")
PROJECT_NUMBER = "123456789012"
COMMANDS = {tuple(c.split()) for c in """
alpha monitoring policies create
alpha monitoring policies delete
alpha monitoring policies list
alpha monitoring policies update
auth print-identity-token
beta monitoring channels create
beta monitoring channels delete
beta monitoring channels list
firestore databases create
firestore databases describe
firestore fields ttls update
functions add-invoker-policy-binding
functions delete
functions deploy
functions describe
functions remove-invoker-policy-binding
iam service-accounts add-iam-policy-binding
iam service-accounts create
iam service-accounts delete
iam service-accounts describe
logging metrics create
logging metrics delete
logging metrics describe
logging metrics update
monitoring dashboards create
monitoring dashboards delete
monitoring dashboards list
monitoring dashboards update
projects add-iam-policy-binding
projects describe
projects get-iam-policy
projects remove-iam-policy-binding
scheduler jobs create http
scheduler jobs delete
scheduler jobs describe
scheduler jobs run
scheduler jobs update http
secrets add-iam-policy-binding
secrets create
secrets delete
secrets describe
secrets versions access
secrets versions add
secrets versions list
services enable
storage buckets add-iam-policy-binding
storage buckets remove-iam-policy-binding
storage service-agent
""".strip().splitlines()}


def load():
    if os.path.exists(DB):
        with open(DB) as f:
            return json.load(f)
    return {"project_bindings": [], "secrets": {}, "sas": {}, "functions": {}, "jobs": {},
            "buckets": {}, "db": None, "faults": {}, "broken": [], "clock": 0}


state = load()
for kind in ("metrics", "channels", "policies", "dashboards"):
    state.setdefault(kind, {})
state.setdefault("ids", 0)
# The LLM Gateway's GET /v1/models (the list documented late 2026); status 200 or the error.
state.setdefault("gateway", {"status": 200, "models": [
    "claude-opus-4-7", "claude-opus-4-6", "claude-sonnet-4-6", "claude-opus-4-5-20251101",
    "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "gemini-3.5-flash",
    "gemini-3-flash-preview", "gpt-5.5"]})
# Secrets the account running deploy.sh may not read (secretmanager.versions.access).
state.setdefault("unreadable_secrets", [])


def save():
    with open(DB, "w") as f:
        json.dump(state, f)


def fail(message, code=1):
    print(message, file=sys.stderr)
    save()
    sys.exit(code)


def now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_dict(value):
    delim = ","
    if value.startswith("^"):
        end = value.index("^", 1)
        delim, value = value[1:end], value[end + 1:]
    out = {}
    for item in value.split(delim):
        key, _, val = item.partition("=")
        out[key] = val
    return out


def fault(kind, **fmt):
    f = state["faults"].get(kind)
    if f and f["left"] > 0:
        f["left"] -= 1
        messages = f["messages"]
        message = messages[min(f["used"], len(messages) - 1)]
        f["used"] += 1
        fail(message.format(**fmt))


def sa_exists(member):
    email = member.split(":", 1)[1]
    if not email.endswith(".iam.gserviceaccount.com") or "@" + state.get("project", "") not in email:
        return True  # a Google service agent, or another project's
    return email in state["sas"]


def api_key():
    """The stored AssemblyAI API key (the newest version), as the gateway would accept it."""
    for name, secret in state["secrets"].items():
        if name.endswith("-assemblyai-api-key") and secret["versions"]:
            return secret["versions"][-1]["data"]


def curl():
    from urllib.parse import urlparse

    args = sys.argv[1:]
    opts = {"-X": "GET", "-o": None, "-w": ""}
    headers, from_stdin, body, url, i = [], [], None, "", 0
    while i < len(args):
        a = args[i]
        if a in ("-X", "-H", "--data-binary", "-o", "-w", "--max-time") and i + 1 < len(args):
            value = args[i + 1]; i += 2
            if a == "-H" and value == "@-":
                from_stdin = sys.stdin.read().splitlines()
                headers += from_stdin
            elif a == "-H":
                headers.append(value)
            elif a == "--data-binary":
                body = value
            else:
                opts[a] = value
        elif a == "-sS":
            i += 1
        elif a.startswith("-"):
            print(f"curl: option {a}: is unknown (fake)", file=sys.stderr)
            sys.exit(2)
        else:
            url = a; i += 1
    method = opts["-X"]
    # Recorded with the stored API key blanked: the tests look for it everywhere else.
    key = api_key()
    blank = lambda lines: [h.replace(key, "<the stored API key>") if key else h for h in lines]
    with open(os.path.join(STATE, "curl.jsonl"), "a") as log:
        log.write(json.dumps({"argv": args, "url": url, "headers": blank(headers),
                              "from_stdin": blank(from_stdin)}) + "\n")

    def answer(status, text=""):
        if opts["-o"] != "/dev/null":
            sys.stdout.write(text)
        sys.stdout.write(opts["-w"].replace("%{http_code}", str(status)).replace("\\n", "\n"))
        save()
        sys.exit(6 if status == "000" else 0)

    header = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in headers}
    where = urlparse(url)
    if where.hostname in ("llm-gateway.assemblyai.com", "llm-gateway.eu.assemblyai.com"):
        gateway = state["gateway"]
        if (method, where.path) != ("GET", "/v1/models"):
            answer(404, '{"error": "not found (fake: only GET /v1/models)"}')
        if not key or header.get("authorization") != key or gateway["status"] == 401:
            answer(401, '{"error": "Authentication error, API token missing/invalid", '
                        '"status": "error"}')
        if gateway["status"] != 200:
            answer(gateway["status"], '{"error": {"code": "unavailable", "message": "try later"}}')
        answer(200, json.dumps({"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": "assemblyai"} for m in gateway["models"]]},
            separators=(",", ":")))
    name = (where.hostname or "").split("-abc123")[0]
    fn = state["functions"].get(name)
    if fn is None:
        answer("000")
    broken = set(state["broken"])
    auth = any(h.lower().startswith("authorization: bearer ") for h in headers)
    header = {h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in headers}
    if not fn["public"] and not auth:
        status = 403
    elif fn["entry"] == "assemblyai_webhook":
        ref = fn["secrets"].get("WEBHOOK_SECRET", "")
        secret_name, _, version = ref.partition(":")
        versions = state["secrets"].get(secret_name, {}).get("versions", [])
        if version == "latest":
            version = str(versions[-1]["n"]) if versions else ""
        current = [v["data"] for v in versions if str(v["n"]) == version]
        if method != "POST":
            status = 200 if "webhook-allows-get" in broken else 405
        elif not current:
            status = 500
        elif "webhook-accepts-any-secret" in broken:
            status = 200
        else:
            status = 200 if header.get("x-webhook-secret") == current[0] else 401
    elif fn["entry"] == "submit_transcription":
        if "submit-misconfigured" in broken:
            status = 500
        elif method != "POST":
            status = 405
        else:
            status = 400 if not (body or "").strip() else 202
    else:
        status = 404
    answer(status)


def gcloud():
    args = sys.argv[1:]
    stdin = sys.stdin.read() if "--data-file=-" in args else None
    with open(os.path.join(STATE, "calls.jsonl"), "a") as log:
        log.write(json.dumps({"argv": args, "stdin": stdin}) + "\n")
    words = [a for a in args if not a.startswith("--")]
    flags = {}
    for a in args:
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            flags.setdefault(key, []).append(val if eq else None)
    flag = lambda k: flags.get(k, [None])[-1]
    path = max((n for n in range(1, 5) if tuple(words[:n]) in COMMANDS), default=0)
    if not path:
        fail(f"ERROR: (gcloud) Invalid choice: {' '.join(words)}", 2)
    cmd, pos = " ".join(words[:path]), words[path:]
    project = flag("project")
    if project:
        state["project"] = project
    fmt = flag("format")

    if cmd.endswith("add-iam-policy-binding") or cmd == "functions add-invoker-policy-binding":
        member = flag("member")
        if member.startswith("serviceAccount:"):
            email = member.split(":", 1)[1]
            fault("binding", cmd="gcloud." + cmd.replace(" ", "."), sa=email)
            if not sa_exists(member):
                fail(f"ERROR: ({'gcloud.' + cmd.replace(' ', '.')}) INVALID_ARGUMENT: "
                     f"Service account {email} does not exist.")

    def bindings_of(kind, name):
        if kind == "project":
            return state["project_bindings"]
        if kind == "secret":
            s = state["secrets"].get(name) or fail(f"ERROR: NOT_FOUND: Secret [{name}] not found.")
            return s["bindings"]
        if kind == "sa":
            s = state["sas"].get(name) or fail(f"ERROR: PERMISSION_DENIED: {name} does not exist.")
            return s["bindings"]
        if kind == "bucket":
            return state["buckets"].setdefault(name, [])
        if kind == "function":
            f = state["functions"].get(name) or fail(f"ERROR: NOT_FOUND: function {name}")
            return f["invokers"]

    def add(kind, name, role):
        b = bindings_of(kind, name)
        if [role, flag("member")] not in b:
            b.append([role, flag("member")])

    def remove(kind, name, role):
        b = bindings_of(kind, name)
        if [role, flag("member")] not in b:
            fail("ERROR: Policy binding with the specified principal, role, and condition not found!")
        b.remove([role, flag("member")])

    if cmd.startswith(("logging metrics", "beta monitoring", "alpha monitoring", "monitoring ")):
        monitoring(cmd, pos, flags, flag, fmt, project)
    elif cmd == "services enable":
        pass
    elif cmd == "auth print-identity-token":
        print("fake-identity-token")
    elif cmd == "firestore databases describe":
        if state["db"] is None:
            fail("ERROR: (gcloud.firestore.databases.describe) NOT_FOUND: database (default)")
        if fmt == "value(locationId)":
            print(state["db"]["locationId"])
        elif fmt:
            fail(f"fake: unsupported format {fmt}", 3)
    elif cmd == "firestore databases create":
        state["db"] = {"locationId": flag("location")}
    elif cmd == "firestore fields ttls update":
        state["db"] is not None or fail("ERROR: NOT_FOUND: database (default)")
        ("--enable-ttl" in args) != ("--disable-ttl" in args) or fail("fake: one of the TTL flags", 2)
        state.setdefault("ttls", {})[f"{flag('collection-group')}/{pos[0]}"] = "--enable-ttl" in args
    elif cmd == "iam service-accounts describe":
        pos[0] in state["sas"] or fail(f"ERROR: PERMISSION_DENIED: {pos[0]} does not exist.")
    elif cmd == "iam service-accounts create":
        state["sas"][f"{pos[0]}@{project}.iam.gserviceaccount.com"] = {"bindings": []}
    elif cmd == "iam service-accounts delete":
        state["sas"].pop(pos[0], None) or fail(f"ERROR: PERMISSION_DENIED: {pos[0]} does not exist.")
    elif cmd == "iam service-accounts add-iam-policy-binding":
        add("sa", pos[0], flag("role"))
    elif cmd == "projects get-iam-policy":
        assert fmt == "value(bindings.role,bindings.members)", fmt
        for role, member in state["project_bindings"]:
            print(f"{role}\t{member}")
    elif cmd == "projects add-iam-policy-binding":
        add("project", None, flag("role"))
    elif cmd == "projects remove-iam-policy-binding":
        remove("project", None, flag("role"))
    elif cmd == "projects describe":
        assert fmt == "value(projectNumber)", fmt
        print(PROJECT_NUMBER)
    elif cmd == "storage service-agent":
        print(f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com")
    elif cmd == "storage buckets add-iam-policy-binding":
        add("bucket", pos[0], flag("role"))
    elif cmd == "storage buckets remove-iam-policy-binding":
        remove("bucket", pos[0], flag("role"))
    elif cmd == "secrets describe":
        pos[0] in state["secrets"] or fail(f"ERROR: NOT_FOUND: Secret [{pos[0]}] not found.")
    elif cmd == "secrets create":
        if pos[0] in state["secrets"]:
            fail("ERROR: ALREADY_EXISTS")
        state["secrets"][pos[0]] = {"versions": [], "bindings": []}
        state["secrets"][pos[0]]["versions"].append(
            {"n": 1, "createTime": now(), "state": "ENABLED", "data": stdin})
    elif cmd == "secrets versions add":
        versions = state["secrets"][pos[0]]["versions"]
        versions.append({"n": len(versions) + 1, "createTime": now(), "state": "ENABLED",
                         "data": stdin})
    elif cmd == "secrets versions list":
        assert flag("filter") == "state:ENABLED" and flag("sort-by") == "~createTime", args
        assert fmt == "value(name.basename(),createTime)", fmt
        versions = [v for v in state["secrets"][pos[0]]["versions"] if v["state"] == "ENABLED"]
        versions.sort(key=lambda v: v["createTime"], reverse=True)
        for v in versions[: int(flag("limit") or 100)]:
            print(f"{v['n']}\t{v['createTime']}")
    elif cmd == "secrets versions access":
        unknown = sorted(set(flags) - {"secret", "project"})
        if unknown or len(pos) != 1:
            fail(f"ERROR: (gcloud.secrets.versions.access) unrecognized arguments: {unknown} {pos}", 2)
        name = flag("secret")
        if name in state["unreadable_secrets"] or name not in state["secrets"]:
            fail(f"ERROR: (gcloud.secrets.versions.access) PERMISSION_DENIED: Permission "
                 f"'secretmanager.versions.access' denied for resource 'projects/{project}/secrets/"
                 f"{name}/versions/{pos[0]}' (or it may not exist).")
        versions = state["secrets"][name]["versions"]
        print(versions[-1]["data"] if pos[0] == "latest" else versions[int(pos[0]) - 1]["data"])
    elif cmd == "secrets delete":
        state["secrets"].pop(pos[0], None)
    elif cmd == "secrets add-iam-policy-binding":
        add("secret", pos[0], flag("role"))
    elif cmd == "secrets remove-iam-policy-binding":
        remove("secret", pos[0], flag("role"))
    elif cmd == "functions describe":
        fn = state["functions"].get(pos[0]) or fail(f"ERROR: NOT_FOUND: function {pos[0]}")
        if fmt == "value(serviceConfig.uri)":
            print(f"https://{pos[0]}-abc123-uc.a.run.app")
        elif fmt == "value(state)":
            print(fn["state"])
        elif fmt == "value(eventTrigger.eventFilters[0].value)":
            print(fn.get("bucket") or "")
        elif fmt and fmt.startswith('value[separator="|"](') and fmt.endswith(")"):
            keys, env = fmt[len('value[separator="|"]('):-1].split(","), "serviceConfig.environmentVariables."
            all(k.startswith(env) for k in keys) or fail(f"fake: unsupported format {fmt}", 3)
            print("|".join(fn["env"].get(k[len(env):], "") for k in keys))
        elif fmt:
            fail(f"fake: unsupported format {fmt}", 3)
    elif cmd == "functions deploy":
        deploy(pos[0], flags, flag)
    elif cmd == "functions delete":
        state["functions"].pop(pos[0], None) or fail(f"ERROR: NOT_FOUND: function {pos[0]}")
    elif cmd == "functions add-invoker-policy-binding":
        add("function", pos[0], "roles/run.invoker")
    elif cmd == "functions remove-invoker-policy-binding":
        remove("function", pos[0], "roles/run.invoker")
    elif cmd in ("scheduler jobs create http", "scheduler jobs update http"):
        exists = pos[0] in state["jobs"]
        if exists != cmd.endswith("update http"):
            fail("ERROR: ALREADY_EXISTS" if exists else "ERROR: NOT_FOUND")
        job = state["jobs"].setdefault(pos[0], {"last": "", "code": ""})
        job.update(uri=flag("uri"), oidc=flag("oidc-service-account-email"), argv=args)
    elif cmd == "scheduler jobs describe":
        job = state["jobs"].get(pos[0]) or fail(f"ERROR: NOT_FOUND: Job {pos[0]}")
        if fmt == "value(lastAttemptTime,status.code)":
            print(f"{job['last']}\t{job['code']}")
        elif fmt:
            fail(f"fake: unsupported format {fmt}", 3)
    elif cmd == "scheduler jobs run":
        job = state["jobs"].get(pos[0]) or fail(f"ERROR: NOT_FOUND: Job {pos[0]}")
        state["clock"] += 1
        job["last"] = f"2026-03-01T00:{state['clock'] // 60:02d}:{state['clock'] % 60:02d}Z"
        target = [f for n, f in state["functions"].items()
                  if job["uri"] == f"https://{n}-abc123-uc.a.run.app"]
        f = state["faults"].get("scheduler")
        if f and f["left"] > 0:
            f["left"] -= 1
            job["code"] = "7"
        elif not target:
            job["code"] = "5"
        elif ["roles/run.invoker", "serviceAccount:" + job["oidc"]] not in target[0]["invokers"]:
            job["code"] = "7"
        else:
            job["code"] = ""
    elif cmd == "scheduler jobs delete":
        state["jobs"].pop(pos[0], None) or fail(f"ERROR: NOT_FOUND: Job {pos[0]}")
    save()


def new_id():
    state["ids"] += 1
    return str(1000 + state["ids"])


def read_config(flag_value):
    """A --*-from-file the way gcloud reads it: the file must be there, as JSON (ours are)."""
    with open(flag_value) as f:
        return json.load(f)


def listed(items, flags, fmt, columns):
    """A list command: --filter of terms key="value" joined by AND (what deploy.sh uses),
    --format=value(...) of the given columns."""
    import re

    terms = []
    for expr in flags.get("filter", [None])[-1:]:
        if expr is None:
            continue
        for term in expr.split(" AND "):
            m = re.fullmatch(r'([A-Za-z.]+)="([^"]*)"', term.strip())
            if not m:
                fail(f"fake: unsupported filter {expr!r}", 3)
            terms.append((m.group(1), m.group(2)))
    if fmt != f"value({','.join(columns)})":
        fail(f"fake: unsupported format {fmt}", 3)

    def get(item, key):
        for part in key.split("."):
            item = item.get(part) if isinstance(item, dict) else None
        return item

    for item in items:
        if all(get(item, k) == v for k, v in terms):
            print("\t".join(str(get(item, c) or "") for c in columns))


def metric_types(policy):
    import re

    found = set()
    for c in policy.get("conditions", []):
        for kind in ("conditionThreshold", "conditionAbsent"):
            found |= set(re.findall(r'metric\.type="([^"]+)"', (c.get(kind) or {}).get("filter", "")))
    return found


def monitoring(cmd, pos, flags, flag, fmt, project):
    """Cloud Monitoring and log-based metrics, as strict as Google where deploy.sh relies on it."""
    metrics, channels = state["metrics"], state["channels"]
    policies, dashboards = state["policies"], state["dashboards"]
    if cmd in ("logging metrics create", "logging metrics update"):
        exists = pos[0] in metrics
        if exists != cmd.endswith("update"):
            fail("ERROR: ALREADY_EXISTS: metric " + pos[0] if exists else "ERROR: NOT_FOUND: metric " + pos[0])
        config = read_config(flag("config-from-file"))
        labels = config.get("metricDescriptor", {}).get("labels", [])
        if len(labels) != len(config.get("labelExtractors", {})):
            fail("ERROR: (gcloud.logging.metrics.create) INVALID_ARGUMENT: Number of label "
                 "descriptors must match number of label extractors")
        metrics[pos[0]] = config
    elif cmd == "logging metrics describe":
        pos[0] in metrics or fail(f"ERROR: NOT_FOUND: Metric {pos[0]} does not exist.")
    elif cmd == "logging metrics delete":
        metrics.pop(pos[0], None) or fail(f"ERROR: NOT_FOUND: Metric {pos[0]} does not exist.")
    elif cmd == "beta monitoring channels create":
        assert flag("type") == "email", flags
        name = f"projects/{project}/notificationChannels/{new_id()}"
        channels[name] = {"name": name, "type": "email", "displayName": flag("display-name"),
                          "labels": parse_dict(flag("channel-labels")),
                          "userLabels": parse_dict(flag("user-labels")),
                          "description": flag("description")}
        if fmt != "value(name)":
            fail(f"fake: unsupported format {fmt}", 3)
        print(name)
    elif cmd == "beta monitoring channels list":
        listed(list(channels.values()), flags, fmt, ["name", "displayName"])
    elif cmd == "beta monitoring channels delete":
        channels.pop(pos[0], None) or fail(f"ERROR: NOT_FOUND: channel {pos[0]}")
        using = [p for p in policies.values() if pos[0] in p["notificationChannels"]]
        if using and "force" not in flags:
            fail(f"ERROR: FAILED_PRECONDITION: channel {pos[0]} is used by {len(using)} policies")
        for p in using:
            p["notificationChannels"].remove(pos[0])
    elif cmd in ("alpha monitoring policies create", "alpha monitoring policies update"):
        if cmd.endswith("update") and pos[0] not in policies:
            fail(f"ERROR: NOT_FOUND: policy {pos[0]}")
        fault("metric")
        policy = read_config(flag("policy-from-file"))
        for t in sorted(metric_types(policy)):
            if t.removeprefix("logging.googleapis.com/user/") not in metrics:
                fail(f"ERROR: (gcloud.{cmd.replace(' ', '.')}) NOT_FOUND: Cannot find metric(s) that "
                     f'match type = "{t}". If a metric was created recently, it could take up to '
                     f"10 minutes to become available. Please try again soon.")
        chans = list(policy.get("notificationChannels", []))
        for key in ("notification-channels", "set-notification-channels"):
            if flag(key):
                chans = flag(key).split(",")
        if "clear-notification-channels" in flags:
            chans = []
        for c in chans:
            c in channels or fail(f"ERROR: NOT_FOUND: notification channel {c}")
        name = pos[0] if cmd.endswith("update") else f"projects/{project}/alertPolicies/{new_id()}"
        policies[name] = {**policy, "name": name, "notificationChannels": chans}
    elif cmd == "alpha monitoring policies list":
        listed(list(policies.values()), flags, fmt, ["name", "displayName"])
    elif cmd == "alpha monitoring policies delete":
        policies.pop(pos[0], None) or fail(f"ERROR: NOT_FOUND: policy {pos[0]}")
    elif cmd in ("monitoring dashboards create", "monitoring dashboards update"):
        config = read_config(flag("config-from-file"))
        if cmd.endswith("create"):
            if "etag" in config or "name" in config:
                fail("ERROR: INVALID_ARGUMENT: a new dashboard has no name or etag")
            name = f"projects/{PROJECT_NUMBER}/dashboards/{new_id()}"
        else:
            name = pos[0]
            old = dashboards.get(name) or fail(f"ERROR: NOT_FOUND: dashboard {name}")
            if config.get("etag", old["etag"]) != old["etag"]:
                fail("ERROR: ABORTED: the dashboard changed since its etag was read")
        dashboards[name] = {**config, "name": name, "etag": "e" + new_id(),
                            "updated_with_etag": "etag" in config}
    elif cmd == "monitoring dashboards list":
        listed(list(dashboards.values()), flags, fmt, ["name", "displayName", "etag"])
    elif cmd == "monitoring dashboards delete":
        dashboards.pop(pos[0], None) or fail(f"ERROR: NOT_FOUND: dashboard {pos[0]}")
    else:
        fail(f"fake: {cmd} is not faked", 3)


def can_read(member, secret):
    grants = state["secrets"].get(secret, {}).get("bindings", []) + state["project_bindings"]
    return ["roles/secretmanager.secretAccessor", member] in grants


def deploy(name, flags, flag):
    event = bool(flag("trigger-bucket") or flags.get("trigger-event-filters"))
    fault("trigger" if event else "http", name=name, sa=flag("service-account"))
    fault("deploy", name=name, sa=flag("service-account"))
    member = "serviceAccount:" + flag("service-account")
    if not sa_exists(member):
        fail(f"ERROR: (gcloud.functions.deploy) INVALID_ARGUMENT: Service account {member[15:]} does not exist.")
    build = (flag("build-service-account") or "").rsplit("/", 1)[-1]
    if ["roles/cloudbuild.builds.builder", "serviceAccount:" + build] not in state["project_bindings"]:
        fail("ERROR: (gcloud.functions.deploy) OperationError: code=3, message=Build failed: Could not "
             "build the function due to a missing permission on the build service account.")
    secrets = parse_dict(flag("set-secrets") or "")
    for env, ref in secrets.items():
        secret, _, version = ref.partition(":")
        if not can_read(member, secret):
            fail(f"ERROR: (gcloud.functions.deploy) OperationError: code=7, message=Permission denied "
                 f"on secret: projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{version} for "
                 f"Revision service account {member[15:]}. The service account used must be granted "
                 f"the 'Secret Manager Secret Accessor' role (roles/secretmanager.secretAccessor) at "
                 f"the secret, project or higher level.")
    if event:
        agent = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-eventarc.iam.gserviceaccount.com"
        trigger_sa = "serviceAccount:" + (flag("trigger-service-account") or "")
        if ["roles/eventarc.serviceAgent", agent] not in state["project_bindings"]:
            fail("ERROR: (gcloud.functions.deploy) OperationError: code=9, message=Permission denied "
                 "while using the Eventarc Service Agent.")
        if not sa_exists(trigger_sa) or ["roles/eventarc.eventReceiver", trigger_sa] not in state["project_bindings"]:
            fail("ERROR: (gcloud.functions.deploy) PERMISSION_DENIED: Permission "
                 "\"eventarc.events.receiveEvent\" denied on " + trigger_sa)
    if flag("trigger-bucket"):
        gcs = f"serviceAccount:service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
        if ["roles/pubsub.publisher", gcs] not in state["project_bindings"]:
            fail("ERROR: (gcloud.functions.deploy) The Cloud Storage service account for your bucket "
                 "is unable to publish to Cloud Pub/Sub topics in the specified project.")
    old = state["functions"].get(name, {})
    public = old.get("public", False)
    if "allow-unauthenticated" in flags:
        public = True
    if "no-allow-unauthenticated" in flags:
        public = False
    state["functions"][name] = {
        "argv": sys.argv[1:], "entry": flag("entry-point"), "sa": flag("service-account"),
        "public": public, "invokers": old.get("invokers", []), "state": "ACTIVE",
        "bucket": flag("trigger-bucket"), "secrets": secrets,
        "env": parse_dict(flag("set-env-vars") or ""),
    }


if os.path.basename(sys.argv[0]) == "curl":
    curl()
else:
    gcloud()
'''


def parse_dict(value: str) -> dict[str, str]:
    """A gcloud dict flag's value, with its alternate delimiter if any."""
    delim = ","
    if value.startswith("^"):
        end = value.index("^", 1)
        delim, value = value[1:end], value[end + 1 :]
    return dict(item.partition("=")[::2] for item in value.split(delim))


class Cloud:
    """The fake project: run deploy.sh against it, read and edit its state."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for tool in ("gcloud", "curl"):
            (self.bin / tool).write_text(f"#!{sys.executable} -S{FAKE}")
            (self.bin / tool).chmod(0o755)
        self.dir = tmp_path / "state"
        self.dir.mkdir()
        self.curl_calls: list[dict] = []
        self.state = {
            "project_bindings": [],
            "secrets": {},
            "sas": {},
            "functions": {},
            "jobs": {},
            "buckets": {},
            "db": None,
            "faults": {},
            "broken": [],
            "clock": 0,
            "metrics": {},
            "channels": {},
            "policies": {},
            "dashboards": {},
            "ids": 0,
        }

    @property
    def state(self) -> dict:
        path = self.dir / "cloud.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @state.setter
    def state(self, value: dict) -> None:
        (self.dir / "cloud.json").write_text(json.dumps(value))

    def edit(self, change) -> None:
        s = self.state
        change(s)
        self.state = s

    def fault(self, kind: str, left: int, *messages: str) -> None:
        def change(s):
            s.setdefault("faults", {})[kind] = {"left": left, "used": 0, "messages": list(messages)}

        self.edit(change)

    def __call__(
        self,
        *args: str,
        key: str | None = API_KEY,
        project: str | None = PROJECT,
        env: dict[str, str] | None = None,
    ):
        environ = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_GCLOUD_STATE": str(self.dir),
            "HOME": str(self.tmp),
            "TMPDIR": str(self.tmp),
            "DEPLOY_RETRY_BASE_SECONDS": "0",
            **(env or {}),
        }
        if key:
            environ["ASSEMBLYAI_API_KEY"] = key
        if project:
            environ["GOOGLE_CLOUD_PROJECT"] = project
        done = subprocess.run(
            ["bash", str(ROOT / "deploy.sh"), *args],
            env=environ,
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        calls = []
        for name, into in (("calls.jsonl", calls), ("curl.jsonl", None)):
            log = self.dir / name
            lines = (
                [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            )
            log.unlink(missing_ok=True)
            if into is None:
                self.curl_calls = lines
            else:
                into.extend(lines)
        return done, calls


@pytest.fixture
def gcloud(tmp_path) -> Cloud:
    return Cloud(tmp_path)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> dict:
    """The state after one full deploy (bucket, notify URL), to start other tests from."""
    cloud = Cloud(tmp_path_factory.mktemp("deployed"))
    done, calls = cloud(
        "--bucket", "acme-recordings", "--notify-url", "https://hooks.acme.test/done"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {"state": cloud.state, "stdout": done.stdout, "stderr": done.stderr, "calls": calls}


def argv(calls, *prefix: str) -> list[list[str]]:
    return [c["argv"] for c in calls if c["argv"][: len(prefix)] == list(prefix)]


def deploys(calls) -> dict[str, list[str]]:
    return {a[2]: a for a in argv(calls, "functions", "deploy")}


def flag(args: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return values[-1] if values else None


MUTATING = (
    "create",
    "deploy",
    "add",
    "add-iam-policy-binding",
    "add-invoker-policy-binding",
    "enable",
    "update",
    "delete",
    "remove-iam-policy-binding",
    "run",
)

ENTRY = {
    f"{P}-webhook": "assemblyai_webhook",
    f"{P}-submit": "submit_transcription",
    f"{P}-recover": "recover_meetings",
    f"{P}-storage": "transcribe_uploaded_audio",
    f"{P}-regenerate": "regenerate_action_items",
}
KEY = f"{P}-assemblyai-api-key"
# What tells operators (monitoring/): metric names, policy and dashboard display names.
MONITORING = ROOT / "monitoring"
METRICS = {f"{P}-{f.stem}" for f in (MONITORING / "metrics").glob("*.json")}
POLICIES = {
    json.loads(f.read_text())["displayName"].replace("@PREFIX@", P)
    for f in (MONITORING / "policies").glob("*.json")
}
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text())["displayName"].replace(
    "@PREFIX@", P
)
OPS, ONCALL = "ops@acme.test", "oncall@acme.test"
METRIC_UNKNOWN = (
    "ERROR: (gcloud.alpha.monitoring.policies.create) NOT_FOUND: Cannot find metric(s) that "
    f'match type = "logging.googleapis.com/user/{P}-operator-failures". If a metric was created '
    "recently, it could take up to 10 minutes to become available. Please try again soon."
)
HOOK = f"{P}-webhook-secret"
NOTIFY = f"{P}-notify-signing-secret"
GCS_AGENT = "serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com"
EVENTARC_AGENT = "serviceAccount:service-123456789012@gcp-sa-eventarc.iam.gserviceaccount.com"

# Every identity deploy creates, and every role it holds anywhere: the
# README's table. (kind, resource, role)
ROLES = {
    sa("build"): {("project", "", "roles/cloudbuild.builds.builder")},
    sa("webhook"): {
        ("project", "", "roles/datastore.user"),
        ("secret", KEY, "roles/secretmanager.secretAccessor"),
        ("secret", HOOK, "roles/secretmanager.secretAccessor"),
        ("secret", NOTIFY, "roles/secretmanager.secretAccessor"),
    },
    sa("submit"): {
        ("project", "", "roles/datastore.user"),
        ("secret", KEY, "roles/secretmanager.secretAccessor"),
        ("secret", HOOK, "roles/secretmanager.secretAccessor"),
    },
    sa("recover"): {
        ("project", "", "roles/datastore.user"),
        ("secret", KEY, "roles/secretmanager.secretAccessor"),
        ("secret", NOTIFY, "roles/secretmanager.secretAccessor"),
    },
    sa("scheduler"): {("function", f"{P}-recover", "roles/run.invoker")},
    sa("storage"): {
        ("project", "", "roles/datastore.user"),
        ("secret", KEY, "roles/secretmanager.secretAccessor"),
        ("secret", HOOK, "roles/secretmanager.secretAccessor"),
        ("bucket", "gs://acme-recordings", "roles/storage.objectViewer"),
        ("sa", sa("storage"), "roles/iam.serviceAccountTokenCreator"),
    },
    sa("regen"): {
        ("project", "", "roles/datastore.user"),
        ("secret", KEY, "roles/secretmanager.secretAccessor"),
        ("secret", NOTIFY, "roles/secretmanager.secretAccessor"),
    },
    sa("events"): {
        ("project", "", "roles/eventarc.eventReceiver"),
        ("function", f"{P}-storage", "roles/run.invoker"),
        ("function", f"{P}-regenerate", "roles/run.invoker"),
    },
}


def all_bindings(state: dict) -> set[tuple[str, str, str, str]]:
    """Every (member, kind, resource, role) in the fake project."""
    out = {(m, "project", "", r) for r, m in state["project_bindings"]}
    for kind, items in (("secret", state["secrets"]), ("sa", state["sas"])):
        for name, item in items.items():
            out |= {(m, kind, name, r) for r, m in item["bindings"]}
    for name, fn in state["functions"].items():
        out |= {(m, "function", name, r) for r, m in fn["invokers"]}
    for name, bindings in state["buckets"].items():
        out |= {(m, "bucket", name, r) for r, m in bindings}
    return out


def roles_of(state: dict, email: str) -> set[tuple[str, str, str]]:
    return {b[1:] for b in all_bindings(state) if b[0] == f"serviceAccount:{email}"}


# --- a first deploy ----------------------------------------------------------------------------


def test_first_run_deploys_every_function_with_its_own_identity(deployed):
    calls, stdout, stderr = deployed["calls"], deployed["stdout"], deployed["stderr"]
    fns = deploys(calls)
    assert set(fns) == set(ENTRY)
    order = [" ".join(c["argv"][:3]) for c in calls]
    assert order.index(f"functions deploy {P}-webhook") < order.index(
        f"functions describe {P}-webhook"
    )
    assert order.index(f"functions describe {P}-webhook") < order.index(
        f"functions deploy {P}-submit"
    )
    identity = {
        f"{P}-webhook": sa("webhook"),
        f"{P}-submit": sa("submit"),
        f"{P}-recover": sa("recover"),
        f"{P}-storage": sa("storage"),
        f"{P}-regenerate": sa("regen"),
    }
    for name, args in fns.items():
        assert "--gen2" in args and "--runtime=python312" in args and "--region=us-central1" in args
        assert f"--entry-point={ENTRY[name]}" in args
        assert flag(args, "service-account") == identity[name]
        assert (
            flag(args, "build-service-account")
            == f"projects/{PROJECT}/serviceAccounts/{sa('build')}"
        )
        assert ("--allow-unauthenticated" in args) == (name == f"{P}-webhook")
    env = {name: parse_dict(flag(args, "set-env-vars")) for name, args in fns.items()}
    assert env[f"{P}-submit"]["WEBHOOK_URL"] == f"https://{P}-webhook-abc123-uc.a.run.app"
    assert env[f"{P}-storage"]["WEBHOOK_URL"] == f"https://{P}-webhook-abc123-uc.a.run.app"
    assert env[f"{P}-storage"]["NOTIFY_URL"] == "https://hooks.acme.test/done"
    assert all("NOTIFY_URL" not in e for n, e in env.items() if n != f"{P}-storage")

    storage = fns[f"{P}-storage"]
    assert "--trigger-bucket=acme-recordings" in storage and "--retry" in storage
    assert flag(storage, "trigger-service-account") == sa("events")
    job = deployed["state"]["jobs"][f"{P}-recover"]
    assert job["oidc"] == sa("scheduler") and job["code"] == "" and job["last"]

    # The key: on stdin of one secrets command, nowhere else.
    for call in calls:
        assert not any(API_KEY in a for a in call["argv"])
    assert API_KEY not in stdout + stderr
    carrying = [c for c in calls if c["stdin"] == API_KEY]
    assert [c["argv"][:3] for c in carrying] == [["secrets", "create", KEY]]
    created = {c["argv"][2]: c["stdin"] for c in calls if c["argv"][:2] == ["secrets", "create"]}
    assert re.fullmatch(r"[0-9a-f]{64}", created[HOOK])
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", created[NOTIFY])
    assert "gcloud auth print-identity-token" in stdout and "firestore" in stdout
    assert f"gcloud secrets versions access latest --secret={NOTIFY} --project={PROJECT}" in stdout
    assert "All 15 checks passed." in stdout


def test_each_function_mounts_only_its_secrets(deployed):
    fns = deployed["state"]["functions"]
    mounted = {name: set(fn["secrets"]) for name, fn in fns.items()}
    assert mounted == {
        f"{P}-webhook": {"ASSEMBLYAI_API_KEY", "WEBHOOK_SECRET", "NOTIFY_SIGNING_SECRET"},
        f"{P}-submit": {"ASSEMBLYAI_API_KEY", "WEBHOOK_SECRET"},
        f"{P}-recover": {"ASSEMBLYAI_API_KEY", "NOTIFY_SIGNING_SECRET"},
        f"{P}-storage": {"ASSEMBLYAI_API_KEY", "WEBHOOK_SECRET"},
        f"{P}-regenerate": {"ASSEMBLYAI_API_KEY", "NOTIFY_SIGNING_SECRET"},
    }
    assert fns[f"{P}-webhook"]["secrets"]["WEBHOOK_SECRET"] == f"{HOOK}:1"


def test_every_identity_holds_exactly_its_roles(deployed):
    state = deployed["state"]
    for email, roles in ROLES.items():
        assert email in state["sas"], email
        assert roles_of(state, email) == roles, email
    assert set(state["sas"]) == set(ROLES)
    # Google's service agents get what triggers need, and nothing else does.
    others = {
        b for b in all_bindings(state) if not b[0].endswith(f"@{PROJECT}.iam.gserviceaccount.com")
    }
    assert others == {
        (GCS_AGENT, "project", "", "roles/pubsub.publisher"),
        (EVENTARC_AGENT, "project", "", "roles/eventarc.serviceAgent"),
    }


def test_the_webhook_identity_holds_no_storage_role(deployed):
    held = roles_of(deployed["state"], sa("webhook"))
    assert not [r for r in held if r[0] in ("bucket", "sa") or "storage" in r[2]], held
    assert not [r for r in held if "TokenCreator" in r[2]]
    # Only the storage function's identity touches the bucket.
    bucket = deployed["state"]["buckets"]["gs://acme-recordings"]
    assert bucket == [["roles/storage.objectViewer", f"serviceAccount:{sa('storage')}"]]


def test_threads_equal_concurrency_and_each_function_knows_its_timeout(deployed):
    for name, fn in deployed["state"]["functions"].items():
        args = fn["argv"]
        concurrency = flag(args, "concurrency")
        assert concurrency, f"{name} sets no concurrency"
        assert fn["env"]["THREADS"] == concurrency, name
        assert fn["env"]["FUNCTION_TIMEOUT_SECONDS"] + "s" == flag(args, "timeout"), name
        if "--trigger-http" in args:
            assert int(concurrency) > 1 or flag(args, "max-instances") == "1", name
    env = {n: f["env"] for n, f in deployed["state"]["functions"].items()}
    assert env[f"{P}-webhook"]["THREADS"] == "80" and env[f"{P}-submit"]["THREADS"] == "20"
    assert env[f"{P}-storage"]["FUNCTION_TIMEOUT_SECONDS"] == "540"
    assert env[f"{P}-submit"]["FUNCTION_TIMEOUT_SECONDS"] == "60"


def test_regenerate_is_a_firestore_trigger_where_the_database_is(gcloud):
    gcloud.edit(lambda s: s.update(db={"locationId": "nam5"}))
    done, calls = gcloud("--collection", "team-meetings")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not argv(calls, "firestore", "databases", "create")
    args = deploys(calls)[f"{P}-regenerate"]
    assert [a for a in args if a.startswith("--trigger-event-filters=")] == [
        "--trigger-event-filters=type=google.cloud.firestore.document.v1.updated",
        "--trigger-event-filters=database=(default)",
    ]
    assert flag(args, "trigger-event-filters-path-pattern") == "document=team-meetings/{id}"
    assert flag(args, "trigger-location") == "nam5"
    assert "--retry" in args and flag(args, "trigger-service-account") == sa("events")
    assert f"{P}-storage" not in deploys(calls), "no bucket, no storage trigger"


# --- reruns, rotation, migration ------------------------------------------------------------------


def test_second_run_updates_in_place_and_rotates_nothing(gcloud, deployed):
    gcloud.state = copy.deepcopy(deployed["state"])
    done, calls = gcloud("--bucket", "acme-recordings", key=None)
    assert done.returncode == 0, done.stderr
    assert not argv(calls, "secrets", "create") and not argv(calls, "secrets", "versions", "add")
    assert not argv(calls, "projects", "add-iam-policy-binding"), (
        "project bindings are checked first"
    )
    assert not argv(calls, "firestore", "databases", "create") and not argv(
        calls, "iam", "service-accounts", "create"
    )
    assert argv(calls, "scheduler", "jobs", "update", "http") and not argv(
        calls, "scheduler", "jobs", "create"
    )
    assert len(deploys(calls)) == 5


def test_rotation_keeps_the_previous_secret_on_the_webhook_for_24_hours(gcloud, deployed):
    gcloud.state = copy.deepcopy(deployed["state"])
    done, calls = gcloud("--rotate-webhook-secret", key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    added = argv(calls, "secrets", "versions", "add")
    assert [a[3] for a in added] == [HOOK]
    fns = gcloud.state["functions"]
    assert fns[f"{P}-webhook"]["secrets"]["WEBHOOK_SECRET"] == f"{HOOK}:2"
    assert fns[f"{P}-webhook"]["secrets"]["WEBHOOK_SECRET_PREVIOUS"] == f"{HOOK}:1"
    for name in (f"{P}-submit", f"{P}-storage"):
        assert fns[name]["secrets"]["WEBHOOK_SECRET"] == f"{HOOK}:2", name
        assert "WEBHOOK_SECRET_PREVIOUS" not in fns[name]["secrets"], name
    assert f"{P}-storage is deployed on gs://acme-recordings" in done.stdout
    assert "version 1 stays" in done.stdout and "removes it" in done.stdout

    # Within the window a rerun keeps it; after it, a rerun removes it.
    done, _ = gcloud(key=None)
    assert "WEBHOOK_SECRET_PREVIOUS" in gcloud.state["functions"][f"{P}-webhook"]["secrets"]

    def age(s):
        for v in s["secrets"][HOOK]["versions"]:
            then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=25)
            v["createTime"] = then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    gcloud.edit(age)
    done, _ = gcloud(key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    webhook = gcloud.state["functions"][f"{P}-webhook"]["secrets"]
    assert webhook["WEBHOOK_SECRET"] == f"{HOOK}:2" and "WEBHOOK_SECRET_PREVIOUS" not in webhook
    assert "no longer accepted" in done.stdout


def test_rotating_twice_within_the_window_warns(gcloud, deployed):
    gcloud.state = copy.deepcopy(deployed["state"])
    gcloud("--rotate-webhook-secret", key=None)
    done, _ = gcloud("--rotate-webhook-secret", key=None)
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stdout and "less than 24 h old" in done.stdout
    webhook = gcloud.state["functions"][f"{P}-webhook"]["secrets"]
    assert webhook["WEBHOOK_SECRET"] == f"{HOOK}:3"
    assert webhook["WEBHOOK_SECRET_PREVIOUS"] == f"{HOOK}:2"


def legacy_layout(s: dict) -> None:
    """What the old deploy.sh left: every function running as PREFIX-runtime."""
    legacy = f"serviceAccount:{sa('runtime')}"
    s["sas"][sa("runtime")] = {"bindings": [["roles/iam.serviceAccountTokenCreator", legacy]]}
    s["project_bindings"] += [
        ["roles/datastore.user", legacy],
        ["roles/eventarc.eventReceiver", legacy],
    ]
    s["buckets"].setdefault("gs://acme-recordings", []).append(
        ["roles/storage.objectViewer", legacy]
    )


def test_a_rerun_over_the_shared_account_moves_off_it_and_says_how_to_delete_it(gcloud):
    gcloud.edit(legacy_layout)
    done, calls = gcloud("--bucket", "acme-recordings")
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(flag(a, "service-account") != sa("runtime") for a in deploys(calls).values())
    assert sa("runtime") in gcloud.state["sas"], "the old account is left in place"
    out = done.stdout
    assert f"{sa('runtime')}, is left in place" in out
    assert f"gcloud iam service-accounts delete {sa('runtime')} --project={PROJECT}" in out
    assert "gcloud projects remove-iam-policy-binding" in out and "roles/datastore.user" in out
    assert "gcloud storage buckets remove-iam-policy-binding gs://acme-recordings" in out

    done, _ = gcloud("--delete", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    state = gcloud.state
    assert sa("runtime") not in state["sas"]
    assert not [b for b in all_bindings(state) if "runtime" in b[0]]


# --- propagation: bounded waits on Google's texts ---------------------------------------------------


def test_propagation_delays_on_each_racing_step_are_waited_out(gcloud):
    gcloud.fault("binding", 2, SA_MISSING)
    gcloud.fault("http", 3, SECRET_DENIED, SECRET_ACCESS_DENIED, BUILD_DENIED)
    gcloud.fault("trigger", 2, EVENTARC_DENIED, GCS_PUBLISHER_DENIED)
    gcloud.fault("scheduler", 2)
    done, calls = gcloud("--bucket", "acme-recordings")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for what in (
        "the new service account to become visible to IAM",
        "the secret access granted to the function's service account to take effect",
        "the build service account's Cloud Build role to take effect",
        "the Eventarc service agent's permissions to propagate",
        "the Cloud Storage service agent's Pub/Sub publisher role to take effect",
        f"the invoker role on {P}-recover to reach the scheduler's calls",
    ):
        assert f"for {what}" in out, what
    assert len(argv(calls, "functions", "deploy", f"{P}-webhook")) == 4
    assert len(argv(calls, "functions", "deploy", f"{P}-storage")) == 3
    assert len(argv(calls, "scheduler", "jobs", "run")) == 3
    assert "All 15 checks passed." in out


@pytest.mark.parametrize(
    ("kind", "message", "waiting_for"),
    [
        ("http", SECRET_DENIED, "the secret access granted"),
        ("trigger", EVENTARC_DENIED, "the Eventarc service agent's permissions"),
        ("scheduler", None, f"the invoker role on {P}-recover"),
    ],
)
def test_a_delay_that_never_ends_stops_with_the_command_to_rerun(
    gcloud, deployed, kind, message, waiting_for
):
    gcloud.state = copy.deepcopy(deployed["state"])
    gcloud.fault(kind, 1000, *([message] if message else []))
    done, calls = gcloud(
        "--bucket", "acme-recordings", "--rotate-webhook-secret", env={"DEPLOY_RETRY_ATTEMPTS": "3"}
    )
    assert done.returncode != 0
    assert f"gave up waiting for {waiting_for}" in done.stderr
    assert "after 3 attempts" in done.stderr
    rerun = done.stderr.strip().splitlines()[-1].strip()
    assert rerun == f"./deploy.sh --project {PROJECT} --bucket acme-recordings", (
        "the rotation is not repeated"
    )
    tried = {
        "http": argv(calls, "functions", "deploy", f"{P}-webhook"),
        "trigger": argv(calls, "functions", "deploy", f"{P}-storage"),
        "scheduler": argv(calls, "scheduler", "jobs", "run"),
    }[kind]
    assert len(tried) == 3


def test_an_error_that_is_not_propagation_fails_at_once(gcloud):
    gcloud.fault(
        "http",
        1,
        "ERROR: (gcloud.functions.deploy) OperationError: code=3, message=Build failed: main.py does not parse",
    )
    done, calls = gcloud()
    assert done.returncode != 0
    assert "this failed (see the error above)" in done.stderr
    assert "Build failed: main.py does not parse" in done.stderr
    assert len(argv(calls, "functions", "deploy")) == 1


# --- operators are told: metrics, alert policies, e-mail channels, a dashboard ---------------------


def monitoring_creates(calls) -> dict[str, list[list[str]]]:
    return {
        "metrics": argv(calls, "logging", "metrics", "create"),
        "channels": argv(calls, "beta", "monitoring", "channels", "create"),
        "policies": argv(calls, "alpha", "monitoring", "policies", "create"),
        "dashboards": argv(calls, "monitoring", "dashboards", "create"),
    }


NOTHING_MADE = {"metrics": [], "channels": [], "policies": [], "dashboards": []}


@pytest.fixture(scope="module")
def alerted(tmp_path_factory) -> dict:
    """The state after a first deploy with two alert addresses."""
    cloud = Cloud(tmp_path_factory.mktemp("alerted"))
    done, calls = cloud("--alert-email", OPS, "--alert-email", "OnCall@Acme.test")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"state": cloud.state, "stdout": done.stdout, "calls": calls}


def test_alert_email_makes_a_channel_each_the_metrics_the_policies_and_a_dashboard(alerted):
    state, made = alerted["state"], monitoring_creates(alerted["calls"])
    channels = state["channels"]
    assert len(made["channels"]) == 2
    assert sorted(c["labels"]["email_address"] for c in channels.values()) == [ONCALL, OPS]
    assert {c["displayName"] for c in channels.values()} == {
        f"{P}: alerts to {OPS}",
        f"{P}: alerts to {ONCALL}",
    }
    assert all(c["type"] == "email" and c["userLabels"] == {"app": P} for c in channels.values())

    assert len(METRICS) >= 5 and set(state["metrics"]) == METRICS
    assert len(made["metrics"]) == len(METRICS)
    assert len(POLICIES) >= 4 and {p["displayName"] for p in state["policies"].values()} == POLICIES
    assert len(made["policies"]) == len(POLICIES)
    for policy in state["policies"].values():
        assert sorted(policy["notificationChannels"]) == sorted(channels), policy["displayName"]
    assert [d["displayName"] for d in state["dashboards"].values()] == [DASHBOARD]
    assert len(made["dashboards"]) == 1

    # The metrics come first: Monitoring takes minutes to know a new one, and the functions'
    # deploys give it that time before the policies that name them.
    order = [" ".join(c["argv"][:4]) for c in alerted["calls"]]
    last_metric = max(i for i, o in enumerate(order) if o.startswith("logging metrics create"))
    first_function = next(i for i, o in enumerate(order) if o.startswith("functions deploy"))
    first_policy = next(i for i, o in enumerate(order) if o.startswith("alpha monitoring policies"))
    assert last_metric < first_function < first_policy
    assert "e-mailed through 2 e-mail channel(s)" in alerted["stdout"]


def test_what_gcloud_is_handed_is_googles_types_made_for_this_deployment(alerted):
    from google.cloud import monitoring_dashboard_v1, monitoring_v3
    from google.cloud.logging_v2.types import LogMetric

    state = alerted["state"]
    handed = json.dumps([state["metrics"], state["policies"], state["dashboards"]])
    assert not re.search(r"@[A-Z_]+@", handed), "every placeholder is filled in"
    assert PROJECT in handed
    known = {f"logging.googleapis.com/user/{name}" for name in state["metrics"]}
    for config in state["metrics"].values():
        LogMetric.from_json(json.dumps(config))
        assert f'resource.labels.service_name=~"^{P}-(' in config["filter"]
    for policy in state["policies"].values():
        monitoring_v3.AlertPolicy.from_json(json.dumps(policy))
        assert set(re.findall(r'metric\.type="([^"]+)"', json.dumps(policy).replace('\\"', '"')))
    for dashboard in state["dashboards"].values():
        monitoring_dashboard_v1.Dashboard.from_json(
            json.dumps({k: v for k, v in dashboard.items() if k != "updated_with_etag"})
        )
    named = set(re.findall(r'metric\.type=\\"([^"\\]+)\\"', handed))
    assert named and named <= known, named - known


def test_a_rerun_makes_nothing_twice_and_keeps_the_addresses_given_before(gcloud, alerted):
    gcloud.state = copy.deepcopy(alerted["state"])
    channels = sorted(gcloud.state["channels"])
    for args in ((), ("--alert-email", OPS)):
        done, calls = gcloud(*args, key=None)
        assert done.returncode == 0, done.stdout + done.stderr
        assert monitoring_creates(calls) == NOTHING_MADE, args
        assert len(argv(calls, "logging", "metrics", "update")) == len(METRICS)
        assert len(argv(calls, "alpha", "monitoring", "policies", "update")) == len(POLICIES)
        assert len(argv(calls, "monitoring", "dashboards", "update")) == 1
        state = gcloud.state
        assert sorted(state["channels"]) == channels
        assert len(state["policies"]) == len(POLICIES) and len(state["dashboards"]) == 1
        for policy in state["policies"].values():
            assert sorted(policy["notificationChannels"]) == channels, (args, policy)
        (dashboard,) = state["dashboards"].values()
        assert dashboard["updated_with_etag"], (
            "the dashboard is updated with the etag it was read with"
        )

    done, calls = gcloud("--alert-email", "new@acme.test", key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {k: len(v) for k, v in monitoring_creates(calls).items()} == {
        "metrics": 0, "channels": 1, "policies": 0, "dashboards": 0,
    }  # fmt: skip
    assert all(len(p["notificationChannels"]) == 3 for p in gcloud.state["policies"].values())

    done, _ = gcloud(
        "--verify", "--alert-email", OPS, "--alert-email", "nobody@acme.test", key=None
    )
    assert f"  ok    alerts are e-mailed to {OPS}" in done.stdout
    assert "  FAIL  alerts are e-mailed to nobody@acme.test" in done.stdout
    assert done.returncode != 0


def test_without_alert_email_the_metrics_policies_and_dashboard_are_made_e_mailing_nobody(deployed):
    state, made = deployed["state"], monitoring_creates(deployed["calls"])
    assert set(state["metrics"]) == METRICS
    assert {p["displayName"] for p in state["policies"].values()} == POLICIES
    assert all(p["notificationChannels"] == [] for p in state["policies"].values())
    assert [d["displayName"] for d in state["dashboards"].values()] == [DASHBOARD]
    assert state["channels"] == {} and made["channels"] == []
    assert (
        "no --alert-email: the alert policies open incidents in the console but e-mail"
        in (deployed["stdout"])
    )
    assert "The alerts e-mail nobody yet" in deployed["stdout"]


def test_delete_removes_every_policy_channel_metric_and_the_dashboard_and_no_one_elses(
    gcloud, alerted
):
    state = copy.deepcopy(alerted["state"])
    other = "projects/acme-meetings/notificationChannels/other"
    state["channels"][other] = {"name": other, "type": "email", "displayName": "other: alerts to x@y.z",
                                "labels": {}, "userLabels": {"app": "other"}}  # fmt: skip
    theirs = "projects/acme-meetings/alertPolicies/theirs"
    state["policies"][theirs] = {"name": theirs, "displayName": "other: an alert",
                                 "userLabels": {"app": "other"}, "notificationChannels": [other]}  # fmt: skip
    gcloud.state = state
    done, calls = gcloud("--delete", "--yes", key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    left = gcloud.state
    assert left["metrics"] == {} and left["dashboards"] == {}
    assert list(left["policies"]) == [theirs] and list(left["channels"]) == [other]
    assert len(argv(calls, "alpha", "monitoring", "policies", "delete")) == len(POLICIES)
    channel_deletes = argv(calls, "beta", "monitoring", "channels", "delete")
    assert len(channel_deletes) == 2 and all("--force" in a for a in channel_deletes)
    assert len(argv(calls, "logging", "metrics", "delete")) == len(METRICS)
    assert len(argv(calls, "monitoring", "dashboards", "delete")) == 1
    # The policies go first: none is left naming a channel or a metric that is gone.
    deletes = [" ".join(c["argv"][:3]) for c in calls if "delete" in c["argv"][2:4]]
    last_policy = max(i for i, d in enumerate(deletes) if d == "alpha monitoring policies")
    others = ("beta monitoring channels", "logging metrics delete")
    assert last_policy < min(i for i, d in enumerate(deletes) if d in others)
    assert "the alert policies, their e-mail channels, the log-based metrics, the dashboard" in (
        done.stdout
    )
    done, _ = gcloud("--delete", "--yes", key=None)
    assert done.returncode == 0, "deleting again finds nothing to do: " + done.stderr


def test_the_dry_runs_print_every_monitoring_step(gcloud):
    done, calls = gcloud("--dry-run", "--alert-email", OPS)
    assert done.returncode == 0, done.stderr
    assert calls == []
    plan = [line for line in done.stdout.splitlines() if line.startswith("+ gcloud")]
    assert sum("logging metrics create" in line for line in plan) == len(METRICS)
    assert sum("beta monitoring channels create" in line for line in plan) == 1
    policies = [line for line in plan if "alpha monitoring policies create" in line]
    assert len(policies) == len(POLICIES)
    assert all(f"--notification-channels=projects/{PROJECT}/notificationChannels/" in line
               for line in policies)  # fmt: skip
    assert sum("monitoring dashboards create" in line for line in plan) == 1
    kept = re.search(
        r"the monitoring files as this deployment gets them are in (\S+)\)", done.stdout
    )
    files = list(Path(kept.group(1)).rglob("*.json"))
    assert len(files) == len(METRICS) + len(POLICIES) + 1
    assert not any(re.search(r"@[A-Z_]+@", f.read_text()) for f in files)

    done, calls = gcloud("--delete", "--dry-run", key=None)
    assert done.returncode == 0, done.stderr
    assert calls == []
    plan = [line for line in done.stdout.splitlines() if line.startswith("+ gcloud")]
    assert sum("alpha monitoring policies delete" in line for line in plan) == len(POLICIES)
    assert sum("beta monitoring channels delete" in line for line in plan) == 1
    assert sum("monitoring dashboards delete" in line for line in plan) == 1
    assert sum("logging metrics delete" in line for line in plan) == len(METRICS)
    for line in plan:
        shlex.split(line)


def test_a_metric_monitoring_does_not_know_yet_is_waited_for(gcloud):
    gcloud.fault("metric", 2, METRIC_UNKNOWN)
    done, calls = gcloud()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "for the new log-based metrics to become visible to Cloud Monitoring" in done.stdout
    assert len(argv(calls, "alpha", "monitoring", "policies", "create")) == len(POLICIES) + 2
    assert len(gcloud.state["policies"]) == len(POLICIES)


# --- verify -------------------------------------------------------------------------------------------

CHECKS = {
    "webhook answers 401 to a wrong secret": lambda s: s["broken"].append(
        "webhook-accepts-any-secret"
    ),
    "webhook answers 405 to a GET": lambda s: s["broken"].append("webhook-allows-get"),
    "submit answers 400 to an empty body with an identity token": lambda s: s["broken"].append(
        "submit-misconfigured"
    ),
    "submit answers 403 without an identity token": lambda s: s["functions"][f"{P}-submit"].update(
        public=True
    ),
    f"scheduler job {P}-recover exists": lambda s: s["jobs"].clear(),
    "scheduler job's last run succeeded": lambda s: s["jobs"][f"{P}-recover"].update(code="7"),
    f"function {P}-regenerate is ACTIVE": lambda s: s["functions"][f"{P}-regenerate"].update(
        state="FAILED"
    ),
    f"log-based metrics exist ({len(METRICS)})": lambda s: s["metrics"].pop(f"{P}-sweep-backlog"),
    "alert policies exist": lambda s: s["policies"].popitem(),
    "dashboard exists": lambda s: s["dashboards"].clear(),
    "model claude-sonnet-4-6 is on the gateway's list": lambda s: s["gateway"]["models"].remove(
        "claude-sonnet-4-6"
    ),
}


def test_verify_on_its_own_passes_each_check_and_changes_nothing(gcloud, deployed):
    gcloud.state = copy.deepcopy(deployed["state"])
    done, calls = gcloud("--verify", "--bucket", "acme-recordings", key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    for check in CHECKS:
        assert f"  ok    {check}" in done.stdout
    assert not [c for c in calls if any(w in MUTATING for w in c["argv"][:4])]
    assert gcloud.state == deployed["state"]
    # The identity token reaches curl on stdin, never on its command line.
    with_token = [c for c in gcloud.curl_calls if any("Bearer" in h for h in c["headers"])]
    assert len(with_token) == 1 and not any(
        "fake-identity-token" in a for a in with_token[0]["argv"]
    )


def test_fallback_models_are_validated_and_set_on_the_functions(gcloud):
    done, _ = gcloud("--llm-fallback-models", "gpt-5.5,bad model", "--dry-run")
    assert done.returncode != 0 and "--llm-fallback-models must be model names" in done.stderr
    done, calls = gcloud("--llm-fallback-models", "gpt-5.5,gemini-3.5-flash", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "LLM_FALLBACK_MODELS=gpt-5.5,gemini-3.5-flash" in done.stdout


@pytest.mark.parametrize("check", list(CHECKS))
def test_verify_fails_each_check_when_its_condition_is_broken(gcloud, deployed, check):
    state = copy.deepcopy(deployed["state"])
    CHECKS[check](state)
    gcloud.state = state
    done, _ = gcloud("--verify", "--bucket", "acme-recordings", key=None)
    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if line.startswith("  FAIL")]
    job_gone = check.startswith("scheduler job") and "exists" in check
    expected = [check] + (["scheduler job's last run succeeded"] if job_gone else [])
    assert [line[8:].split(":")[0] for line in failed] == expected
    assert "checks failed" in done.stderr


# --- verify: the configured LLM models are on the gateway's list (issue 16) ----------------------


def verify_models(gcloud, deployed, *changes, args=()):
    """--verify on the deployed state changed by `changes`; its lines about the models."""
    state = copy.deepcopy(deployed["state"])
    for change in changes:
        change(state)
    gcloud.state = state
    done, calls = gcloud("--verify", "--bucket", "acme-recordings", *args, key=None)
    lines = [line for line in done.stdout.splitlines() if "on the gateway's list" in line]
    return done, calls, lines


def webhook_env(**env):
    return lambda s: s["functions"][f"{P}-webhook"]["env"].update(env)


def gateway_calls(gcloud) -> list[dict]:
    return [c for c in gcloud.curl_calls if "llm-gateway" in c["url"]]


def assert_the_key_is_nowhere(gcloud, done, calls) -> None:
    """The API key is on no command line, in no output, in nothing curl was recorded with, and
    in no file left behind (but the fake's own Secret Manager)."""
    assert API_KEY not in done.stdout + done.stderr
    assert API_KEY not in json.dumps(calls)
    assert API_KEY not in json.dumps(gcloud.curl_calls)
    for f in gcloud.tmp.rglob("*"):
        if f.is_file() and f != gcloud.dir / "cloud.json":
            assert API_KEY not in f.read_text(errors="replace"), f


def test_verify_checks_each_model_the_webhook_is_configured_with(gcloud, deployed):
    done, calls, lines = verify_models(
        gcloud, deployed, webhook_env(LLM_FALLBACK_MODELS="gpt-5.5, gemini-3.5-flash,gpt-5.5")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines == [
        f"  ok    model {m} is on the gateway's list"
        for m in ("claude-sonnet-4-6", "gpt-5.5", "gemini-3.5-flash")
    ]
    assert (
        f"(LLM models from the environment of {P}-webhook; "
        "gateway https://llm-gateway.assemblyai.com/v1)" in done.stdout
    )
    # The key comes from Secret Manager and reaches curl as a header on standard input only.
    assert argv(calls, "secrets", "versions", "access") == [
        ["secrets", "versions", "access", "latest", f"--secret={KEY}", f"--project={PROJECT}"]
    ]
    (call,) = gateway_calls(gcloud)
    assert call["url"] == "https://llm-gateway.assemblyai.com/v1/models"
    assert call["from_stdin"] == ["Authorization: <the stored API key>"]
    assert_the_key_is_nowhere(gcloud, done, calls)


def test_verify_names_a_fallback_the_gateway_does_not_list(gcloud, deployed):
    done, calls, lines = verify_models(
        gcloud, deployed, webhook_env(LLM_FALLBACK_MODELS="gpt-5.5,claude-sonnet-3-7")
    )
    assert done.returncode != 0 and "verify: 1 of" in done.stderr
    assert lines[:2] == [
        "  ok    model claude-sonnet-4-6 is on the gateway's list",
        "  ok    model gpt-5.5 is on the gateway's list",
    ]
    assert lines[2] == (
        "  FAIL  model claude-sonnet-3-7 is on the gateway's list: not listed; the gateway lists "
        "9 models, such as: claude-opus-4-7 claude-opus-4-6 claude-sonnet-4-6 "
        "claude-opus-4-5-20251101 claude-sonnet-4-5-20250929"
    )
    assert_the_key_is_nowhere(gcloud, done, calls)


@pytest.mark.parametrize(
    "change, reason, asked",
    [
        (
            lambda s: s["unreadable_secrets"].append(KEY),
            f"could not read the API key from secret {KEY}: the account running deploy.sh needs "
            "secretmanager.versions.access on it (roles/secretmanager.secretAccessor)",
            False,
        ),
        (
            lambda s: s["gateway"].update(status=503),
            "the gateway's list could not be read "
            "(HTTP 503 from GET https://llm-gateway.assemblyai.com/v1/models)",
            True,
        ),
        (
            lambda s: s["gateway"].update(status=401),
            "the gateway refused the stored API key (HTTP 401; store a new one with --update-api-key)",
            True,
        ),
        (
            webhook_env(LLM_GATEWAY_BASE_URL="http://gateway.acme.test/v1"),
            "the gateway URL is not https (LLM_GATEWAY_BASE_URL): the API key is not sent to it",
            False,
        ),
    ],
    ids=["key-unreadable", "list-unavailable", "key-refused", "plain-http-gateway"],
)
def test_verify_says_why_the_models_could_not_be_checked(gcloud, deployed, change, reason, asked):
    done, calls, lines = verify_models(
        gcloud, deployed, webhook_env(LLM_FALLBACK_MODELS="gpt-5.5"), change
    )
    assert done.returncode != 0 and "verify: 2 of" in done.stderr, done.stdout + done.stderr
    assert lines == [
        f"  FAIL  model {m} is on the gateway's list: {reason}"
        for m in ("claude-sonnet-4-6", "gpt-5.5")
    ]
    assert bool([c for c in gcloud.curl_calls if c["url"].endswith("/models")]) == asked
    assert_the_key_is_nowhere(gcloud, done, calls)


def test_verify_checks_its_own_options_when_the_webhook_cannot_be_described(gcloud, deployed):
    done, _, lines = verify_models(
        gcloud,
        deployed,
        lambda s: s["functions"].pop(f"{P}-webhook"),
        args=("--assemblyai-region", "eu", "--llm-model", "gpt-5.5", "--llm-fallback-models", "x"),
    )
    assert done.returncode != 0  # the webhook is missing
    assert (
        f"(LLM models from this script's options ({P}-webhook could not be described); "
        "gateway https://llm-gateway.eu.assemblyai.com/v1)" in done.stdout
    )
    assert lines == [
        "  ok    model gpt-5.5 is on the gateway's list",
        "  FAIL  model x is on the gateway's list: not listed; the gateway lists 9 models, such as: "
        "claude-opus-4-7 claude-opus-4-6 claude-sonnet-4-6 claude-opus-4-5-20251101 "
        "claude-sonnet-4-5-20250929",
    ]
    assert [c["url"] for c in gateway_calls(gcloud)] == [
        "https://llm-gateway.eu.assemblyai.com/v1/models"
    ]


# --- delete -------------------------------------------------------------------------------------------


def test_delete_after_deploy_leaves_nothing_deploy_created(gcloud, deployed):
    gcloud.state = copy.deepcopy(deployed["state"])
    done, calls = gcloud("--delete", "--yes", key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    state = gcloud.state
    assert state["functions"] == {} and state["jobs"] == {} and state["secrets"] == {}
    assert state["sas"] == {}
    left = all_bindings(state)
    assert left == {
        (GCS_AGENT, "project", "", "roles/pubsub.publisher"),
        (EVENTARC_AGENT, "project", "", "roles/eventarc.serviceAgent"),
    }, "only Google's service agents keep their roles (said in the output)"
    assert state["db"] is not None, "the Firestore data stays"
    assert "does NOT delete the Firestore data" in done.stdout
    assert "ALL ITS DATA" in done.stdout and "roles/eventarc.serviceAgent" in done.stdout
    # It found the bucket from the storage trigger itself.
    assert argv(calls, "storage", "buckets", "remove-iam-policy-binding", "gs://acme-recordings")

    done, _ = gcloud("--delete", "--yes", key=None)
    assert done.returncode == 0, "deleting again finds nothing to do: " + done.stderr


def test_delete_asks_first_and_does_nothing_without_an_answer(gcloud, deployed):
    gcloud.state = copy.deepcopy(deployed["state"])
    done, calls = gcloud("--delete", key=None)
    assert done.returncode != 0 and "--yes" in done.stderr
    assert not [c for c in calls if any(w in MUTATING for w in c["argv"][:4])]
    assert gcloud.state == deployed["state"]


def test_delete_dry_run_prints_the_plan(gcloud):
    done, calls = gcloud("--delete", "--dry-run", "--bucket", "b-1", key=None)
    assert done.returncode == 0, done.stderr
    assert calls == []
    plan = [line for line in done.stdout.splitlines() if line.startswith("+ gcloud")]
    assert any(f"functions delete {P}-webhook" in line for line in plan)
    assert any(f"iam service-accounts delete {sa('webhook')}" in line for line in plan)


# --- inputs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["claude,LLM_GATEWAY_BASE_URL=https://evil.test", "a,b", "model=x", "x y", ""]
)
def test_an_llm_model_that_could_inject_settings_is_refused(gcloud, model):
    done, calls = gcloud("--llm-model", model)
    assert done.returncode != 0 and "--llm-model" in done.stderr
    assert calls == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--notify-url", "http://hooks.acme.test/"), "--notify-url"),
        (("--notify-url", "https://user:pw@hooks.acme.test/"), "--notify-url"),
        (("--audio-prefix", "a|b"), "--audio-prefix"),
        (("--audio-prefix", "a\nb"), "--audio-prefix"),
        (("--bucket", "gs://b"), "--bucket"),
        (("--region", "us-central1 --x"), "--region"),
        (("--name-prefix", "a-very-long-name-prefix"), "--name-prefix"),
        (("--collection", "a/b"), "--collection"),
        (("--project", "Bad_Project"), "--project"),
        (("--alert-email", "not-an-address"), "--alert-email"),
        (("--alert-email", "a@acme.test,b@acme.test"), "--alert-email"),
        (("--alert-email", "a@acme.test --x"), "--alert-email"),
    ],
)
def test_every_input_reaching_gcloud_is_validated(gcloud, args, complaint):
    done, calls = gcloud(*args)
    assert done.returncode != 0 and complaint in done.stderr
    assert calls == []


def test_commas_in_a_prefix_survive_as_one_value(gcloud):
    done, calls = gcloud("--bucket", "acme-recordings", "--audio-prefix", "calls/a,b=c/")
    assert done.returncode == 0, done.stderr
    raw = flag(deploys(calls)[f"{P}-storage"], "set-env-vars")
    assert raw.startswith("^|^")
    env = parse_dict(raw)
    assert env["AUDIO_PREFIX"] == "calls/a,b=c/" and "b" not in env


# --- the rest ------------------------------------------------------------------------------------------


def test_dry_run_runs_nothing_and_prints_the_plan(gcloud):
    done, calls = gcloud("--dry-run", "--bucket", "b-1")
    assert done.returncode == 0, done.stderr
    assert calls == []
    plan = [line for line in done.stdout.splitlines() if line.startswith("+ gcloud")]
    assert plan[0].startswith("+ gcloud services enable")
    assert any(f"functions deploy {P}-webhook" in line for line in plan)
    assert any(f"functions deploy {P}-regenerate" in line for line in plan)
    assert API_KEY not in done.stdout
    for line in plan:
        shlex.split(line.split(" < (")[0])  # every printed command can be pasted back


def test_missing_project_stops_before_any_command(gcloud):
    done, calls = gcloud(project=None)
    assert done.returncode != 0 and "project" in done.stderr
    assert calls == []


def test_missing_key_without_a_terminal_stops_before_any_change(gcloud):
    done, calls = gcloud(key=None)
    assert done.returncode != 0 and "ASSEMBLYAI_API_KEY" in done.stderr
    assert not [c for c in calls if any(w in MUTATING for w in c["argv"][:4])]


def test_help_documents_every_flag(gcloud):
    done, calls = gcloud("--help")
    assert done.returncode == 0 and calls == []
    script = (ROOT / "deploy.sh").read_text()
    for option in set(re.findall(r"^    (--[a-z-]+)\)", script, re.M)):
        assert option in done.stdout, option


def gcloud_commands_printed(text: str) -> list[list[str]]:
    """The gcloud commands deploy.sh prints for a person to run."""
    found = [shlex.split(m) for m in re.findall(r"\$\(gcloud ([^)]*)\)", text)]
    for line in text.splitlines():
        line = line.strip().removeprefix("+ ").split(" < (")[0]
        if line.startswith("gcloud "):
            found.append(shlex.split(line)[1:])
    return found


def test_every_gcloud_command_and_flag_used_is_in_the_578_help_pages(gcloud, deployed, alerted):
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is not here")
    used = [c["argv"] for c in deployed["calls"]] + gcloud_commands_printed(deployed["stdout"])
    used += [c["argv"] for c in alerted["calls"]] + gcloud_commands_printed(alerted["stdout"])
    gcloud.state = copy.deepcopy(deployed["state"])
    gcloud.edit(legacy_layout)
    for args in (
        ("--bucket", "acme-recordings", "--public-submit"),  # no channels: policies cleared
        ("--retention-days", "30", "--bucket", "acme-recordings", "--public-submit"),
        (
            "--bucket",
            "acme-recordings",
            "--rotate-webhook-secret",
            "--public-submit",
            "--alert-email",
            OPS,
        ),
        ("--verify", "--bucket", "acme-recordings", "--public-submit", "--alert-email", OPS),
        ("--delete", "--yes"),
    ):
        done, calls = gcloud(*args, key=None)
        assert done.returncode == 0, done.stdout + done.stderr
        used += [c["argv"] for c in calls] + gcloud_commands_printed(done.stdout)
    assert len(used) > 100
    seen = set()
    for args in used:
        words = [a for a in args if not a.startswith("--")]
        pages = [n for n in range(1, 5) if (REFERENCE / ("_".join(words[:n]) + ".txt")).exists()]
        assert pages, f"no help page for gcloud {' '.join(args)}"
        page = REFERENCE / ("_".join(words[: max(pages)]) + ".txt")
        text = page.read_text()
        for a in args:
            if not a.startswith("--"):
                continue
            name = a[2:].split("=", 1)[0]
            forms = [rf"--{re.escape(name)}(?![\w-])"]
            if name.startswith("no-"):
                forms.append(rf"--\[no-\]{re.escape(name[3:])}(?![\w-])")
            assert any(re.search(f, text) for f in forms), f"--{name} is not in {page.name}"
            seen.add((page.name, name))
    assert ("functions_deploy.txt", "build-service-account") in seen
    for page, name in (
        ("logging_metrics_create.txt", "config-from-file"),
        ("logging_metrics_update.txt", "config-from-file"),
        ("beta_monitoring_channels_create.txt", "channel-labels"),
        ("beta_monitoring_channels_list.txt", "filter"),
        ("beta_monitoring_channels_delete.txt", "force"),
        ("alpha_monitoring_policies_create.txt", "policy-from-file"),
        ("alpha_monitoring_policies_create.txt", "notification-channels"),
        ("alpha_monitoring_policies_update.txt", "set-notification-channels"),
        ("alpha_monitoring_policies_update.txt", "clear-notification-channels"),
        ("alpha_monitoring_policies_list.txt", "filter"),
        ("monitoring_dashboards_create.txt", "config-from-file"),
        ("monitoring_dashboards_update.txt", "config-from-file"),
        ("monitoring_dashboards_list.txt", "filter"),
    ):
        assert (page, name) in seen, (page, name)


def test_readme_deploy_section_names_every_identity():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy\n") :].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    for email in ROLES:
        assert any(f"`{email.split('@')[0]}`" in row for row in table), email
    for text in ("--verify", "--delete", "--rotate-webhook-secret", "--build-service-account"):
        assert text in section, text


def test_script_is_valid_bash_and_shellcheck_clean():
    assert subprocess.run(["bash", "-n", str(ROOT / "deploy.sh")]).returncode == 0
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    done = subprocess.run(["shellcheck", str(ROOT / "deploy.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


# --- privacy (README, Privacy) -------------------------------------------------------------------


def test_retention_makes_the_ttl_policies_and_every_function_knows_the_settings(gcloud):
    done, calls = gcloud("--bucket", "acme-recordings", "--retention-days", "30",
                         "--delete-transcripts", "--redact-pii", "phone_number,email_address",
                         "--redact-pii-sub", "entity_name")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ttls = argv(calls, "firestore", "fields", "ttls", "update")
    assert sorted(ttls) == sorted(
        ["firestore", "fields", "ttls", "update", "expire_at", f"--collection-group={group}",
         "--database=(default)", "--enable-ttl", "--async", f"--project={PROJECT}"]
        for group in ("meetings", "meetings-uploads")
    )  # fmt: skip
    assert gcloud.state["ttls"] == {"meetings/expire_at": True, "meetings-uploads/expire_at": True}
    fns = gcloud.state["functions"]
    assert len(fns) == 5
    for name, fn in fns.items():
        assert fn["env"]["RETENTION_DAYS"] == "30", name
        assert fn["env"]["DELETE_TRANSCRIPT_AFTER_ITEMS"] == "true", name
        assert fn["env"]["REDACT_PII_POLICIES"] == "phone_number,email_address", name
        assert fn["env"]["REDACT_PII"] == "true" and fn["env"]["REDACT_PII_SUB"] == "entity_name"
    # The dry run prints the same; --delete leaves the policies and says so.
    dry, _ = gcloud("--dry-run", "--retention-days", "30")
    assert "gcloud firestore fields ttls update expire_at --collection-group=meetings-uploads" in (
        dry.stdout
    )
    gone, calls = gcloud("--delete", "--yes", key=None)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not argv(calls, "firestore")
    assert "TTL" in gone.stdout and gcloud.state["ttls"]["meetings/expire_at"] is True


def test_without_retention_nothing_expires(deployed):
    assert not argv(deployed["calls"], "firestore", "fields")
    assert all("RETENTION_DAYS" not in fn["env"] for fn in deployed["state"]["functions"].values())


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--retention-days", "0"), "--retention-days"),
        (("--retention-days", "3651"), "--retention-days"),
        (("--retention-days", "1|X=1"), "--retention-days"),
        (("--redact-pii", "phone number"), "--redact-pii"),
        (("--redact-pii-sub", "hash"), "--redact-pii-sub needs"),
        (("--redact-pii", "phone_number", "--redact-pii-sub", "stars"), "--redact-pii-sub"),
    ],
)
def test_privacy_inputs_are_validated(gcloud, args, complaint):
    done, calls = gcloud(*args)
    assert done.returncode != 0 and complaint in done.stderr and calls == []
