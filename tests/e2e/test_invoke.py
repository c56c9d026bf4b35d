"""Every event in events/ through the runtime, under both runtime clients, answers as the handler does in
process; and `python -m local invoke`, the Docker-free `sam local invoke`, behaves as its twin."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import pytest

from local import invoke as local_invoke
from local.cloud import create_queues
from local.console import Console
from local.deployment import DeploymentError
from local.sample_upstream import SampleUpstream
from local.sandbox import CLIENTS
from local.stack import LocalStack, Options
from tests.helpers import EVENTS, TEMPLATE, invoke, moto_cloud, reset_settings, template_refs, template_variant
from tests.running_stack import ROOT, user_environment

pytestmark = pytest.mark.e2e
EVENT_NAMES = sorted(p.stem for p in EVENTS.glob("*.json"))
VOLATILE = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
)


def normalised(answer: object) -> object:
    """An answer with its job ids and times replaced, the only parts two runs may differ in."""
    text = json.dumps(answer, sort_keys=True)
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return json.loads(text)


def through_the_runtime(client: str, upstream_url: str, db_path: str) -> list[object]:
    options = Options(upstream=upstream_url, db_path=db_path, runtime_client=client, reload=False)
    stack = LocalStack(options, Console(stream=io.StringIO()))
    stack.deploy()
    try:
        answers = []
        for name in EVENT_NAMES:
            function = _function_for(name)
            result = stack.deployment.pools[function].invoke((EVENTS / f"{name}.json").read_bytes())
            assert result.ok, (name, result.error)
            answers.append(json.loads(result.response))
        return answers
    finally:
        stack.stop()


def in_process(monkeypatch) -> list[object]:
    with moto_cloud():
        queues = create_queues(boto3.client("sqs"), TEMPLATE, template_refs())
        monkeypatch.setenv("QUEUE_URL", queues["FetchQueue"]["url"])
        reset_settings()
        return [invoke(_function_for(name), json.loads((EVENTS / f"{name}.json").read_text())) for name in EVENT_NAMES]


def _function_for(event_name: str) -> str:
    event = json.loads((EVENTS / f"{event_name}.json").read_text())
    if "Records" in event:
        return "WorkerFunction"
    if event.get("source") == "aws.events":
        return "SchedulerFunction"
    from local import apigw

    route, _ = apigw.match(TEMPLATE.routes, event["httpMethod"], event["path"])
    return route.function


@pytest.mark.parametrize("client", CLIENTS)
def test_every_event_answers_through_the_runtime_as_in_process(client, upstream, tmp_path, monkeypatch):
    runtime = through_the_runtime(client, upstream.url, str(tmp_path / "runtime.db"))
    local = in_process(monkeypatch)
    for name, ours, expected in zip(EVENT_NAMES, runtime, local, strict=True):
        assert normalised(ours) == normalised(expected), name


def run_invoke(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local", "invoke", *args],
        cwd=ROOT,
        env={**user_environment(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_invoke_prints_the_answer_on_stdout_and_lambdas_log_lines_on_stderr(tmp_path):
    done = run_invoke("ReadApiFunction", "-e", "events/get_data.json", DB_PATH=str(tmp_path / "x.db"))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["statusCode"], answer["body"]) == (200, "[]")
    assert "START RequestId:" in done.stderr and "REPORT RequestId:" in done.stderr and "Init Duration" in done.stderr


def test_invoke_exits_non_zero_when_the_function_fails(tmp_path):
    event = tmp_path / "raise.json"
    event.write_text(json.dumps({"queryStringParameters": {"action": "raise"}}))
    template = str(ROOT / "tests" / "fixtures" / "runtime" / "template.yaml")
    done = run_invoke("OtherFunction", "-e", str(event), "--template", template, DB_PATH=str(tmp_path / "x.db"))
    assert done.returncode == 1
    assert json.loads(done.stdout)["errorType"] == "ValueError"
    assert "the probe was asked to fail" in done.stderr


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The template deployed once for the module, its functions run by the runtime as `invoke` runs them."""
    db_path = str(tmp_path_factory.mktemp("deployed") / "aggregator.db")
    stack = LocalStack(Options(db_path=db_path, reload=False), Console(stream=io.StringIO()))
    stack.deploy()
    yield stack
    stack.stop()


