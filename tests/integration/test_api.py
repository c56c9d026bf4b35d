"""Every API route through its real handler, with the events in events/, on each store backend (a real SQLite
file and moto's DynamoDB), but where the store plays no part: input refused before any read, and the docs."""

import json
import os
import sqlite3
import threading
import time
from urllib.parse import parse_qsl

import pytest

from aggregator.api import STORE_FAILED_EXAMPLE, STORE_LOCKED_EXAMPLE, STORE_UNAVAILABLE_EXAMPLE
from aggregator.config import settings
from aggregator.examples import INVALID_JOB_ID
from aggregator.ingest import MAX_POST_CHARS
from aggregator.models import JobStatus
from aggregator.routes.reads import LAMBDA_RESPONSE_LIMIT, PAGE_BUDGET_BYTES
from aggregator.store import open_store
from tests.helpers import STORE_FREE, api_event, body, invoke, load_event, merge, queued_job, reset_settings

pytestmark = pytest.mark.usefixtures("backend")

UNKNOWN_JOB = "0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10"


def sync_fetch():
    return invoke("FetchApiFunction", load_event("post_fetch_sync"))


def test_sync_fetch_answers_with_the_finished_job(upstream):
    response = sync_fetch()
    job = body(response)
    assert response["statusCode"] == 200
    assert set(job) == {
        "job_id", "mode", "status", "created_at", "started_at", "finished_at",
        "fetched", "pages", "inserted", "updated", "unchanged", "deleted", "rejected", "error",
    }  # fmt: skip
    assert (job["mode"], job["status"], job["fetched"], job["pages"]) == ("sync", "succeeded", 100, 1)
    assert (job["inserted"], job["deleted"]) == (100, 0)
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_mode_defaults_to_sync(upstream):
    response = invoke("FetchApiFunction", api_event("post_fetch_sync", query={}))
    assert response["statusCode"] == 200
    assert body(response)["mode"] == "sync"


def test_task_fetch_queues_the_job_and_names_its_status_url(upstream, sqs):
    response = invoke("FetchApiFunction", load_event("post_fetch_task"))
    job = body(response)
    assert response["statusCode"] == 202
    assert (job["mode"], job["status"]) == ("task", "queued")
    assert response["multiValueHeaders"]["Location"] == [f"/Prod/fetch/status/{job['job_id']}"]
    messages = sqs.client.receive_message(QueueUrl=sqs.url, AttributeNames=["All"])["Messages"]
    assert json.loads(messages[0]["Body"]) == {"job_id": job["job_id"]}
    assert messages[0]["Attributes"]["MessageGroupId"] == "fetch-jobs"
    assert upstream.requests == 0


def test_task_fetch_without_a_queue_answers_503_and_fails_the_job(upstream, store):
    response = invoke("FetchApiFunction", load_event("post_fetch_task"))
    assert response["statusCode"] == 503
    assert body(response)["message"] == "the fetch job could not be queued"
    [job] = store.list_jobs()
    assert job.status == JobStatus.FAILED and "QUEUE_URL is not set" in job.error


def test_an_upstream_error_answers_502_with_the_failed_job_and_writes_nothing(upstream, store):
    upstream.then_respond(500, "oops")
    response = sync_fetch()
    assert response["statusCode"] == 502
    assert body(response)["status"] == "failed"
    assert body(response)["error"] == "upstream answered HTTP 500"
    assert store.count_posts() == 0


def test_an_upstream_timeout_answers_504(upstream, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "0.2")
    reset_settings()
    upstream.then_respond(200, [], delay=1.0)
    response = sync_fetch()
    assert response["statusCode"] == 504
    assert "timed out" in body(response)["error"]


def test_an_upstream_that_is_not_a_json_list_answers_502(upstream):
    upstream.then_respond(200, {"not": "a list"})
    response = sync_fetch()
    assert response["statusCode"] == 502
    assert "expected a list" in body(response)["error"]


