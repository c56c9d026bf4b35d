"""Input is strict, and every malformed input gets a clean answer: through the real handlers, real events."""

import copy

import pytest

from tests.helpers import api_event, body, invoke, load_event

JOB_EVENTS = ("get_data", "get_job_status", "post_fetch_sync")
NOT_PLAIN_DIGITS = [
    "1_0",
    "+1",
    "-0",
    " 1",
    "1 ",
    "1.0",
    "1e3",
    "0x10",
    "\u0661",
    "\uff11",
    "",
    "1\n",
]  # Arabic, full-width 1


@pytest.mark.parametrize("name", ["user_id", "limit", "after_id"])
@pytest.mark.parametrize("value", NOT_PLAIN_DIGITS)
def test_an_integer_parameter_is_plain_decimal_digits(name, value):
    response = invoke("ReadApiFunction", api_event("get_data", query={name: value}))
    assert response["statusCode"] == 422
    assert body(response)["detail"] == [
        {"loc": ["query", name], "type": "int_parsing", "msg": "Input should be plain decimal digits"}
    ]
    assert body(response)["message"] == f"invalid request: {name}"


def test_leading_zeros_are_still_plain_digits(upstream):
    invoke("FetchApiFunction", load_event("post_fetch_sync"))
    response = invoke("ReadApiFunction", api_event("get_data", query={"user_id": "002", "limit": "0003"}))
    assert [p["id"] for p in body(response)] == [11, 12, 13]


@pytest.mark.parametrize("name", ["userId", "USER_ID", "user_id ", "page", "limit[]", ""])
def test_an_unknown_query_parameter_is_422_naming_it(upstream, name):
    invoke("FetchApiFunction", load_event("post_fetch_sync"))
    response = invoke("ReadApiFunction", api_event("get_data", query={name: "1"}))
    assert response["statusCode"] == 422
    [fault] = body(response)["detail"]
    assert fault["loc"] == ["query", name] and fault["type"] == "extra_forbidden"
    assert "this operation takes user_id, limit, after_id" in fault["msg"]


def test_an_unknown_parameter_on_post_fetch_fetches_nothing(upstream, store):
    response = invoke("FetchApiFunction", api_event("post_fetch_sync", query={"mode": "sync", "force": "1"}))
    assert response["statusCode"] == 422
    assert body(response)["detail"][0]["loc"] == ["query", "force"]
    assert upstream.requests == 0 and store.list_jobs() == []


@pytest.mark.parametrize(
    ("event", "query"),
    [
        ("get_data", {"limit": ["5", "10"]}),
        ("get_data", {"user_id": ["1", "1"]}),
        ("post_fetch_sync", {"mode": ["sync", "task"]}),
    ],
)
def test_a_repeated_parameter_is_422_naming_it_and_does_nothing(upstream, store, event, query):
    function = "FetchApiFunction" if event.startswith("post") else "ReadApiFunction"
    response = invoke(function, api_event(event, query=query))
    name = next(iter(query))
    assert response["statusCode"] == 422
    assert body(response)["detail"] == [
        {"loc": ["query", name], "type": "repeated", "msg": "Given 2 times; give it once"}
    ]
    assert upstream.requests == 0 and store.list_jobs() == []


def test_every_fault_of_a_request_is_named_at_once():
    response = invoke(
        "ReadApiFunction", api_event("get_data", query={"limit": "1_0", "userId": "1", "after_id": ["1", "2"]})
    )
    faults = {tuple(f["loc"]): f["type"] for f in body(response)["detail"]}
    assert faults == {
        ("query", "limit"): "int_parsing",
        ("query", "userId"): "extra_forbidden",
        ("query", "after_id"): "repeated",
    }


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\r", "\x00", "\t", "\x7f", "\x0b"])
def test_a_job_path_with_a_control_character_is_never_that_job(upstream, suffix):
    job = body(invoke("FetchApiFunction", load_event("post_fetch_sync")))
    event = api_event("get_job_status", path_params={"job_id": job["job_id"]})
    event["path"] += suffix  # as API Gateway may hand over a decoded path
    event["pathParameters"]["job_id"] += suffix
    response = invoke("ReadApiFunction", event)
    assert response["statusCode"] == 404
    assert "job_id" not in body(response)


