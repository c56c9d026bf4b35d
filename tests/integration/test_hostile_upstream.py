"""The fetch and worker handlers against an upstream that drips, redirects away or fails to queue:
each ends within its function's time, and no secret reaches a job's record."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from botocore.stub import Stubber

from aggregator import ingest, queue
from aggregator.config import settings
from aggregator.ingest import FINISH_MARGIN_SECONDS
from aggregator.models import FetchMode, JobStatus
from aggregator.store import WAIT_MARGIN_SECONDS, open_store
from aggregator.store.sqlite import SqliteStore
from local.sample_upstream import SampleUpstream
from tests.helpers import api_event, body, handler, invoke, load_event, queued_job, reset_settings
from tests.integration.test_worker import failures, record, sqs_event
from tests.unit.test_store import fill_posts
from tests.utils.hostile_upstream import HostileUpstream, drip, http_response, send

SLACK = 1.5
OUT_OF_BUDGET = re.compile(r"upstream fetch ran out of its (1\.[5-9]|2) s budget")  # 2 s less the call's own time
POSTS = json.dumps([{"userId": 1, "id": 1, "title": "t", "body": "b"}]).encode()


@pytest.fixture
def dripping(monkeypatch):
    """An upstream that takes a minute to send its answer, a byte at a time, each byte well within the timeout."""
    response = http_response(body=POSTS)
    with HostileUpstream(drip(response, every=60 / len(response))) as server:
        monkeypatch.setenv("UPSTREAM_URL", server.url)
        monkeypatch.setenv("UPSTREAM_TIMEOUT", "20")
        reset_settings()
        yield server


def test_a_sync_fetch_answers_504_with_the_failed_job_before_its_function_times_out(dripping, store):
    seconds = FINISH_MARGIN_SECONDS + 2  # a function timeout that leaves the fetch 2 s
    started = time.monotonic()
    response = invoke("FetchApiFunction", load_event("post_fetch_sync"), timeout=seconds)
    assert time.monotonic() - started < seconds - FINISH_MARGIN_SECONDS + SLACK
    assert response["statusCode"] == 504
    job = body(response)
    assert job["status"] == "failed" and OUT_OF_BUDGET.fullmatch(job["error"])
    assert store.count_posts() == 0


def test_the_worker_ends_a_fetch_within_its_function_timeout_less_the_margin(dripping, store):
    job = queued_job(store, FetchMode.TASK)
    seconds = FINISH_MARGIN_SECONDS + 2
    started = time.monotonic()
    event = sqs_event(record(job.job_id, receive_count=settings().max_receive_count))
    assert failures(invoke("WorkerFunction", event, timeout=seconds)) == ["m-1"]
    assert time.monotonic() - started < seconds - FINISH_MARGIN_SECONDS + SLACK
    failed = store.get_job(job.job_id)
    assert failed.status == JobStatus.FAILED and OUT_OF_BUDGET.fullmatch(failed.error)


def test_a_redirect_to_another_origin_stores_nothing_of_it(upstream, store):
    with SampleUpstream(5) as elsewhere:
        upstream.then_respond(302, "", {"Location": elsewhere.url})
        response = invoke("FetchApiFunction", load_event("post_fetch_sync"))
        assert elsewhere.requests == 0
    assert response["statusCode"] == 502
    assert body(response)["error"] == "upstream redirected to another origin"
    assert store.count_posts() == 0


ASSUMED_ROLE = "arn:aws:sts::123456789012:assumed-role/api-aggregator-FetchApiRole-1A2B3C/fetch"


def test_a_queue_failure_records_aws_error_code_only_and_logs_the_detail(upstream, sqs, store, log_lines):
    with Stubber(queue._sqs(settings().aws_endpoint_url)) as aws:
        aws.add_client_error(
            "send_message",
            service_error_code="AccessDenied",
            service_message=f"User: {ASSUMED_ROLE} is not authorized to perform: sqs:sendmessage",
            http_status_code=403,
        )
        response = invoke("FetchApiFunction", load_event("post_fetch_task"))
    assert response["statusCode"] == 503
    [job] = store.list_jobs()
    status = invoke("ReadApiFunction", api_event("get_job_status", path_params={"job_id": job.job_id}))
    assert body(status)["error"] == "could not enqueue the job: AccessDenied"
    assert "123456789012" not in status["body"]
    logged = json.dumps(log_lines())
    assert ASSUMED_ROLE in logged  # for operators, in the function's own log


def test_credentials_in_the_upstream_url_reach_neither_the_job_nor_the_logs(upstream, store, monkeypatch, log_lines):
    url = upstream.url.replace("http://", "http://alice:s3cret@") + "?api_key=k3y"
    monkeypatch.setenv("UPSTREAM_URL", url)
    reset_settings()
    with SampleUpstream(1) as elsewhere:
        upstream.then_respond(200, [], {"Link": f'<{elsewhere.url}?api_key=k3y>; rel="next"'})
        response = invoke("FetchApiFunction", load_event("post_fetch_sync"))
    job = body(response)
    assert (response["statusCode"], job["error"]) == (502, "upstream next-page link leaves its origin")
    status = invoke("ReadApiFunction", api_event("get_job_status", path_params={"job_id": job["job_id"]}))
    logged = json.dumps(log_lines())
    assert "api_key=***" in logged
    for said in (status["body"], response["body"], logged):
        assert "s3cret" not in said and "k3y" not in said


def fetch_failed_detail(log_lines) -> str:
    [failed] = [line for line in log_lines() if line.get("message") == "fetch failed"]
    return failed["detail"]


def test_the_log_of_an_http_error_says_what_answered_when_and_to_which_request(upstream, log_lines, monkeypatch):
    monkeypatch.setenv("UPSTREAM_URL", upstream.url.replace("http://", "http://alice:s3cret@") + "?api_key=k3y")
    reset_settings()
    upstream.then_respond(500, "oops")
    assert invoke("FetchApiFunction", load_event("post_fetch_sync"))["statusCode"] == 502
    detail = fetch_failed_detail(log_lines)
    where = re.escape(upstream.url.replace("http://", "http://***@")) + r"\?api_key=\*\*\*"
    assert re.fullmatch(
        rf"HTTP 500 \S.* on attempt 1 of 1; handling an HTTP 500 answer, \d+\.\d\d s into the fetch \(budget 25 s\): "
        rf"GET {where}",
        detail,
    ), detail


def test_the_log_of_headers_dripped_past_the_budget_says_what_was_being_read(store, log_lines, monkeypatch):
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(f"X-Slow-{n}: {n}\r\n".encode() for n in range(60))
    with HostileUpstream(drip(head + b"\r\n[]", every=1.0, after=17)) as server:  # the status line, then 1 byte/s
        monkeypatch.setenv("UPSTREAM_URL", server.url)
        reset_settings()
        response = invoke("FetchApiFunction", load_event("post_fetch_sync"), timeout=FINISH_MARGIN_SECONDS + 2)
    assert response["statusCode"] == 504
    detail = fetch_failed_detail(log_lines)
    budget = r"\d\.\d\d s into the fetch \(budget (1\.[5-9]|2) s\)"
    assert re.search(
        rf"the budget ran out while waiting for the status line and headers, {budget}: GET {re.escape(server.url)}$",
        detail,
    ), detail


# A merge that would delete a million posts gets MERGE_SECONDS, far less than that takes on any machine. The
# upstream answers ANSWER_AFTER_SECONDS into the invocation, however long the handler took to reach its fetch.
MERGE_SECONDS = 0.3
ANSWER_AFTER_SECONDS = 1.0


@pytest.fixture(scope="session")
def a_million_posts_file(tmp_path_factory) -> Path:
    """A database of the store's schema holding a million posts, written once a process."""
    path = tmp_path_factory.mktemp("million") / "posts.db"
    SqliteStore(str(path)).close()
    fill_posts(str(path), 1_000_000)
    return path


