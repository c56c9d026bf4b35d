"""The local stack end to end: real HTTP, moto as the cloud, the poller, the schedule. Each test that starts a
stack runs once with SQLite and once with DynamoDB (the template's tables in the stack's moto), but for the
tests of the stack's own machinery, which the store plays no part in."""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import boto3
import pytest

from aggregator.models import FetchMode, JobStatus
from local.cloud import MotoServer
from tests.helpers import BACKENDS, template_variant
from tests.running_stack import ROOT, RunningStack, user_environment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=BACKENDS)
def store_backend(request) -> str:
    return request.param


machinery = pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)  # one backend is enough


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def abandoned_request(stack, method: str, path: str) -> None:
    """A request whose answer never comes: the stack is stopped under it."""
    with contextlib.suppress(OSError):
        stack.request(method, path)


def test_sync_fetch_then_read_everything_and_filter(stack):
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["status"], job["fetched"]) == (200, "succeeded", 100)
    stack.wait_for_output("POST /fetch?mode=sync -> 200 in")
    line = next(line for line in stack.lines if "POST /fetch?mode=sync -> 200" in line)
    assert "(FetchApiFunction" in line and line.endswith("X-Fetch-Outcome: started")
    status, posts = stack.json("GET", "/data")
    assert status == 200 and [p["id"] for p in posts] == list(range(1, 101))
    status, posts = stack.json("GET", "/data?user_id=3")
    assert status == 200 and {p["user_id"] for p in posts} == {3} and len(posts) == 10


def test_task_fetch_goes_through_the_queue_to_the_worker(stack, fake_upstream):
    fake_upstream.then_respond(200, fake_upstream.posts, delay=0.5)
    status, headers, body = stack.request("POST", "/fetch?mode=task")
    job = json.loads(body)
    assert (status, job["status"], job["mode"]) == (202, "queued", "task")
    assert headers["Location"] == f"/fetch/status/{job['job_id']}"
    running = stack.wait_for_job(job["job_id"], statuses=("running",))
    assert running["started_at"] and running["finished_at"] is None
    done = stack.wait_for_job(job["job_id"])
    assert (done["status"], done["fetched"]) == ("succeeded", 100)
    stack.wait_for_output(f"job {job['job_id']} attempt 1/3: succeeded (fetched 100,")


def test_the_api_answers_like_api_gateway(stack):
    assert stack.json("GET", "/fetch/status/0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10")[0] == 404
    assert stack.json("GET", "/fetch/status/not-a-uuid")[0] == 422
    assert stack.json("GET", "/data?user_id=abc")[1]["detail"][0]["loc"] == ["query", "user_id"]
    assert stack.json("POST", "/fetch?mode=later")[0] == 422
    assert stack.json("GET", "/nowhere")[0] == 404
    assert stack.json("GET", "/")[0] == 404
    status, headers, _ = stack.request("PUT", "/fetch")
    assert (status, headers["Allow"]) == (405, "POST")


@machinery
def test_the_docs_pages_are_served(stack):
    status, headers, body = stack.request("GET", "/docs")
    assert (status, headers["Content-Type"]) == (200, "text/html")
    assert b"SwaggerUIBundle" in body
    status, _, body = stack.request("GET", "/redoc")
    assert status == 200 and b"Redoc.init(" in body
    status, spec = stack.json("GET", "/openapi.json")
    assert status == 200 and "/fetch/status/{job_id}" in spec["paths"]


def test_the_sqlite_file_persists_across_a_restart_and_dynamodbs_tables_in_moto_do_not(
    start_stack, fake_upstream, store_backend
):
    first = start_stack(UPSTREAM_URL=fake_upstream.url)
    job = first.json("POST", "/fetch?mode=sync")[1]
    assert first.stop() == 0
    second = start_stack(UPSTREAM_URL=fake_upstream.url)
    status, found = second.json("GET", f"/fetch/status/{job['job_id']}")
    posts = second.json("GET", "/data")[1]
    if store_backend == "sqlite":
        assert (status, found, len(posts)) == (200, job, 100)
    else:  # moto keeps them in memory
        assert (status, posts) == (404, [])


