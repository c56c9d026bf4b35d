"""The local stack runs functions as Lambda does: a process per instance under a runtime client, each
function with its own environment, the template's timeouts, memory sizes and concurrency.

These tests drive a template of probe functions (tests/fixtures/runtime) through the stack over HTTP.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import threading
import time
import urllib.request

import boto3
import pytest

from tests.running_stack import ROOT, RunningStack

pytestmark = pytest.mark.e2e
PROBES = ROOT / "tests" / "fixtures" / "runtime"
REPORT = re.compile(
    r"REPORT RequestId: (?P<id>\S+)\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB"
    r"\tMax Memory Used: \d+ MB(?P<init>\tInit Duration: [\d.]+ ms)?(?P<status>\tStatus: \w+)?"
)


def start_probes(tmp_path, template=PROBES / "template.yaml", **env: str) -> RunningStack:
    settings = {"DB_PATH": str(tmp_path / "probe.db"), "LOCAL_VISIBILITY_TIMEOUT": "1", "CANARY": "leaked", **env}
    return RunningStack(settings, args=("--verbose", "--template", str(template)))


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    stack = start_probes(tmp_path_factory.mktemp("probes"), LOCAL_IDLE_SECONDS="2")
    yield stack
    stack.stop()


def probe(stack: RunningStack, path: str) -> dict:
    status, _, body = stack.request("GET", path)
    assert status == 200, body
    return json.loads(body)


def at_once(stack: RunningStack, *paths: str) -> list[tuple[int, bytes]]:
    answers: dict[int, tuple[int, bytes]] = {}

    def call(n: int, path: str) -> None:
        status, _, body = stack.request("GET", path)
        answers[n] = (status, body)

    threads = [threading.Thread(target=call, args=(n, path)) for n, path in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answers[n] for n in range(len(paths))]


def test_each_function_sees_its_own_variables_and_lambdas_only(probes):
    own = probe(probes, "/probe")["environment"]
    other = probe(probes, "/other")["environment"]
    assert (own["OWN"], own["SHARED"], own["GREETING"]) == ("probe-only", "from-globals", "hello")
    assert own["QUEUE_URL"].endswith("/ProbeQueue") and own["AWS_ENDPOINT_URL"] == probes.cloud_url
    assert "OWN" not in other and "QUEUE_URL" not in other and other["SHARED"] == "from-globals"
    assert (other["AWS_LAMBDA_FUNCTION_NAME"], other["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) == ("OtherFunction", "128")
    assert (other["_HANDLER"], other["AWS_REGION"]) == ("app.lambda_handler", "us-east-1")
    assert other["LAMBDA_TASK_ROOT"].endswith("functions/probe")
    assert "CANARY" not in own and "CANARY" not in other  # nothing comes from the stack's own environment
    assert "DB_PATH" not in own and "DB_PATH" not in other  # an override reaches only the functions declaring it


def test_the_layer_is_on_the_path_and_the_context_counts_down_from_the_timeout(probes):
    answer = probe(probes, "/probe")
    assert answer["layer"] == "probe layer"
    assert 4000 < answer["remaining_ms"] <= 5000


def test_a_cold_start_then_warm_reuse_with_lambdas_log_lines(tmp_path):
    stack = start_probes(tmp_path)
    try:
        first, second = probe(stack, "/other"), probe(stack, "/other")
        assert first["pid"] == second["pid"] and (first["invocations"], second["invocations"]) == (1, 2)
        stack.wait_for_output("REPORT RequestId", timeout=5)
        time.sleep(0.2)
        reports = [m for m in map(REPORT.search, stack.lines) if m]
        assert len(reports) == 2, stack.output
        assert reports[0]["init"] and not reports[1]["init"]  # Init Duration on the cold start only
        started = stack.output.index(f"START RequestId: {reports[0]['id']}")
        printed = stack.output.index(f"probe env in request {reports[0]['id']}")
        ended = stack.output.index(f"END RequestId: {reports[0]['id']}")
        assert started < printed < ended  # the function's own output between START and END
    finally:
        stack.stop()


def test_concurrent_requests_get_concurrent_instances(probes):
    answers = at_once(probes, "/probe?action=sleep&seconds=1.5", "/probe?action=sleep&seconds=1.5")
    a, b = (json.loads(body) for _, body in answers)
    assert a["pid"] != b["pid"]
    assert a["started"] < b["finished"] and b["started"] < a["finished"]  # they ran at the same time


def test_past_its_timeout_an_invocation_is_killed_and_reported_as_lambda_does(probes):
    before = probe(probes, "/other")["pid"]
    status, _, body = probes.request("GET", "/other?action=sleep&seconds=4")
    assert (status, json.loads(body)) == (502, {"message": "Internal server error"})
    probes.wait_for_output("Task timed out after 1.00 seconds")
    assert any((m := REPORT.search(line)) and m["status"] == "\tStatus: timeout" for line in probes.lines)
    assert probe(probes, "/other")["pid"] != before  # the timed-out instance is gone


def test_past_the_integration_timeout_api_gateway_answers_504_while_the_function_runs_on(probes):
    before = len(probes.lines)
    status, _, body = probes.request("GET", "/impatient?action=sleep&seconds=2")
    assert (status, json.loads(body)) == (504, {"message": "Endpoint request timed out"})
    probes.wait_for_output("-> 504", timeout=5)
    line = next(line for line in probes.lines if "GET /impatient" in line)
    assert "(ProbeFunction)" in line
    request_id = next(m[1] for m in map(re.compile(r"probe sleep in request (\S+)").search, probes.lines[before:]) if m)
    probes.wait_for_output(f"REPORT RequestId: {request_id}", timeout=10)
    report = next(m for m in map(REPORT.search, probes.lines) if m and m["id"] == request_id)
    assert not report["status"] and float(re.search(r"Duration: ([\d.]+)", report[0])[1]) >= 2000  # it ran on


def test_past_its_memory_size_an_instance_is_killed(probes):
    status, _, _ = probes.request("GET", "/probe?action=hog&mb=300")
    assert status == 502
    probes.wait_for_output("Runtime.OutOfMemory")


def test_a_reserved_concurrency_throttles_the_next_request_as_lambda_does(probes):
    answers = at_once(probes, "/reserved?action=sleep&seconds=1.5", "/reserved?action=sleep&seconds=1.5")
    assert sorted(status for status, _ in answers) == [200, 500]
    [throttled] = [json.loads(body) for status, body in answers if status == 500]
    assert throttled == {"message": "Internal server error"}


def test_an_import_error_is_reported_as_an_init_error(probes):
    status, _, body = probes.request("GET", "/broken")
    assert (status, json.loads(body)) == (502, {"message": "Internal server error"})
    probes.wait_for_output("broken at import")
    probes.wait_for_output("Phase: init\tStatus: error")
    durations = [
        float(m[1]) for m in map(re.compile(r"INIT_REPORT Init Duration: (-?[\d.]+) ms").search, probes.lines) if m
    ]
    assert durations and all(0 < d < 10_000 for d in durations)


def test_a_handler_that_raises_answers_502_and_logs_the_error(probes):
    status, _, _ = probes.request("GET", "/probe?action=raise")
    assert status == 502
    probes.wait_for_output("ValueError: the probe was asked to fail")


def test_a_response_over_lambdas_6_mb_limit_is_an_error(probes):
    assert probes.request("GET", "/probe?bytes=6000000")[0] == 200
    assert probes.request("GET", "/probe?bytes=6300000")[0] == 502
    probes.wait_for_output("Function.ResponseSizeTooLarge")


def test_idle_instances_are_reaped(probes):
    first = probe(probes, "/other")["pid"]
    time.sleep(3.5)  # LOCAL_IDLE_SECONDS=2, reaped within a second after
    assert probe(probes, "/other")["pid"] != first


def test_a_delivery_that_times_out_goes_back_to_the_queue_then_to_the_dlq(probes):
    sqs = boto3.client("sqs", endpoint_url=probes.cloud_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="ProbeQueue")["QueueUrl"]
    message_id = sqs.send_message(QueueUrl=url, MessageBody="3")["MessageId"]
    probes.wait_for_output(f"message {message_id} attempt 2/2: failed", timeout=20)
    first = next(line for line in probes.lines if f"message {message_id} attempt 1/2" in line)
    last = next(line for line in probes.lines if f"message {message_id} attempt 2/2" in line)
    assert "Task timed out after 1.00 seconds" in first and first.endswith("back to the queue, retried in 1 s")
    assert last.endswith("to the DLQ")
    dlq = sqs.get_queue_url(QueueName="ProbeDeadLetterQueue")["QueueUrl"]
    moved = []
    deadline = time.monotonic() + 10
    while not moved and time.monotonic() < deadline:
        moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert [m["MessageId"] for m in moved] == [message_id]


def test_the_queue_is_polled_by_up_to_the_mappings_maximum_concurrency_batches_at_once(probes):
    sqs = boto3.client("sqs", endpoint_url=probes.cloud_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName="ProbeQueue")["QueueUrl"]
    sent = [sqs.send_message(QueueUrl=url, MessageBody="0.5")["MessageId"] for _ in range(5)]
    for message_id in sent:
        probes.wait_for_output(f"probe record {message_id} ran", timeout=20)
    ran = re.compile(r"probe record (\S+) ran from ([\d.]+) to ([\d.]+)")
    spans = [(float(m[2]), float(m[3])) for m in map(ran.search, probes.lines) if m and m[1] in sent]
    at_once = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert at_once == 2  # the template's MaximumConcurrency: batches ran side by side, never more


def test_the_clouds_dashboard_shows_the_templates_queues(probes):
    with urllib.request.urlopen(probes.cloud_url + "/moto-api/", timeout=10) as page:
        assert page.status == 200
    with urllib.request.urlopen(probes.cloud_url + "/moto-api/data.json", timeout=10) as data:
        queues = json.load(data)["sqs"]["Queue"]
    assert {queue["name"] for queue in queues} >= {"ProbeQueue", "ProbeDeadLetterQueue"}


def test_a_stack_leaves_the_default_database_alone_when_its_worker_declares_no_store(tmp_path):
    """The probes' worker keeps no jobs: a stack of them must not open (or settle the jobs of) the database
    `make run` keeps by default, which another stack may be serving."""
    default = ROOT / ".local" / "aggregator.db"

    def state() -> tuple[bool, int]:
        return default.exists(), default.stat().st_mtime_ns if default.exists() else 0

    before = state()
    stack = start_probes(tmp_path)
    probe(stack, "/probe")
    stack.stop()
    assert state() == before


def test_a_code_change_recycles_the_instances_before_the_next_invocation(tmp_path):
    copy = tmp_path / "probes"
    shutil.copytree(PROBES, copy)
    stack = start_probes(tmp_path, template=copy / "template.yaml")
    try:
        assert probe(stack, "/other")["version"] == 1
        app = copy / "functions" / "probe" / "app.py"
        app.write_text(app.read_text().replace("VERSION = 1", "VERSION = 2"))
        stack.wait_for_output("instances recycled", timeout=10)
        assert probe(stack, "/other")["version"] == 2
    finally:
        stack.stop()


def test_a_code_change_lets_a_busy_instance_finish_then_recycles_it(tmp_path):
    copy = tmp_path / "probes"
    shutil.copytree(PROBES, copy)
    stack = start_probes(tmp_path, template=copy / "template.yaml")
    try:
        answers: list[dict] = []
        busy = threading.Thread(target=lambda: answers.append(probe(stack, "/probe?action=sleep&seconds=2")))
        busy.start()
        stack.wait_for_output("probe sleep in request", timeout=10)
        app = copy / "functions" / "probe" / "app.py"
        app.write_text(app.read_text().replace("VERSION = 1", "VERSION = 2"))
        stack.wait_for_output("instances recycled", timeout=10)
        busy.join()
        assert answers[0]["version"] == 1  # it finished on the code it started with
        after = probe(stack, "/probe")
        assert (after["version"], after["invocations"]) == (2, 1) and after["pid"] != answers[0]["pid"]
    finally:
        stack.stop()


def test_past_the_local_concurrency_a_request_waits_for_a_free_instance(tmp_path):
    stack = start_probes(tmp_path, LOCAL_CONCURRENCY="1")
    try:
        answers = at_once(stack, "/probe?action=sleep&seconds=1", "/probe?action=sleep&seconds=1")
        assert [status for status, _ in answers] == [200, 200]
        first, second = sorted((json.loads(body) for _, body in answers), key=lambda a: a["started"])
        assert first["pid"] == second["pid"] and second["started"] >= first["finished"]  # one after the other
    finally:
        stack.stop()


def raw_request(stack: RunningStack, request: bytes) -> tuple[int, bytes]:
    """Status and body of one request written byte for byte on a socket."""
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            length = re.search(rb"Content-Length: (\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    return int(reply.split(b" ", 2)[1]), reply.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: abc\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 1e3\r\n",
        b"Content-Length: \xd9\xa3\r\n",  # an Arabic-Indic digit three
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\n",  # with a chunk size that is not hexadecimal
    ],
)
def test_a_malformed_body_framing_is_answered_400(probes, headers):
    body = b"zz\r\nhello\r\n0\r\n\r\n" if b"chunked" in headers else b"hello"
    status, _ = raw_request(probes, b"POST /echo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)
    assert status == 400


def test_a_body_shorter_than_its_length_is_answered_400(probes):
    host, port = probes.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        connection.shutdown(socket.SHUT_WR)
        reply = connection.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {"message": "Bad Request"}


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /probe\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /probe HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(120)) + b"\r\n", 431),
        (b"GET /probe HTTP/9.9\r\nHost: x\r\n\r\n", 505),
    ],
)
def test_the_servers_own_refusals_come_in_the_apis_json_shape(probes, request_bytes, status):
    host, port = probes.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request_bytes)
        reply = connection.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status) and b"Content-Type: application/json" in head
    assert json.loads(body)["message"]


def test_a_chunked_body_reaches_the_function_whole(probes):
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    status, body = raw_request(probes, request)
    assert (status, json.loads(body)) == (200, {"body": "hello world", "base64": False})


def test_a_body_over_api_gateways_10_mb_is_answered_413(probes):
    status, _ = raw_request(probes, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10485761\r\n\r\n")
    assert status == 413


def test_a_request_whose_client_hung_up_still_gets_its_console_line(probes):
    host, port = probes.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        connection.sendall(b"GET /probe?action=sleep&seconds=1&hung=up HTTP/1.1\r\nHost: x\r\n\r\n")
    probes.wait_for_output("GET /probe?action=sleep&seconds=1&hung=up -> 200", timeout=10)