API_FUNCTIONS = ("ReadApiFunction", "FetchApiFunction", "DocsFunction")
NOT_PROXY_EVENTS = {
    "empty object": {},
    "a list": [],
    "null": None,
    "a string": "GET /data",
    "SQS batch": {"Records": []},
    "HTTP API v2": {"version": "2.0", "rawPath": "/data", "requestContext": {"http": {"method": "GET"}}},
    "schedule": "schedule",
}


def not_proxy_event(kind):
    event = NOT_PROXY_EVENTS[kind]
    return load_event(event) if event == "schedule" else copy.deepcopy(event)


def broken_proxy_events():
    """REST proxy events with one field of the wrong type."""
    events = []
    wrong = [
        ("httpMethod", None),
        ("path", 42),
        ("resource", ""),
        ("requestContext", "x"),
        ("headers", {"Host": 1}),
        ("multiValueQueryStringParameters", {"limit": "1"}),
        ("queryStringParameters", ["limit"]),
        ("body", {"a": 1}),
        ("isBase64Encoded", "yes"),
    ]
    for key, value in wrong:
        event = load_event("get_data")
        event[key] = value
        events.append(pytest.param(event, id=f"{key}={value!r}"))
    return events


@pytest.mark.parametrize("function", API_FUNCTIONS)
@pytest.mark.parametrize("kind", NOT_PROXY_EVENTS)
def test_an_api_function_answers_an_event_of_another_kind_with_a_clean_400(upstream, store, function, kind):
    response = invoke(function, not_proxy_event(kind))
    assert response["statusCode"] == 400
    assert body(response)["message"].startswith("not an API Gateway REST proxy event: ")
    assert upstream.requests == 0 and store.list_jobs() == []


@pytest.mark.parametrize("function", API_FUNCTIONS)
@pytest.mark.parametrize("event", broken_proxy_events())
def test_an_api_function_answers_a_broken_proxy_event_with_a_clean_400(function, event):
    response = invoke(function, event)
    assert response["statusCode"] == 400
    assert body(response)["statusCode"] == 400


@pytest.mark.parametrize("kind", [k for k in NOT_PROXY_EVENTS if k != "SQS batch"])
def test_the_worker_answers_an_event_that_is_not_sqs_with_an_error_and_runs_nothing(upstream, store, kind):
    assert invoke("WorkerFunction", not_proxy_event(kind))["error"].startswith("not an SQS event: ")
    assert upstream.requests == 0


@pytest.mark.parametrize(
    "record",
    [{"eventSource": "aws:s3"}, {"eventSource": "aws:sqs", "body": "{}"}, "x", None],
    ids=["S3 record", "no messageId", "a string", "null"],
)
def test_the_worker_answers_a_batch_with_a_record_that_is_not_sqs_with_an_error(upstream, record):
    event = load_event("sqs_fetch_job")
    event["Records"].append(record)
    assert invoke("WorkerFunction", event)["error"].startswith("not an SQS event: record 1 ")
    assert upstream.requests == 0


def test_the_worker_answers_an_empty_batch_with_no_failures():
    assert invoke("WorkerFunction", {"Records": []}) == {"batchItemFailures": []}


@pytest.mark.parametrize(
    "event",
    [
        {},
        [],
        None,
        "Scheduled Event",
        {"Records": []},
        {"source": "aws.events"},
        {"source": "evil.example", "detail-type": "Scheduled Event"},
        {"source": "aws.events", "detail-type": "EC2 Instance State-change Notification"},
    ],
)
def test_the_scheduler_answers_an_event_that_is_not_a_schedule_with_an_error_and_queues_nothing(sqs, store, event):
    assert invoke("SchedulerFunction", event) == {
        "error": "not a scheduled event: expected an EventBridge 'Scheduled Event' from 'aws.events'"
    }
    assert "Messages" not in sqs.client.receive_message(QueueUrl=sqs.url)
    assert store.list_jobs() == []