@pytest.fixture
def a_million_posts(a_million_posts_file):
    """The functions' store, on a copy of the million posts."""
    target = Path(settings().db_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(a_million_posts_file, target)
    return open_store(settings())


def invoke_with_a_merge_short_of_time(monkeypatch, function: str, event: dict) -> tuple[dict, float]:
    """Invoke `function` with an upstream that lists none: the merge would delete every post. The margin kept
    after the fetch is cut to the store's own, so the fetch may run until the merge's deadline and is never
    the part cut short. Returns the response and the seconds it took."""
    monkeypatch.setattr(ingest, "FINISH_MARGIN_SECONDS", WAIT_MARGIN_SECONDS)
    handler(function)  # imported first, as invoke's context starts after the import: `started` is the invocation's
    with HostileUpstream(send(http_response(body=b"[]"), at=lambda: started + ANSWER_AFTER_SECONDS)) as empty:
        monkeypatch.setenv("UPSTREAM_URL", empty.url)
        reset_settings()
        started = time.monotonic()  # read by the upstream when the fetch asks, after this
        response = invoke(function, event, timeout=ANSWER_AFTER_SECONDS + MERGE_SECONDS + WAIT_MARGIN_SECONDS)
        return response, time.monotonic() - started


@pytest.mark.xdist_group("a million posts")
def test_a_merge_that_would_run_past_the_function_timeout_answers_504_with_the_failed_job(a_million_posts, monkeypatch):
    """It is stopped before the function times out, and deletes nothing."""
    response, took = invoke_with_a_merge_short_of_time(monkeypatch, "FetchApiFunction", load_event("post_fetch_sync"))
    assert took < ANSWER_AFTER_SECONDS + MERGE_SECONDS + SLACK
    assert response["statusCode"] == 504
    job = body(response)
    assert job["status"] == "failed" and "ran past the invocation's time" in job["error"]
    assert open_store(settings()).count_posts() == 1_000_000


@pytest.mark.xdist_group("a million posts")
@pytest.mark.parametrize("last", [False, True], ids=["before the last delivery", "on the last delivery"])
def test_a_worker_merge_that_would_run_past_the_function_timeout_writes_nothing_and_is_delivered_again(
    a_million_posts, monkeypatch, last
):
    """As above, through the worker: the message goes back to the queue; the job stays running for the next
    delivery, or ends failed on the last one. Nothing is written either way."""
    job = queued_job(a_million_posts, FetchMode.TASK)
    delivery = record(job.job_id, receive_count=settings().max_receive_count if last else 1)
    response, _ = invoke_with_a_merge_short_of_time(monkeypatch, "WorkerFunction", sqs_event(delivery))
    assert failures(response) == [delivery["messageId"]]
    ended = open_store(settings()).get_job(job.job_id)  # reset_settings closed the fixture's store
    assert ended.status == (JobStatus.FAILED if last else JobStatus.RUNNING)
    assert last == ("ran past the invocation's time" in (ended.error or ""))
    assert open_store(settings()).count_posts() == 1_000_000


def test_a_post_listed_twice_is_stored_once_as_its_last_record_says_and_counted_once(store, monkeypatch):
    twice = [
        {"userId": 1, "id": 1, "title": "first", "body": "b"},
        {"userId": 2, "id": 1, "title": "last", "body": "b"},
    ]
    with HostileUpstream(send(http_response(body=json.dumps(twice).encode()))) as server:
        monkeypatch.setenv("UPSTREAM_URL", server.url)
        reset_settings()
        job = body(invoke("FetchApiFunction", load_event("post_fetch_sync")))
    assert (job["status"], job["fetched"], job["inserted"], job["rejected"]) == ("succeeded", 2, 1, 0)
    assert [(post.user_id, post.title) for post in open_store(settings()).list_posts()] == [(2, "last")]
