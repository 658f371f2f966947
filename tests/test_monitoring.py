"""monitoring/: what deploy.sh hands gcloud for the operators.

The files are code: each policy parses as Google's own AlertPolicy, the
dashboard as Dashboard and each log-based metric as LogMetric, with the
parsers that refuse an unknown field. And the log lines are an interface:
every field a metric's filter or extractor reads is in the lines the
functions really write, here in process (functions-framework's app over the
fakes of tests/fakes.py, as tests/test_lifecycle.py runs it) through a
completed meeting, a failed one, operator failures, notifications delivered
and given up, and sweeps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary
from fakes import FakeAssemblyAI, MemoryStore
from google.api import metric_pb2
from google.api_core import exceptions
from google.cloud import monitoring_dashboard_v1, monitoring_v3
from google.cloud.logging_v2.types import LogMetric
from google.protobuf import json_format
from test_lifecycle import Product, product, storage_event  # noqa: F401 - the fixture

from meeting_actions import assemblyai, config, record, storage_object

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
METRIC_FILES = sorted((MONITORING / "metrics").glob("*.json"))
POLICY_FILES = sorted((MONITORING / "policies").glob("*.json"))
DASHBOARD_FILE = MONITORING / "dashboard.json"
ALL_FILES = [*METRIC_FILES, *POLICY_FILES, DASHBOARD_FILE]
PREFIX = "meeting-actions"
# What deploy.sh fills in (render_monitoring), with the values of a deployment.
PLACEHOLDERS = {"@PREFIX@": PREFIX, "@PROJECT@": "acme-meetings", "@REGION@": "us-central1"}
# What an operator failure's `fix` can say (lifecycle.py, uploads.py, main.py).
FIXES = (
    "assemblyai_api_key",
    "firestore_permission",
    "firestore_database",
    "firestore_settings",
    "storage_permission",
    "function_configuration",
    "llm_models",
)
SIGNING_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def rendered(path: Path) -> str:
    text = path.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def metric_name(path: Path) -> str:
    return f"{PREFIX}-{path.stem}"


def metric_types_named(text: str) -> set[str]:
    return set(re.findall(r'metric\.type=\\?"logging\.googleapis\.com/user/([^"\\]+)\\?"', text))


def ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(MONITORING).as_posix() for p in paths]


# --- the files are Google's types ------------------------------------------------------------


def test_an_unknown_field_fails_the_parse():
    """The parsers below are the strict ones: a typo in a file fails the suite."""
    good = json.loads(rendered(POLICY_FILES[0]))
    monitoring_v3.AlertPolicy.from_json(json.dumps(good))
    for broken in (
        {**good, "documentaton": good["documentation"]},
        {**good, "conditions": [{**good["conditions"][0], "thresholdValue": 1}]},
    ):
        with pytest.raises(json_format.ParseError):
            monitoring_v3.AlertPolicy.from_json(json.dumps(broken))
    with pytest.raises(json_format.ParseError):
        monitoring_dashboard_v1.Dashboard.from_json(json.dumps({"displayName": "x", "tiles": []}))
    with pytest.raises(json_format.ParseError):
        LogMetric.from_json(json.dumps({"filter": "x", "labelExtractor": {}}))


@pytest.mark.parametrize("path", POLICY_FILES, ids=ids(POLICY_FILES))
def test_each_policy_is_an_alert_policy_that_says_what_to_do(path):
    policy = monitoring_v3.AlertPolicy.from_json(rendered(path))
    assert policy.display_name.startswith(f"{PREFIX}: ")
    assert policy.user_labels["app"] == PREFIX, "deploy.sh finds its policies by this label"
    assert (
        policy.conditions and policy.combiner == monitoring_v3.AlertPolicy.ConditionCombinerType.OR
    )
    assert not policy.notification_channels, "deploy.sh adds the channels (--alert-email)"
    doc = policy.documentation
    assert doc.mime_type == "text/markdown" and doc.subject.startswith(f"{PREFIX}: ")
    assert len(doc.content) > 300 and "**" in doc.content, "what it means, then what to do"
    named = metric_types_named(path.read_text().replace("@PREFIX@", PREFIX))
    assert named and named <= {metric_name(m) for m in METRIC_FILES}, named


def test_the_dashboard_is_a_dashboard_of_our_metrics():
    dashboard = monitoring_dashboard_v1.Dashboard.from_json(rendered(DASHBOARD_FILE))
    assert dashboard.display_name == f"{PREFIX}: meetings"
    titles = [t.widget.title for t in dashboard.mosaic_layout.tiles]
    for wanted in ("outcome", "latency", "operator", "backlog", "Oldest waiting", "Notifications"):
        assert any(wanted in t for t in titles), wanted
    named = metric_types_named(rendered(DASHBOARD_FILE))
    assert named == {metric_name(m) for m in METRIC_FILES}, "every metric has its chart"
    columns = dashboard.mosaic_layout.columns
    for tile in dashboard.mosaic_layout.tiles:
        assert tile.x_pos + tile.width <= columns, tile.widget.title


@pytest.mark.parametrize("path", METRIC_FILES, ids=ids(METRIC_FILES))
def test_each_metric_is_a_log_metric(path):
    metric = LogMetric.from_json(rendered(path))
    descriptor = metric.metric_descriptor
    assert {label.key for label in descriptor.labels} == set(metric.label_extractors), (
        "Google refuses a metric whose label descriptors and extractors differ"
    )
    distribution = descriptor.value_type == metric_pb2.MetricDescriptor.DISTRIBUTION
    assert distribution == bool(metric.value_extractor) == ("bucketOptions" in path.read_text())
    assert descriptor.metric_kind == metric_pb2.MetricDescriptor.DELTA
    assert f'resource.labels.service_name=~"^{PREFIX}-(' in metric.filter


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_each_file_is_json_as_deploy_sh_reads_it(path):
    """Indented by 2, so deploy.sh reads the display name from the first top-level line."""
    text = path.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if "displayName" in data:
        found = re.findall(r'^  "displayName": "(.*)",$', text, re.M)
        assert found[:1] == [data["displayName"]]
    assert set(re.findall(r"@[A-Z_]+@", text)) <= set(PLACEHOLDERS)


# --- the log lines carry every field the metrics read --------------------------------------------

# A term of the Logging query language on the payload: jsonPayload.PATH OP VALUE.
TERM = re.compile(
    r'jsonPayload\.([A-Za-z_][\w.]*)\s*(=~|!=|>=|<=|=|>|<|:)\s*("(?:[^"\\]|\\.)*"|[^\s)]+)'
)
EXTRACT = re.compile(r"EXTRACT\(jsonPayload\.([A-Za-z_][\w.]*)\)")
MISSING = object()


def payload(line: dict[str, Any], path: str) -> Any:
    value: Any = line
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def reads(metric: dict[str, Any]) -> tuple[list[tuple[str, str, str]], set[str], set[str]]:
    """(the filter's payload terms, the fields they read, the fields extracted)."""
    terms = TERM.findall(metric["filter"])
    extracted = set(EXTRACT.findall(metric.get("valueExtractor", "")))
    for expression in metric.get("labelExtractors", {}).values():
        found = EXTRACT.findall(expression)
        assert found, f"an extractor this test cannot read: {expression}"
        extracted |= set(found)
    return terms, {path for path, _, _ in terms}, extracted


def matches(line: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    for path, op, raw in terms:
        value = payload(line, path)
        wanted = json.loads(raw) if raw.startswith('"') else raw
        if op == ":" and wanted == "*":
            ok = value is not MISSING
        elif op == "=":
            ok = value is not MISSING and str(value) == str(wanted)
        else:
            raise NotImplementedError(f"jsonPayload.{path}{op}{raw}: teach this test the operator")
        if not ok:
            return False
    return True


class Receiver:
    """A notification receiver on a loopback port that answers as told."""

    def __init__(self, answers: list[int]):
        self.answers = answers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N802, N805 - http.server's naming
                handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
                handler.send_response(self.answers.pop(0) if self.answers else 200)
                handler.end_headers()

            def log_message(handler, *_args) -> None:  # noqa: N805
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_meetings(p: Product) -> None:
    """The product through every path a metric counts."""
    receiver = Receiver([200, 410])  # the first notification delivered, the second refused for good
    p.configure(NOTIFY_SIGNING_SECRET=SIGNING_SECRET, NOTIFY_ALLOW_LOCAL="true")
    try:
        p.sweep()  # nothing due: the summary line all the same

        completed = p.submit(notify_url=receiver.url).get_json()["transcript_id"]
        p.aai.finish(completed)
        assert p.deliver(completed).status_code == 200
        failed = p.submit(notify_url=receiver.url).get_json()["transcript_id"]
        p.aai.finish(failed, "Download error, unable to download the file. Bad file.")
        assert p.deliver(failed).status_code == 200
        assert p.doc(failed)["notification"]["status"] == "failed"

        # Operator failures: a rejected key (the webhook, then the sweep), Firestore
        # refusing, Cloud Storage refusing, a function without its settings.
        waiting = p.queued_meeting()
        revoked = assemblyai.ApiError("401 Authentication error, API token missing/invalid", 401)
        p.aai.gateway = lambda _: (_ for _ in ()).throw(revoked)
        assert p.deliver(waiting).status_code == 503
        p.make_stale(waiting)
        p.sweep()
        denied = exceptions.PermissionDenied("Missing or insufficient permissions.")
        p.store.faults.append(lambda op, *_: denied if op == "get" else None)
        assert p.deliver(waiting).status_code == 503
        p.store.faults.clear()

        def forbidden(*_args: Any, **_kw: Any) -> str:
            raise exceptions.Forbidden("storage.objects.get denied")

        p.monkeypatch.setattr(storage_object, "signed_url", forbidden)
        headers, body = to_binary(storage_event(generation="99"))
        p.client("transcribe_uploaded_audio", "cloudevent").post("/", headers=headers, data=body)
        p.monkeypatch.delenv("ASSEMBLYAI_API_KEY")
        config.get.cache_clear()
        assert p.submit().status_code == 500
    finally:
        receiver.close()
        p.configure()


@pytest.fixture(scope="module")
def product_lines() -> list[dict[str, Any]]:
    """Every log line the product wrote through run_meetings, parsed."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        store = MemoryStore()
        record.use(store)
        try:
            run_meetings(Product(mp, store, FakeAssemblyAI().install(mp)))
        finally:
            record.use(None)
            config.get.cache_clear()
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("path", METRIC_FILES, ids=ids(METRIC_FILES))
def test_every_field_a_metric_reads_is_in_the_functions_log_lines(product_lines, path):
    metric = json.loads(rendered(path))
    assert not re.search(r"\b(OR|NOT)\b", metric["filter"]), "this test reads AND-ed terms only"
    terms, filtered, extracted = reads(metric)
    assert terms, "a metric counts lines of ours by a payload field (event, kind ...)"
    counted = [line for line in product_lines if matches(line, terms)]
    assert counted, f"no line the functions write matches {metric['filter']}"
    for field in sorted(filtered | extracted):
        missing = [line.get("message") for line in counted if payload(line, field) is MISSING]
        assert not missing, f"jsonPayload.{field} is not in the lines {missing[:3]}"
    for field in extracted:
        values = [payload(line, field) for line in counted]
        assert all(v is not None and v != "" for v in values), (field, values)
        if field == metric.get("valueExtractor", "").removeprefix("EXTRACT(jsonPayload.")[:-1]:
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def test_every_operator_failure_says_what_to_fix(product_lines):
    operator = [line for line in product_lines if line.get("kind") == "operator"]
    assert all(line["severity"] == "ERROR" for line in operator)
    fixes = {line.get("fix") for line in operator}
    assert fixes >= {
        "assemblyai_api_key",
        "firestore_permission",
        "storage_permission",
        "function_configuration",
    }, fixes
    assert None not in fixes
    assert fixes <= set(FIXES), fixes - set(FIXES)
    doc = json.loads(rendered(MONITORING / "policies" / "operator-needed.json"))
    label = json.loads(rendered(MONITORING / "metrics" / "operator-failures.json"))
    for fix in FIXES:
        assert f"`{fix}`" in doc["documentation"]["content"], fix
        assert fix in label["metricDescriptor"]["labels"][0]["description"], fix


@pytest.mark.parametrize("path", POLICY_FILES, ids=ids(POLICY_FILES))
def test_each_alert_speaks_in_the_words_of_the_log(product_lines, path):
    """Its documentation quotes the message of the lines its metric counts."""
    content = json.loads(rendered(path))["documentation"]["content"]
    for name in metric_types_named(rendered(path)):
        metric = json.loads(
            rendered(MONITORING / "metrics" / f"{name.removeprefix(PREFIX + '-')}.json")
        )
        terms, _, _ = reads(metric)
        messages = {line["message"] for line in product_lines if matches(line, terms)}
        if metric["filter"].endswith('jsonPayload.kind="operator"'):
            continue  # their messages vary; the fixes are checked above
        assert any(m in content for m in messages), (name, messages)


# --- the sweep's summary line ---------------------------------------------------------------------


def sweep_lines(capsys) -> list[dict[str, Any]]:
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.startswith("{")]
    return [line for line in lines if line.get("event") == "sweep"]


def test_the_sweep_logs_its_backlog_on_every_run(product, capsys):  # noqa: F811 - the fixture
    capsys.readouterr()
    product.sweep()
    (idle,) = sweep_lines(capsys)
    assert idle["message"] == "sweep" and idle["due"] == 0 and idle["handled"] == 0
    assert idle["waiting_operator"] == 0 and idle["oldest_waiting_s"] == 0
    assert idle["due_by_state"] == {"queued": 0, "generating": 0, "completed": 0, "error": 0}

    tids = [product.queued_meeting() for _ in range(3)]
    for age, tid in zip((600, 300, 120), tids, strict=True):
        product.store.set_field("meetings", tid, sweep_at=record.now() - dt.timedelta(seconds=age))
    revoked = assemblyai.ApiError("401 Authentication error", 401)
    product.aai.gateway = lambda _: (_ for _ in ()).throw(revoked)
    product.sweep()
    (stopped,) = sweep_lines(capsys)
    assert stopped["stopped"] == "operator" and stopped["due"] == 3
    assert stopped["waiting_operator"] == 3, "the one that failed and the two it left untried"
    assert stopped["due_by_state"]["queued"] == 3
    assert 600 <= stopped["oldest_waiting_s"] < 660


def test_readme_operate_section_names_every_alert_metric_and_fix():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operate\n") :].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for path in POLICY_FILES:
        alert = json.loads(path.read_text())["displayName"].removeprefix("@PREFIX@: ")
        assert any(row.startswith(f"| {alert} |") for row in rows), alert
    for path in METRIC_FILES:
        assert any(row.startswith(f"| `{path.stem}` |") for row in rows), path.stem
    for fix in FIXES:
        assert any(row.startswith(f"| `{fix}` |") for row in rows), fix
    for flag in ("--alert-email", "--verify", "--delete", "--dry-run"):
        assert flag in section, flag