@pytest.mark.parametrize("mode", ["async", "SYNC", "", "scheduled", "sync;DROP TABLE jobs"])
def test_an_invalid_mode_is_422_naming_the_field(upstream, mode, store):
    response = invoke("FetchApiFunction", api_event("post_fetch_sync", query={"mode": mode}))
    assert response["statusCode"] == 422
    assert body(response)["detail"][0]["loc"] == ["query", "mode"]
    assert "mode" in body(response)["message"]
    assert upstream.requests == 0
    assert store.list_jobs() == []


def test_data_lists_every_post_ordered_by_id(upstream):
    sync_fetch()
    response = invoke("ReadApiFunction", load_event("get_data"))
    posts = body(response)
    assert response["statusCode"] == 200
    assert [p["id"] for p in posts] == list(range(1, 101))
    assert posts[0] == {"id": 1, "user_id": 1, "title": "post 1 title", "body": upstream.posts[0]["body"]}


def test_data_before_any_fetch_is_an_empty_list():
    response = invoke("ReadApiFunction", load_event("get_data"))
    assert (response["statusCode"], body(response)) == (200, [])


def test_data_filters_by_user(upstream):
    sync_fetch()
    posts = body(invoke("ReadApiFunction", load_event("get_data_by_user")))
    assert [p["id"] for p in posts] == list(range(1, 11))
    assert {p["user_id"] for p in posts} == {1}


@STORE_FREE
@pytest.mark.parametrize("user_id", ["abc", "1.5", "", "0", "-1", "9" * 30, "1 OR 1=1", "0x10"])
def test_a_bad_user_id_is_422_naming_the_field(user_id):
    response = invoke("ReadApiFunction", api_event("get_data", query={"user_id": user_id}))
    assert response["statusCode"] == 422
    assert body(response)["detail"][0]["loc"] == ["query", "user_id"]


def test_the_status_of_a_job_is_its_record(upstream):
    job = body(sync_fetch())
    event = api_event("get_job_status", path_params={"job_id": job["job_id"]})
    response = invoke("ReadApiFunction", event)
    assert (response["statusCode"], body(response)) == (200, job)


def test_an_unknown_job_is_404_with_a_json_error():
    response = invoke("ReadApiFunction", load_event("get_job_status"))
    assert response["statusCode"] == 404
    assert body(response) == {"statusCode": 404, "message": f"no job {UNKNOWN_JOB}"}


@STORE_FREE
@pytest.mark.parametrize("job_id", ["42", "..", "' OR '1'='1", UNKNOWN_JOB + "0", "../../fetch", "..%2F..%2Ffetch"])
def test_a_malformed_job_id_is_422(job_id):
    response = invoke("ReadApiFunction", api_event("get_job_status", path_params={"job_id": job_id}))
    assert response["statusCode"] == 422
    assert body(response)["detail"][0]["loc"] == ["path", "job_id"]


@pytest.mark.parametrize("suffix", ["/", "//", "%2F", "\u200b", "\xa0", " ", "/..", "/x"])
def test_a_job_id_is_read_as_the_gateway_decoded_it_never_as_another(store, suffix):
    """API Gateway hands the function `<job_id>/` for `/fetch/status/<job_id>%2F`: that is not the job's id."""
    job = queued_job(store)
    event = api_event("get_job_status", path_params={"job_id": job.job_id + suffix})
    response = invoke("ReadApiFunction", event)
    assert response["statusCode"] == 422, (suffix, response)
    assert body(response)["detail"] == INVALID_JOB_ID["detail"]


def test_a_job_id_in_upper_case_reads_that_job(store):
    jobs = [queued_job(store) for _ in range(2)]
    response = invoke("ReadApiFunction", api_event("get_job_status", path_params={"job_id": jobs[0].job_id.upper()}))
    assert (response["statusCode"], body(response)) == (200, jobs[0].as_json())
    older = body(history(before=jobs[1].job_id.upper()))
    assert [job["job_id"] for job in older] == [jobs[0].job_id]