@pytest.mark.parametrize(  # the template's MaxReceiveCount, then MAX_RECEIVE_COUNT=2; each backend once
    ("store_backend", "deliveries"), [("sqlite", 3), ("dynamodb", 2)], indirect=["store_backend"]
)
def test_a_failing_job_is_retried_then_lands_in_the_dlq_marked_failed(start_stack, fake_upstream, deliveries):
    settings = {"MAX_RECEIVE_COUNT": str(deliveries)} if deliveries != 3 else {}
    missing = fake_upstream.url.replace("/posts", "/missing")
    stack = start_stack(UPSTREAM_URL=missing, LOCAL_VISIBILITY_TIMEOUT="1", **settings)
    job = stack.json("POST", "/fetch?mode=task")[1]
    failed = stack.wait_for_job(job["job_id"], timeout=30)
    assert (failed["status"], failed["error"]) == ("failed", "upstream answered HTTP 404")
    sqs = boto3.client("sqs", endpoint_url=stack.cloud_url, region_name="us-east-1")
    dlq = sqs.get_queue_url(QueueName="FetchDeadLetterQueue.fifo")["QueueUrl"]
    messages = []
    deadline = time.monotonic() + 15
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"]) for m in messages] == [{"job_id": job["job_id"]}]
    lines = [line.split("worker    ", 1)[1] for line in stack.lines if f"job {job['job_id']} attempt" in line]
    reason = "failed: upstream answered HTTP 404"
    retried = [
        f"job {job['job_id']} attempt {n}/{deliveries}: {reason}; back to the queue, retried in 1 s"
        for n in range(1, deliveries)
    ]
    assert lines == [*retried, f"job {job['job_id']} attempt {deliveries}/{deliveries}: {reason}; to the DLQ"]
    folded = [line for line in stack.lines if line.startswith("  WorkerFunction  WARNING job failed on this delivery")]
    assert len(folded) == deliveries - 1 and 'reason="upstream answered HTTP 404"' in folded[0]
    assert not any(line.lstrip().startswith("{") or "START RequestId" in line for line in stack.lines)


def test_the_console_names_the_reason_a_bad_message_failed(start_stack, fake_upstream):
    stack = start_stack(UPSTREAM_URL=fake_upstream.url, LOCAL_VISIBILITY_TIMEOUT="1", MAX_RECEIVE_COUNT="2")
    sqs = boto3.client("sqs", endpoint_url=stack.cloud_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="FetchQueue.fifo")["QueueUrl"]
    unknown = "00000000-0000-4000-8000-000000000000"
    sent = {}
    for body in ("garbage", json.dumps({"job_id": unknown})):
        fifo = {"MessageGroupId": "fetch-jobs", "MessageDeduplicationId": str(len(sent))}
        sent[body] = sqs.send_message(QueueUrl=url, MessageBody=body, **fifo)["MessageId"]
    garbage = f"message {sent['garbage']} attempt"
    stack.wait_for_output(f"job {unknown} attempt 2/2: failed", timeout=30)
    stack.wait_for_output(f"{garbage} 2/2: failed", timeout=10)
    lines = [line.split("worker    ", 1)[1] for line in stack.lines if "worker    " in line and " attempt " in line]
    assert f"{garbage} 1/2: failed: message body is not JSON; back to the queue, retried in 1 s" in lines
    assert f"{garbage} 2/2: failed: message body is not JSON; to the DLQ" in lines
    assert f"job {unknown} attempt 1/2: failed: no job {unknown}; back to the queue, retried in 1 s" in lines
    assert "the function reported it failed" not in stack.output


def test_reads_are_not_blocked_while_a_fetch_waits_on_the_upstream(stack, fake_upstream):
    fake_upstream.then_respond(200, fake_upstream.posts, delay=3)
    fetch = threading.Thread(target=stack.request, args=("POST", "/fetch?mode=sync"))
    fetch.start()
    time.sleep(0.3)
    for _ in range(5):
        assert stack.request("GET", "/data?limit=1")[0] == 200
        assert fetch.is_alive()  # answered while the fetch still runs
    fetch.join()