@pytest.mark.parametrize(
    ("function", "event", "says"),
    [
        ("ReadApiFunction", "schedule", "not an API Gateway REST proxy event"),
        ("FetchApiFunction", "sqs_fetch_job", "not an API Gateway REST proxy event"),
        ("DocsFunction", "schedule", "not an API Gateway REST proxy event"),
        ("WorkerFunction", "get_data", "not an SQS event"),
        ("SchedulerFunction", "get_data", "not a scheduled event"),
    ],
)
def test_an_event_of_another_kind_gets_a_clean_error_under_the_runtime(deployed, function, event, says):
    result = deployed.deployment.pools[function].invoke((EVENTS / f"{event}.json").read_bytes())
    assert result.ok, result.error  # answered, not raised
    assert result.response is not None and says in result.response.decode()
    assert any(says in line for line in result.logs)  # logged for the operator
    assert not any("Traceback" in line for line in result.logs)


def test_invoke_exits_non_zero_when_the_function_times_out(tmp_path):
    event = tmp_path / "sleep.json"
    event.write_text(json.dumps({"queryStringParameters": {"action": "sleep", "seconds": "3"}}))
    template = str(ROOT / "tests" / "fixtures" / "runtime" / "template.yaml")
    done = run_invoke("OtherFunction", "-e", str(event), "--template", template, DB_PATH=str(tmp_path / "x.db"))
    assert done.returncode == 1
    assert json.loads(done.stdout)["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("NoSuchFunction", "-e", "events/get_data.json"), "no function 'NoSuchFunction'"),
        (("ReadApiFunction", "-e", "events/missing.json"), "cannot read the event file"),
        (("ReadApiFunction", "-e", "events/get_data.json", "--env-vars", "README.md"), "cannot read the --env-vars"),
    ],
)
def test_invoke_refuses_what_it_cannot_run_with_a_message(args, says):
    done = run_invoke(*args)
    assert done.returncode == 1
    assert says in done.stderr


def test_env_vars_override_what_the_function_declares(tmp_path, upstream):
    overrides = tmp_path / "env.json"
    overrides.write_text(json.dumps({"FetchApiFunction": {"UPSTREAM_URL": upstream.url}}))
    done = run_invoke(
        "FetchApiFunction", "-e", "events/post_fetch_sync.json", "--env-vars", str(overrides),
        DB_PATH=str(tmp_path / "x.db"), UPSTREAM_URL="http://127.0.0.1:9/posts",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["fetched"] == 100


def test_a_function_missing_a_variable_in_the_template_fails_locally_as_deployed(tmp_path):
    """QUEUE_URL moved from Globals to the fetch function alone: the scheduler has none, as deployed."""
    variant = template_variant(
        tmp_path,
        ("        QUEUE_URL: !Ref FetchQueue\n", ""),
        (
            "      CodeUri: functions/fetch_api/\n",
            "      CodeUri: functions/fetch_api/\n      Environment: { Variables: { QUEUE_URL: !Ref FetchQueue } }\n",
        ),
    )
    done = run_invoke("SchedulerFunction", "-e", "events/schedule.json", "--template", str(variant),
                      DB_PATH=str(tmp_path / "x.db"))  # fmt: skip
    assert done.returncode == 1
    assert "QUEUE_URL is not set" in done.stdout + done.stderr


def test_make_invoke_with_the_sample_upstream_fetches_offline(tmp_path):
    done = subprocess.run(
        ["make", "--no-print-directory", "invoke", "FUNCTION=FetchApiFunction", "EVENT=events/post_fetch_sync.json",
         "UPSTREAM=sample"],
        cwd=ROOT,
        env={**user_environment(), "DB_PATH": str(tmp_path / "x.db"), "UPSTREAM_URL": "http://127.0.0.1:9/posts"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["inserted"] == 100


def test_an_invoke_its_plan_refuses_stops_the_sample_upstream_it_started(tmp_path, monkeypatch):
    started: list[SampleUpstream] = []
    start = SampleUpstream.start
    monkeypatch.setattr(SampleUpstream, "start", lambda self: started.append(self) or start(self))
    options = Options(upstream="sample", db_path=str(tmp_path / "x.db"), overrides={"UPSTREAM_ATTEMPTS": "0"})
    with pytest.raises(DeploymentError, match="UPSTREAM_ATTEMPTS must be between"):
        local_invoke.invoke(options, "ReadApiFunction", EVENTS / "get_data.json", None)
    [sample] = started
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(sample.url, timeout=5)