@STORE_FREE
def test_swagger_ui_is_served_inline():
    response = invoke("DocsFunction", load_event("get_docs"))
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"]["Content-Type"] == ["text/html"]
    assert "SwaggerUIBundle" in response["body"] and "/fetch/status/{job_id}" in response["body"]


@STORE_FREE
def test_redoc_is_served_inline_with_the_openapi_document():
    response = invoke("DocsFunction", load_event("get_redoc"))
    assert response["statusCode"] == 200
    assert "Redoc.init(" in response["body"] and "/fetch/status/{job_id}" in response["body"]
    assert "src=" not in response["body"].split("<script>", 1)[0]


@STORE_FREE
def test_the_openapi_document_describes_every_route():
    spec = body(invoke("DocsFunction", load_event("get_openapi")))
    assert spec["info"]["title"] == "API aggregator"
    assert set(spec["paths"]) == {"/data", "/fetch", "/fetch/status/{job_id}", "/fetch/jobs"}
    assert "post" in spec["paths"]["/fetch"] and "get" in spec["paths"]["/data"]
    assert spec["paths"]["/fetch"]["post"]["security"] == [{"apiKey": []}]
    assert spec["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    mode = spec["paths"]["/fetch"]["post"]["parameters"][0]
    assert mode["name"] == "mode" and mode["schema"]["enum"] == ["sync", "task"]


@STORE_FREE
def test_an_unknown_route_is_404():
    response = invoke("DocsFunction", load_event("get_unknown_route"))
    assert response["statusCode"] == 404
    assert body(response) == {"statusCode": 404, "message": "no route /no/such/route"}


@STORE_FREE
def test_a_wrong_method_is_405_naming_the_allowed_one():
    response = invoke("DocsFunction", load_event("delete_data"))
    assert response["statusCode"] == 405
    assert response["multiValueHeaders"]["Allow"] == ["GET"]
    assert body(response)["statusCode"] == 405


def header(response, name):
    return response["multiValueHeaders"][name][0]


def test_a_fetch_while_a_job_is_queued_joins_it_and_queues_nothing_more(upstream, sqs):
    queued = invoke("FetchApiFunction", load_event("post_fetch_task"))
    assert header(queued, "X-Fetch-Outcome") == "started"
    for name in ("post_fetch_sync", "post_fetch_task"):
        joined = invoke("FetchApiFunction", load_event(name))
        assert (joined["statusCode"], header(joined, "X-Fetch-Outcome")) == (202, "joined")
        assert body(joined)["job_id"] == body(queued)["job_id"]
        assert header(joined, "Location") == header(queued, "Location")
    messages = sqs.client.receive_message(QueueUrl=sqs.url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    assert upstream.requests == 0


def test_within_the_freshness_window_the_last_success_answers(upstream, sqs, monkeypatch):
    monkeypatch.setenv("MIN_FETCH_INTERVAL", "300")
    reset_settings()
    first = sync_fetch()
    assert header(first, "X-Fetch-Outcome") == "started"
    for name in ("post_fetch_sync", "post_fetch_task"):
        again = invoke("FetchApiFunction", load_event(name))
        assert (again["statusCode"], header(again, "X-Fetch-Outcome")) == (200, "fresh")
        assert body(again) == body(first)
    assert upstream.requests == 1
    assert "Messages" not in sqs.client.receive_message(QueueUrl=sqs.url)


def next_link(response):
    links = (response.get("multiValueHeaders") or {}).get("Link")
    return links[0] if links else None


def test_data_pages_by_keyset_with_a_next_link_until_the_last_page(upstream):
    sync_fetch()
    first = invoke("ReadApiFunction", api_event("get_data", query={"limit": "40"}))
    assert [p["id"] for p in body(first)] == list(range(1, 41))
    assert next_link(first) == '</Prod/data?limit=40&after_id=40>; rel="next"'
    last = invoke("ReadApiFunction", api_event("get_data", query={"limit": "40", "after_id": "80"}))
    assert [p["id"] for p in body(last)] == list(range(81, 101))
    assert next_link(last) is None


def test_the_default_page_holds_jsonplaceholders_hundred_posts_without_a_link(upstream):
    sync_fetch()
    response = invoke("ReadApiFunction", load_event("get_data"))
    assert len(body(response)) == 100 and next_link(response) is None


@pytest.mark.parametrize("spelled", ["/data/", "/dat%61"])
def test_a_path_spelled_otherwise_is_the_same_resource_and_keeps_the_stage_in_links(upstream, spelled):
    sync_fetch()
    event = api_event("get_data", query={"limit": "40"})
    event["path"], event["requestContext"]["path"] = spelled, "/Prod" + spelled
    response = invoke("ReadApiFunction", event)
    assert [p["id"] for p in body(response)] == list(range(1, 41))
    assert next_link(response) == '</Prod/data?limit=40&after_id=40>; rel="next"'


def test_paging_keeps_the_user_filter(upstream):
    sync_fetch()
    response = invoke("ReadApiFunction", api_event("get_data", query={"user_id": "2", "limit": "4"}))
    assert [p["id"] for p in body(response)] == [11, 12, 13, 14]
    assert next_link(response) == '</Prod/data?limit=4&after_id=14&user_id=2>; rel="next"'


HARD_TEXTS = {  # posts of the largest size, MAX_POST_CHARS characters
    "quotes and backslashes": '"\\' * 250_000,  # each character takes 4 bytes in the answer, escaped twice
    "control characters": "\x01\x1f" * 250_000,  # 7 bytes each: \\u0001
    "two-byte characters": "é" * 500_000,
    "astral characters": "🙂" * 500_000,
}


def serialized_bytes(result: dict) -> int:
    """The bytes of a function's answer as Lambda's Python runtime sends it, where Lambda's limit applies."""
    return len(json.dumps(result, ensure_ascii=False).encode())


@pytest.mark.parametrize("text", HARD_TEXTS.values(), ids=HARD_TEXTS.keys())
def test_a_page_is_as_full_as_lambdas_limit_allows_counted_as_serialized(upstream, text):
    assert len(text) == MAX_POST_CHARS
    upstream.posts = [{"userId": 1, "id": i, "title": "", "body": text} for i in range(1, 9)]
    upstream.page_size = 1  # as JSON escapes it, a post of the largest size may take 6 MB: one a page
    assert body(sync_fetch())["inserted"] == 8
    seen, query = [], {"limit": "1000"}
    while query:
        response = invoke("ReadApiFunction", api_event("get_data", query=query))
        page = body(response)
        assert response["statusCode"] == 200 and page[0]["body"] == text
        assert serialized_bytes(response) <= LAMBDA_RESPONSE_LIMIT
        seen += [p["id"] for p in page]
        link = next_link(response)
        if link:  # cut by the budget: one post more would not have fitted
            one_more = len(json.dumps(json.dumps(page[0], ensure_ascii=False), ensure_ascii=False).encode())
            assert serialized_bytes(response) + one_more > PAGE_BUDGET_BYTES
        query = dict(parse_qsl(link[1:].split("?")[1].split(">")[0])) if link else None
    assert seen == list(range(1, 9))


@STORE_FREE
@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"after_id": "-1"},
        {"after_id": "1e3"},
        {"after_id": "9" * 25},
    ],
)
def test_bad_paging_values_are_422_naming_the_field(query):
    response = invoke("ReadApiFunction", api_event("get_data", query=query))
    assert response["statusCode"] == 422
    assert body(response)["detail"][0]["loc"] == ["query", next(iter(query))]