def test_the_schedule_fires_the_scheduled_function(start_stack, fake_upstream):
    stack = start_stack(UPSTREAM_URL=fake_upstream.url, SCHEDULE_RATE="rate(1 second)")
    store = stack.store()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scheduled = [j for j in store.list_jobs() if (j.mode, j.status) == (FetchMode.SCHEDULED, JobStatus.SUCCEEDED)]
        if scheduled:
            break
        time.sleep(0.1)
    assert scheduled, stack.output
    stack.wait_for_output(f"SchedulerFunction fired: job {scheduled[0].job_id} started; next at ")


# on both backends: with DynamoDB the request in flight writes to moto, which must outlive it
def test_one_ctrl_c_lets_a_request_in_flight_finish_then_stops_every_part(start_stack, fake_upstream):
    stack = start_stack(UPSTREAM_URL=fake_upstream.url)
    fake_upstream.then_respond(200, fake_upstream.posts, delay=2)
    asked = fake_upstream.requests
    answers = []
    fetch = threading.Thread(target=lambda: answers.append(stack.json("POST", "/fetch?mode=sync")))
    fetch.start()
    wait_until(lambda: fake_upstream.requests > asked)
    assert stack.stop() == 0, stack.output
    fetch.join()
    assert answers[0][0] == 200 and answers[0][1]["status"] == "succeeded"
    assert "letting 1 invocation(s) finish" in stack.output
    assert stack.output.rstrip().endswith("stopped.")
    with pytest.raises(OSError):
        stack.request("GET", "/data")


@machinery
def test_a_second_ctrl_c_stops_at_once_without_a_traceback_or_a_stranded_job(start_stack, fake_upstream):
    stack = start_stack(UPSTREAM_URL=fake_upstream.url)
    fake_upstream.then_respond(200, fake_upstream.posts, delay=20)
    asked = fake_upstream.requests
    threading.Thread(target=abandoned_request, args=(stack, "POST", "/fetch?mode=sync"), daemon=True).start()
    wait_until(lambda: fake_upstream.requests > asked)
    stack.process.send_signal(signal.SIGINT)
    stack.wait_for_output("Ctrl-C again stops at once")
    assert stack.stop(signal.SIGINT, timeout=5) == 130
    assert "Traceback" not in stack.output and stack.output.rstrip().endswith("stopped at once.")
    again = start_stack(UPSTREAM_URL=fake_upstream.url)
    [abandoned] = again.json("GET", "/fetch/jobs")[1]  # on the same database: no job is left stranded
    assert (abandoned["mode"], abandoned["status"]) == ("sync", "failed") and "abandoned" in abandoned["error"]
    status, headers, _ = again.request("POST", "/fetch?mode=sync")
    assert (status, headers["X-Fetch-Outcome"]) == (200, "started")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PORT": "abc"}, "PORT must be a whole number"),
        ({"UPSTREAM_TIMEOUT": "-3"}, "UpstreamTimeout, which must be at least 1; got '-3'"),
        ({"UPSTREAM_ATTEMPTS": "0"}, "UPSTREAM_ATTEMPTS must be between"),
        ({"UPSTREAM_URL": "file:///etc/passwd"}, "UPSTREAM_URL must be an http(s) URL"),
        ({"SCHEDULE_RATE": "cron(0 * * * ? *)"}, "cannot run the schedule"),
        ({"SCHEDULE_RATE": "rate(0 minutes)"}, "cannot run the schedule"),
        ({"LOCAL_VISIBILITY_TIMEOUT": "-1"}, "LOCAL_VISIBILITY_TIMEOUT must be a whole number"),
        ({"STORE_BACKEND": "mysql"}, "StoreBackend, which must be one of sqlite, dynamodb; got 'mysql'"),
        ({"MAX_RECEIVE_COUNT": "abc"}, "MAX_RECEIVE_COUNT sets the template parameter MaxReceiveCount, which must"),
        ({"MAX_RECEIVE_COUNT": "11"}, "MaxReceiveCount, which must be at most 10; got '11'"),
        ({"UPSTREAM_TIMEOUT": "100"}, "UpstreamTimeout, which must be at most 25; got '100'"),
        ({"POWERTOOLS_LOG_LEVEL": "LOUD"}, "ReadApiFunction: POWERTOOLS_LOG_LEVEL must be a log level"),
    ],
)
def test_a_bad_setting_stops_the_stack_with_a_message_naming_it(tmp_path, env, says):
    result = run_to_exit({"DB_PATH": str(tmp_path / "x.db"), **env})
    assert result.returncode == 1
    assert says in result.stderr


