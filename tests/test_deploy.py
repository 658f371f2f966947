"""deploy.sh against a fake gcloud that records every call and keeps state,
so a second run sees what the first one created."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "aai-key-DISTINCTIVE-4f9c2"

FAKE_GCLOUD = r"""#!/usr/bin/env python3
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_GCLOUD_STATE"])
args = sys.argv[1:]
words = [a for a in args if not a.startswith("--")]
def flag(name):
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
stdin = sys.stdin.read() if "--data-file=-" in args else None
with open(state / "calls.jsonl", "a") as log:
    log.write(json.dumps({"argv": args, "stdin": stdin}) + "\n")

def mark(kind, name):
    (state / f"{kind}--{name}").touch()
def has(kind, name):
    return (state / f"{kind}--{name}").exists()
def missing():
    print("ERROR: (gcloud) NOT_FOUND", file=sys.stderr)
    sys.exit(1)

cmd = " ".join(words[:3])
if words[:2] == ["secrets", "describe"]:
    has("secret", words[2]) or missing()
elif words[:2] == ["secrets", "create"]:
    mark("secret", words[2])
elif words[:3] == ["firestore", "databases", "describe"]:
    has("db", "default") or missing()
elif words[:3] == ["firestore", "databases", "create"]:
    mark("db", "default")
elif words[:3] == ["iam", "service-accounts", "describe"]:
    has("sa", words[3].split("@")[0]) or missing()
elif words[:3] == ["iam", "service-accounts", "create"]:
    mark("sa", words[3])
elif words[:2] == ["functions", "describe"]:
    has("fn", words[2]) or missing()
    print(f"https://{words[2]}-abc123-uc.a.run.app")
elif words[:2] == ["functions", "deploy"]:
    mark("fn", words[2])
elif words[:3] == ["scheduler", "jobs", "describe"]:
    has("job", words[3]) or missing()
elif words[:3] == ["scheduler", "jobs", "create"]:
    mark("job", words[4])
elif words[:2] == ["projects", "get-iam-policy"]:
    path = state / "bindings"
    print(path.read_text() if path.exists() else "", end="")
elif words[:2] == ["projects", "add-iam-policy-binding"]:
    with open(state / "bindings", "a") as f:
        f.write(f"{flag('role')}\t{flag('member')}\n")
elif words[:2] == ["storage", "service-agent"]:
    print("service-123@gs-project-accounts.iam.gserviceaccount.com")
elif words[:2] == ["projects", "describe"]:
    print("123")