# Job history


def history(**query):
    return invoke("ReadApiFunction", api_event("get_job_history", query=query))


def test_the_history_lists_jobs_newest_first_a_page_at_a_time(upstream):
    made = [body(sync_fetch())["job_id"] for _ in range(3)]
    first = invoke("ReadApiFunction", load_event("get_job_history"))
    assert [job["job_id"] for job in body(first)] == made[:0:-1]
    assert next_link(first) == f'</Prod/fetch/jobs?limit=2&before={made[1]}>; rel="next"'
    last = history(limit="2", before=made[1])
    assert ([job["job_id"] for job in body(last)], next_link(last)) == ([made[0]], None)
    assert body(history())[0] == body(
        invoke("ReadApiFunction", api_event("get_job_status", path_params={"job_id": made[2]}))
    )


def test_the_history_before_any_job_is_an_empty_list():
    response = history()
    assert (response["statusCode"], body(response), next_link(response)) == (200, [], None)


def test_a_history_page_after_an_unknown_job_is_404():
    response = history(before=UNKNOWN_JOB)
    assert (response["statusCode"], body(response)["message"]) == (404, f"no job {UNKNOWN_JOB}")


@STORE_FREE
@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"before": "42"}, {"before": UNKNOWN_JOB + "/"}])
def test_bad_history_paging_is_422_naming_the_field(query):
    response = history(**query)
    assert response["statusCode"] == 422
    assert body(response)["detail"][0]["loc"] == ["query", next(iter(query))]


