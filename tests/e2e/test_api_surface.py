"""The API's surface through the local stack: what reaches the docs function, strict input, and answers that
stay within Lambda's limits of size and memory however large and hostile the posts."""

import json
import re

import pytest

from aggregator.ingest import MAX_POST_CHARS
from aggregator.store.sqlite import SqliteStore
from local import apigw
from local.sample_upstream import SampleUpstream
from tests.api_document import ROUTES, served_path
from tests.helpers import BASES, merge, spellings
from tests.running_stack import RunningStack

pytestmark = pytest.mark.e2e
KEY = "surface-key"
MARKER = "stored-post-7f3a"  # in every stored title: an answer that holds it has read the posts
# The gateway tells apart the methods its routes name (GET, POST) from the rest (ANY), and HEAD gets no body;
# these stand for every method here. It routes by the path alone: a query (`?mode=sync`) is sent with POST,
# whose fetch it names. What the docs function answers to each of METHODS, queries too, is tested in process.
GATEWAY_METHODS = ("GET", "POST", "HEAD", "DELETE", "FETCH")


@pytest.fixture(scope="module")
def upstream():
    with SampleUpstream(20) as server:
        server.posts = [{"userId": 1, "id": i, "title": f"{MARKER} {i}", "body": "b"} for i in range(1, 21)]
        yield server


@pytest.fixture(scope="module")
def keyed(upstream, tmp_path_factory):
    """A stack that requires the API key, with the upstream's posts already stored."""
    path = tmp_path_factory.mktemp("surface") / "aggregator.db"
    stack = RunningStack({"UPSTREAM_URL": upstream.url, "API_KEY": KEY, "DB_PATH": str(path)})
    assert stack.request("POST", "/fetch?mode=sync", {"x-api-key": KEY})[0] == 200
    yield stack, SqliteStore(str(path))
    stack.stop()


def test_no_method_or_spelling_gets_more_than_a_document_404_or_405_from_the_docs_function(keyed, upstream):
    stack, store = keyed
    asked, jobs = upstream.requests, store.list_jobs()
    by_function: dict[str, int] = {}
    for target in (t for base in BASES for t in spellings(base)):
        for method in GATEWAY_METHODS if "?" not in target else ("POST",):
            status, _, body = stack.request(method, target)
            matched = apigw.match(ROUTES, method, served_path(target))
            function = matched[0].function if matched else "API Gateway"
            by_function[function] = by_function.get(function, 0) + 1
            if function == "DocsFunction":
                assert status in (200, 404, 405), (method, target, status)
                assert status != 200 or (method, matched[0].path) in {
                    ("GET", "/docs"),
                    ("GET", "/redoc"),
                    ("GET", "/openapi.json"),
                }
                assert MARKER.encode() not in body, (method, target)
            elif function == "FetchApiFunction":
                assert status == 403, (method, target, status)  # no key was sent
            elif function == "API Gateway":
                assert status == 403, (method, target, status)
    assert by_function["DocsFunction"] > 700 and by_function["FetchApiFunction"] > 0, by_function
    assert upstream.requests == asked  # nothing was fetched
    assert store.list_jobs() == jobs  # and no job was started


def test_input_is_strict_through_the_stack(keyed):
    stack, _ = keyed
    status, _, body = stack.request("GET", "/data?userId=1")
    assert status == 422 and json.loads(body)["message"] == "invalid request: userId"
    for query in ("user_id=1_0", "user_id=%2B1", "user_id=%201", "user_id=1.0", "limit=5&limit=6"):
        assert stack.request("GET", f"/data?{query}")[0] == 422, query
    status, _, body = stack.request("POST", "/fetch?mode=sync&force=yes", {"x-api-key": KEY})
    assert status == 422 and json.loads(body)["detail"][0]["loc"] == ["query", "force"]


def pages(stack: RunningStack, path: str) -> list[tuple[int, bytes]]:
    """Every page from `path` on, following `Link: rel="next"`."""
    answers = []
    while path:
        status, headers, body = stack.request("GET", path)
        answers.append((status, body))
        link = headers.get("Link")
        path = re.match(r"<([^>]+)>", link).group(1) if status == 200 and link else None
    return answers


def test_pages_of_posts_full_of_quotes_and_backslashes_stay_within_lambdas_response_limit(start_stack):
    with SampleUpstream(8) as server:
        text = '"\\' * (MAX_POST_CHARS // 2)  # 4 bytes a character in the function's answer: escaped twice
        server.posts = [{"userId": 1, "id": i, "title": "", "body": text} for i in range(1, 9)]
        stack = start_stack(UPSTREAM_URL=server.url)
        assert stack.json("POST", "/fetch?mode=sync")[1]["inserted"] == 8
        answers = pages(stack, "/data?limit=1000")
    assert [status for status, _ in answers] == [200] * len(answers)  # a page past the limit is a 502
    assert [p["id"] for _, body in answers for p in json.loads(body)] == list(range(1, 9))
    assert len(answers) > 1 and all(json.loads(body)[0]["body"] == text for _, body in answers)


def test_reading_a_thousand_of_the_largest_posts_stays_within_the_functions_memory(start_stack, tmp_path):
    """300 posts of 500,000 characters: a read that built its page from all of them passed 512 MB."""
    path = tmp_path / "aggregator.db"
    store = SqliteStore(str(path))
    big = "x" * MAX_POST_CHARS
    merge(store, [[(i, 1, "", big) for i in range(n, n + 50)] for n in range(1, 301, 50)])
    store.close()
    stack = start_stack(DB_PATH=str(path), UPSTREAM="sample")
    status, headers, body = stack.request("GET", "/data?limit=1000")
    assert status == 200, stack.output  # the instance is killed past its MemorySize: API Gateway's 502
    posts = json.loads(body)
    assert [p["id"] for p in posts] == list(range(1, len(posts) + 1)) and len(posts) > 1
    assert headers["Link"] == f'</data?limit=1000&after_id={len(posts)}>; rel="next"'
    assert "Runtime.OutOfMemory" not in stack.output


def test_a_function_serves_the_resource_api_gateway_matched_however_the_path_is_spelled(keyed):
    stack, _ = keyed
    for spelling in ("/data", "/data/", "/%64ata", "/dat%61/"):
        status, _, body = stack.request("GET", spelling + "?limit=2")
        assert (status, [p["id"] for p in json.loads(body)]) == (200, [1, 2]), spelling
    job = json.loads(stack.request("POST", "/fetch?mode=sync", {"x-api-key": KEY})[2])
    status, _, body = stack.request("GET", f"/fetch/status/{job['job_id'].replace('a', '%61')}")
    assert (status, json.loads(body)) == (200, job)


def test_a_job_id_is_validated_as_the_gateway_decoded_it(keyed):
    stack, _ = keyed
    job = json.loads(stack.request("POST", "/fetch?mode=sync", {"x-api-key": KEY})[2])
    for spelling in ("%2F", "%2f", "%E2%80%8B", "%C2%A0", "%2F..", "%20"):  # a slash, zero-width and no-break spaces
        status, _, body = stack.request("GET", f"/fetch/status/{job['job_id']}{spelling}")
        assert status == 422, (spelling, status, body)
        assert json.loads(body)["detail"][0]["loc"] == ["path", "job_id"]
    status, _, body = stack.request("GET", "/fetch/status/..%2f..%2ffetch")
    assert (status, json.loads(body)["message"]) == (422, "invalid request: job_id")
    status, _, body = stack.request("GET", f"/fetch/status/{job['job_id'].upper()}")
    assert (status, json.loads(body)) == (200, job)  # a UUID in either case