"""


@pytest.fixture
def gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()

    def deploy(*args: str, key: str | None = API_KEY, project: str | None = "acme-meetings"):
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_GCLOUD_STATE": str(state),
            "HOME": str(tmp_path),
        }
        if key:
            env["ASSEMBLYAI_API_KEY"] = key
        if project:
            env["GOOGLE_CLOUD_PROJECT"] = project
        done = subprocess.run(
            ["bash", str(ROOT / "deploy.sh"), *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        log = state / "calls.jsonl"
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return done, calls

    return deploy


def argv(calls, *prefix: str) -> list[list[str]]:
    return [c["argv"] for c in calls if c["argv"][: len(prefix)] == list(prefix)]


def deploys(calls) -> dict[str, list[str]]:
    return {a[2]: a for a in argv(calls, "functions", "deploy")}


MUTATING = (
    "create",
    "deploy",
    "add",
    "add-iam-policy-binding",
    "add-invoker-policy-binding",
    "enable",
    "update",
)


def test_first_run_deploys_in_order_with_secrets_and_least_access(gcloud):
    done, calls = gcloud("--bucket", "acme-recordings")
    assert done.returncode == 0, done.stderr
    fns = deploys(calls)
    assert set(fns) == {
        "meeting-actions-webhook",
        "meeting-actions-submit",
        "meeting-actions-recover",
        "meeting-actions-storage",
    }
    order = [" ".join(c["argv"][:3]) for c in calls]
    assert order.index("functions deploy meeting-actions-webhook") < order.index(
        "functions describe meeting-actions-webhook"
    )
    assert order.index("functions describe meeting-actions-webhook") < order.index(
        "functions deploy meeting-actions-submit"
    )
    assert "--set-env-vars=" in " ".join(fns["meeting-actions-submit"])
    assert "WEBHOOK_URL=https://meeting-actions-webhook-abc123-uc.a.run.app" in " ".join(
        fns["meeting-actions-submit"]
    )
    entry = {
        "meeting-actions-webhook": "assemblyai_webhook",
        "meeting-actions-submit": "submit_transcription",
        "meeting-actions-recover": "recover_meetings",
        "meeting-actions-storage": "transcribe_uploaded_audio",
    }
    for name, args in fns.items():
        assert "--gen2" in args and "--runtime=python312" in args and "--region=us-central1" in args
        assert f"--entry-point={entry[name]}" in args
        assert (
            "--set-secrets=ASSEMBLYAI_API_KEY=meeting-actions-assemblyai-api-key:latest,WEBHOOK_SECRET=meeting-actions-webhook-secret:latest"
            in args
        )
        assert (
            "--service-account=meeting-actions-runtime@acme-meetings.iam.gserviceaccount.com"
            in args
        )
        assert ("--allow-unauthenticated" in args) == (name == "meeting-actions-webhook")
    assert (
        "--trigger-bucket=acme-recordings" in fns["meeting-actions-storage"]
        and "--retry" in fns["meeting-actions-storage"]
    )
    assert argv(calls, "scheduler", "jobs", "create", "http", "meeting-actions-recover")
    assert argv(calls, "storage", "buckets", "add-iam-policy-binding", "gs://acme-recordings")

    # The key: on stdin of one secrets command, nowhere else.
    for call in calls:
        assert not any(API_KEY in a for a in call["argv"])
    assert API_KEY not in done.stdout + done.stderr
    carrying = [c for c in calls if c["stdin"] == API_KEY]
    assert [c["argv"][:3] for c in carrying] == [
        ["secrets", "create", "meeting-actions-assemblyai-api-key"]
    ]
    webhook_secret = [
        c for c in calls if c["argv"][:3] == ["secrets", "create", "meeting-actions-webhook-secret"]
    ]
    assert len(webhook_secret) == 1 and len(webhook_secret[0]["stdin"]) == 64
    assert "gcloud auth print-identity-token" in done.stdout and "firestore" in done.stdout


def test_second_run_updates_in_place_and_rotates_nothing(gcloud):
    gcloud("--bucket", "acme-recordings")
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
    assert len(deploys(calls)) == 4


def test_rotating_the_webhook_secret_adds_one_version(gcloud):
    gcloud()
    done, calls = gcloud("--rotate-webhook-secret", key=None)
    assert done.returncode == 0, done.stderr
    added = argv(calls, "secrets", "versions", "add")
    assert [a[3] for a in added] == ["meeting-actions-webhook-secret"]


def test_dry_run_runs_nothing_and_prints_the_plan(gcloud):
    done, calls = gcloud("--dry-run", "--bucket", "b")
    assert done.returncode == 0, done.stderr
    assert calls == []
    plan = [line for line in done.stdout.splitlines() if line.startswith("+ gcloud")]
    assert plan[0].startswith("+ gcloud services enable")
    assert any("functions deploy meeting-actions-webhook" in line for line in plan)
    assert API_KEY not in done.stdout


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
    import re

    for flag in set(re.findall(r"^    (--[a-z-]+)\)", script, re.M)):
        assert flag in done.stdout, flag


def test_script_is_valid_bash_and_shellcheck_clean():
    assert subprocess.run(["bash", "-n", str(ROOT / "deploy.sh")]).returncode == 0
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    done = subprocess.run(["shellcheck", str(ROOT / "deploy.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
