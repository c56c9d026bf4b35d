"""A hostile upstream through the local stack over HTTP: a sync fetch ends within its budget, odd bodies
fail or are rejected cleanly, redirects stay on the origin, and no secret of UPSTREAM_URL leaves."""

import json
import time

import pytest

from aggregator.config import load
from local.sample_upstream import SampleUpstream
from tests.running_stack import RunningStack
from tests.utils.hostile_upstream import HostileUpstream, drip, http_response

pytestmark = pytest.mark.e2e

POST = {"userId": 1, "id": 1, "title": "t", "body": "b"}


def test_an_upstream_that_drips_gets_504_with_the_failed_job_within_api_gateways_29_s(start_stack):
    response = http_response(body=json.dumps([POST]).encode())
    with HostileUpstream(drip(response, every=60 / len(response))) as dripping:
        stack = start_stack(UPSTREAM_URL=dripping.url, UPSTREAM_TIMEOUT="20")
        started = time.monotonic()
        status, job = stack.json("POST", "/fetch?mode=sync")
        took = time.monotonic() - started
    assert (status, job["status"]) == (504, "failed")
    assert job["error"] == "upstream fetch ran out of its 25 s budget"
    assert took < 29
    assert stack.json("GET", f"/fetch/status/{job['job_id']}")[1] == job
    assert stack.json("GET", "/data")[1] == []


def test_a_page_over_its_byte_budget_fails_the_fetch(stack, fake_upstream):
    largest = load({}).max_page_bytes
    fake_upstream.then_respond(200, b"[" + b" " * largest + b"]")
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["status"]) == (502, "failed")
    assert job["error"] == f"upstream page is larger than {largest} bytes"


def test_lists_nested_thousands_deep_fail_the_fetch_with_the_job(stack, fake_upstream):
    fake_upstream.then_respond(200, b'[{"id": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]")
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["status"], job["error"]) == (502, "failed", "upstream body nests too deeply to decode")


def test_an_integer_of_thousands_of_digits_rejects_only_its_record(stack, fake_upstream):
    posts = json.dumps(fake_upstream.posts).encode()
    odd = b'{"userId": 1, "id": 101, "title": "t", "body": "b", "views": ' + b"7" * 5000 + b"}"
    fake_upstream.then_respond(200, posts[:-1] + b", " + odd + b"]")
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["status"], job["fetched"], job["rejected"]) == (200, "succeeded", 101, 1)
    assert "record 101: an integer has more than 4300 digits" in job["error"]
    assert len(stack.json("GET", "/data?limit=1000")[1]) == 100


def test_a_redirect_to_another_port_is_not_followed(stack, fake_upstream):
    with SampleUpstream(3) as elsewhere:
        fake_upstream.then_respond(302, "", {"Location": elsewhere.url})
        status, job = stack.json("POST", "/fetch?mode=sync")
        assert elsewhere.requests == 0
    assert (status, job["error"]) == (502, "upstream redirected to another origin")


def test_credentials_in_upstream_url_leave_through_neither_the_job_nor_the_function_logs(fake_upstream, tmp_path):
    url = fake_upstream.url.replace("http://", "http://alice:s3cret@") + "?api_key=k3y"
    stack = RunningStack({"UPSTREAM_URL": url, "DB_PATH": str(tmp_path / "db.sqlite")}, ("--verbose",))
    try:
        fake_upstream.then_respond(200, [POST], {"Link": f'<{url}>; rel="next"'})
        fake_upstream.then_respond(200, [POST], {"Link": f'<{url}>; rel="next"'})
        status, job = stack.json("POST", "/fetch?mode=sync")
        assert (status, job["error"]) == (502, "upstream pagination loops back to a page it already sent")
        _, _, record = stack.request("GET", f"/fetch/status/{job['job_id']}")
        stack.wait_for_output('"message":"fetch failed"')
    finally:
        stack.stop()
    function_logs = [line for line in stack.lines if line.startswith("  FetchApiFunction  ")]  # raw, --verbose
    assert any("api_key=***" in line for line in function_logs)
    for said in (record.decode(), *function_logs, stack.output):  # the stack's banner and console too
        assert "s3cret" not in said and "k3y" not in said