# A job given up on, a full database, a deleted file


def test_a_sync_fetch_whose_job_is_given_up_on_answers_409_and_writes_nothing(upstream, store):
    upstream.then_respond(200, upstream.posts, delay=1.0)
    answers = []
    fetch = threading.Thread(target=lambda: answers.append(sync_fetch()))
    fetch.start()
    while not any(job.status == JobStatus.RUNNING for job in store.list_jobs()):
        time.sleep(0.01)
    [job] = store.list_jobs()
    given_up = store.fail_job(job.job_id, "abandoned: given up by an operator")
    fetch.join()
    assert (answers[0]["statusCode"], body(answers[0])) == (409, given_up.as_json())
    assert store.count_posts() == 0


def test_a_sync_fetch_whose_job_is_given_up_on_before_it_starts_answers_409(upstream, store, monkeypatch):
    start_job = type(store).start_job
    given_up = []

    def give_up_first(self, job_id, **kwargs):  # an operator fails the job between its claim and its start
        given_up.append(self.fail_job(job_id, "abandoned: given up by an operator"))
        return start_job(self, job_id, **kwargs)

    monkeypatch.setattr(type(store), "start_job", give_up_first)
    answer = sync_fetch()
    assert (answer["statusCode"], body(answer)) == (409, given_up[0].as_json())
    assert given_up[0].started_at is None
    assert store.count_posts() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # its file
def test_a_full_database_fails_the_sync_fetch_with_500_and_the_databases_reason(upstream, monkeypatch):
    monkeypatch.setenv("DB_MAX_MB", "1")  # before the store is first opened, as a function's settings are
    reset_settings()
    assert sync_fetch()["statusCode"] == 200
    upstream.posts = [{"userId": 1, "id": i, "title": "t", "body": "x" * 2000} for i in range(1, 1001)]
    response = sync_fetch()
    job = body(response)
    assert (response["statusCode"], job["status"]) == (500, "failed")
    assert job["error"] == "database error: database or disk is full (SQLITE_FULL; DB_MAX_MB is 1)"
    assert open_store(settings()).count_posts() == 100


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # its file
def test_a_deleted_database_file_answers_503_and_is_not_recreated(upstream, store):
    assert sync_fetch()["statusCode"] == 200
    path = settings().db_path
    os.remove(path)
    for function, event in [
        ("ReadApiFunction", "get_data"),
        ("ReadApiFunction", "get_job_history"),
        ("FetchApiFunction", "post_fetch_sync"),
    ]:
        response = invoke(function, load_event(event))
        assert response["statusCode"] == 503, event
        assert body(response) == STORE_UNAVAILABLE_EXAMPLE  # the document's example
    assert not os.path.exists(path)