def test_an_upstream_url_holding_a_space_stops_the_stack_without_showing_its_secrets(tmp_path):
    url = "http://user:secretpw@127.0.0.1:47012/po sts?k=secretq"
    result = run_to_exit({"UPSTREAM_URL": url, "DB_PATH": str(tmp_path / "x.db")})
    assert result.returncode == 1
    assert "UPSTREAM_URL must be a URL without whitespace or control characters; character 40 is U+0020" in (
        result.stderr
    )
    assert "secret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Resources: [unclosed\n", "is not valid YAML: while parsing"),
        ("- a list\n", "is not a template: its top level is not a mapping"),
    ],
)
def test_a_template_that_is_not_one_stops_the_stack_and_an_invoke_with_a_message(tmp_path, text, says):
    template = tmp_path / "template.yaml"
    template.write_text(text)
    for args in (("--template", str(template)), ("invoke", "ReadApiFunction", "-e", "events/get_data.json",
                                                 "--template", str(template))):  # fmt: skip
        result = run_to_exit({"DB_PATH": str(tmp_path / "x.db")}, *args)
        assert result.returncode == 1 and f"local stack failed to start: {template} {says}" in result.stderr, args
        assert "Traceback" not in result.stderr


def run_to_exit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local", *args],
        cwd=ROOT,
        env={**user_environment(), "PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_moto_port_in_use_is_reported_at_once(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_to_exit({"MOTO_PORT": str(port), "DB_PATH": str(tmp_path / "x.db")})
    assert result.returncode == 1
    assert f"MOTO_PORT {port} cannot be used" in result.stderr


READ_API = "      CodeUri: functions/read_api/\n"


@pytest.mark.parametrize(
    ("bad", "edit", "says"),
    [
        ({"UPSTREAM_ATTEMPTS": "0"}, None, "ReadApiFunction: UPSTREAM_ATTEMPTS must be between"),
        ({"SCHEDULE_RATE": "cron(0 * * * ? *)"}, None, "cannot run the schedule"),
        ({"LOCAL_RUNTIME_CLIENT": "java"}, None, "LOCAL_RUNTIME_CLIENT must be one of"),
        (
            {},
            (READ_API, READ_API + "      MemorySize: 64\n"),
            "ReadApiFunction: AWS_LAMBDA_FUNCTION_MEMORY_SIZE must be between 128 and 10240, got '64'",
        ),
        (
            {},
            ("POWERTOOLS_SERVICE_NAME: aggregator", "POWERTOOLS_SERVICE_NAME: !Ref ServiceName"),
            "ReadApiFunction: the template refers to 'ServiceName', which it does not define",
        ),
        ({}, (READ_API, READ_API + "      Runtime: nodejs22.x\n"), "ReadApiFunction: the local stack runs Python"),
        (
            {},
            ("Schedule: !Ref ScheduleRate", "Schedule: !Ref Rate"),
            "SchedulerFunction: its schedule refers to 'Rate', which the template does not define",
        ),
    ],
    ids=["a function's", "the schedule's", "the runtime's", "a memory size", "a reference", "a runtime", "a rate"],
)
def test_a_bad_setting_stops_the_stack_before_it_takes_a_port(tmp_path, bad, edit, says):
    """Both ports are taken: a stack that started moto or the API before checking its settings names a port."""
    template = template_variant(tmp_path, edit) if edit else ROOT / "template.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {"MOTO_PORT": port, "PORT": port, "DB_PATH": str(tmp_path / "x.db"), **bad}
        result = run_to_exit(env, "--template", str(template))
    assert result.returncode == 1
    assert says in result.stderr and "cannot be used" not in result.stderr, result.stderr


def test_a_moto_port_taken_after_the_check_is_an_error_not_an_exit():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"moto's server cannot listen on 127\.0\.0\.1:"):
            MotoServer("127.0.0.1", taken.getsockname()[1])