EVERY_ROUTE = [
    ("ReadApiFunction", "get_data"),
    ("ReadApiFunction", "get_job_status"),
    ("ReadApiFunction", "get_job_history"),
    ("FetchApiFunction", "post_fetch_sync"),
    ("FetchApiFunction", "post_fetch_task"),
]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # its file
@pytest.mark.parametrize(("content", "what"), [(b"", "empty"), (b"garbage\n", "not a SQLite database")])
def test_a_database_file_emptied_or_overwritten_answers_503_in_the_error_shape(upstream, content, what):
    assert sync_fetch()["statusCode"] == 200  # the functions have it open
    path = settings().db_path
    with open(path, "wb") as file:  # `echo garbage > $DB_PATH`: the same file, overwritten
        file.write(content)
    for function, event in EVERY_ROUTE:
        response = invoke(function, load_event(event))
        assert response["statusCode"] == 503, (event, response)
        assert body(response)["message"].startswith(f"the database is unavailable: the database file is {what}")
    with open(path, "rb") as file:
        assert file.read() == content  # never made into a new database


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # its file
def test_a_corrupt_database_answers_500_with_its_own_reason_in_the_error_shape(upstream):
    assert sync_fetch()["statusCode"] == 200
    with open(settings().db_path, "r+b") as file:
        file.seek(100)  # past the header: the first page, where the schema is
        file.write(b"\xff" * 300)
    reset_settings()  # a new instance: it reads the schema
    for function, event in EVERY_ROUTE:
        response = invoke(function, load_event(event))
        assert (response["statusCode"], body(response)) == (500, STORE_FAILED_EXAMPLE), event  # the document's


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # its file
def test_a_request_waiting_on_a_lock_answers_503_before_its_invocation_ends(upstream):
    assert sync_fetch()["statusCode"] == 200
    holder = sqlite3.connect(settings().db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # held longer than any request may wait
    try:
        for function, event in EVERY_ROUTE:
            started = time.monotonic()
            response = invoke(function, load_event(event), timeout=4)
            waited = time.monotonic() - started
            assert (response["statusCode"], body(response)) == (503, STORE_LOCKED_EXAMPLE), event  # the document's
            assert 1.5 < waited < 4, (event, waited)  # it waited, and answered before the function's timeout
    finally:
        holder.execute("ROLLBACK")
    assert sync_fetch()["statusCode"] == 200


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # its file
def test_a_history_page_holds_twenty_jobs_by_default(store):
    with sqlite3.connect(settings().db_path) as db:  # 25 jobs written by earlier runs
        db.executemany(
            "INSERT INTO jobs (job_id, mode, status, created_at) VALUES (?, 'task', 'succeeded', ?)",
            [(f"00000000-0000-4000-8000-{n:012d}", f"2024-01-01T00:00:{n:02d}.000Z") for n in range(25)],
        )
    response = invoke("ReadApiFunction", api_event("get_job_history", query={}))
    assert [job["job_id"][-2:] for job in body(response)] == [f"{n:02d}" for n in range(24, 4, -1)]
    assert next_link(response) == '</Prod/fetch/jobs?limit=20&before=00000000-0000-4000-8000-000000000005>; rel="next"'


def test_a_history_page_holds_the_newest_twenty_jobs_and_links_the_next(store):
    made = [merge(store, [[]]).job_id for _ in range(25)]
    response = invoke("ReadApiFunction", api_event("get_job_history", query={}))
    assert [job["job_id"] for job in body(response)] == made[::-1][:20]
    assert next_link(response) == f'</Prod/fetch/jobs?limit=20&before={made[5]}>; rel="next"'


@pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)
def test_deleted_tables_answer_503_naming_the_table(upstream, store):
    import boto3

    assert sync_fetch()["statusCode"] == 200
    for table in (settings().posts_table, settings().jobs_table):
        boto3.client("dynamodb").delete_table(TableName=table)
    for function, event, table in [
        ("ReadApiFunction", "get_data", settings().posts_table),
        ("ReadApiFunction", "get_job_history", settings().jobs_table),
        ("FetchApiFunction", "post_fetch_sync", settings().jobs_table),
    ]:
        response = invoke(function, load_event(event))
        assert response["statusCode"] == 503, event
        assert body(response)["message"].startswith("the database is unavailable: ")
        assert table in body(response)["message"]