@machinery
def test_one_database_serves_one_stack_or_invoke_at_a_time(stack):
    db_path = stack.env["DB_PATH"]
    in_use = f"{db_path} is in use by another local stack or invoke"
    second = run_to_exit({"DB_PATH": db_path})
    assert second.returncode == 1 and in_use in second.stderr
    one_off = run_to_exit({"DB_PATH": db_path}, "invoke", "SchedulerFunction", "-e", "events/schedule.json")
    assert one_off.returncode == 1 and in_use in one_off.stderr


@machinery
def test_a_port_in_use_is_reported(stack, tmp_path):
    port = stack.url.rsplit(":", 1)[1]
    result = run_to_exit({"PORT": port, "DB_PATH": str(tmp_path / "other.db")})
    assert result.returncode == 1
    assert f"PORT {port} cannot be used: Address already in use; set another, such as PORT=" in result.stderr


@machinery
def test_with_api_key_set_post_fetch_needs_it_and_reads_stay_open(keyed_stack):
    for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": "s3cret-ke"}, {"Authorization": "s3cret-key"}):
        status, _, body = keyed_stack.request("POST", "/fetch?mode=sync", headers)
        assert (status, json.loads(body)) == (403, {"message": "Forbidden"})
    assert keyed_stack.request("POST", "/fetch?mode=sync", {"X-Api-Key": "s3cret-key"})[0] == 200
    assert keyed_stack.json("GET", "/data")[0] == 200
    assert keyed_stack.request("PUT", "/fetch")[0] == 405


SPELLINGS_OF_FETCH = [
    "/fetch/?mode=sync",
    "/fetc%68?mode=sync",
    "/%66etch?mode=sync",
    "/fetch%2F?mode=sync",
    "/fetch%2f?mode=task",
    "//fetch?mode=sync",
    "/fetch/./?mode=sync",
    "/FETCH?mode=sync",
    "/fetch;x?mode=sync",
    "/fetch/%2e?mode=sync",
    "/fetch%00?mode=task",
    "/fetch/status/..%2F..%2Ffetch?mode=sync",
]


@machinery
@pytest.mark.parametrize("spelling", SPELLINGS_OF_FETCH)
def test_no_spelling_of_the_fetch_path_skips_the_api_key(keyed_stack, fake_upstream, spelling):
    asked, jobs = fake_upstream.requests, keyed_stack.json("GET", "/fetch/jobs")[1]
    status, _, body = keyed_stack.request("POST", spelling)
    assert status in (403, 404, 405), (status, body)
    assert fake_upstream.requests == asked  # nothing was fetched
    assert keyed_stack.json("GET", "/fetch/jobs")[1] == jobs  # no job was started


def test_a_job_id_with_a_trailing_newline_is_not_that_job(stack):
    job = stack.json("POST", "/fetch?mode=sync")[1]
    for suffix in ("%0a", "%0A", "%0d%0a", "%20", "%00"):
        status, answer = stack.json("GET", f"/fetch/status/{job['job_id']}{suffix}")
        assert status in (404, 422) and answer.get("job_id") is None, (suffix, status)


@pytest.fixture(scope="module")
def keyed_stack(fake_upstream, tmp_path_factory, store_backend):
    running = RunningStack(
        {
            "UPSTREAM_URL": fake_upstream.url,
            "API_KEY": "s3cret-key",
            "DB_PATH": str(tmp_path_factory.mktemp("k") / "k.db"),
            "STORE_BACKEND": store_backend,
        }
    )
    yield running
    running.stop()


def test_upstream_faults_through_the_stack(stack, fake_upstream):
    fake_upstream.then_respond(503, {}, {"Retry-After": "0"})
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["status"]) == (200, "succeeded")  # retried once, then fetched
    fake_upstream.then_respond(200, "<html>not json</html>")
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["status"]) == (502, "failed") and "not JSON" in job["error"]
    fake_upstream.then_respond(200, [{"userId": 1, "id": 1, "title": None, "body": "b"}, *fake_upstream.posts[1:]])
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["rejected"], job["unchanged"]) == (200, 1, 99)
    assert stack.json("GET", "/data?limit=1")[1][0]["title"] == "post 1 title"  # the rejected version is not stored
