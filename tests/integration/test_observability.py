"""Logs are JSON with the job id as correlation id, from the API through SQS into the worker;
metrics are embedded metric format lines in one namespace."""

import pytest

from aggregator.metrics import NAMESPACE
from local.runtime import LambdaContext, load_handler
from tests.helpers import TEMPLATE, body, invoke, load_event


def emf(lines):
    return [line for line in lines if "_aws" in line]


def test_the_job_id_follows_a_task_fetch_from_the_api_through_the_queue_into_the_worker(upstream, sqs, log_lines):
    job_id = body(invoke("FetchApiFunction", load_event("post_fetch_task")))["job_id"]
    [answered] = [line for line in log_lines() if line.get("message") == "task fetch answered"]
    assert (answered["correlation_id"], answered["outcome"]) == (job_id, "started")
    [message] = sqs.client.receive_message(QueueUrl=sqs.url, AttributeNames=["All"])["Messages"]
    event = load_event("sqs_fetch_job")
    event["Records"][0]["body"] = message["Body"]
    invoke("WorkerFunction", event)
    lines = log_lines()
    worker_logs = [line for line in lines if line.get("message") == "job finished"]
    assert worker_logs[0]["correlation_id"] == job_id
    assert worker_logs[0]["function_name"] == "WorkerFunction"
    [metrics] = emf(lines)
    names = {m["Name"] for m in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert names == {
        "PostsFetched", "PostsInserted", "PostsUpdated", "PostsDeleted", "PostsRejected", "FetchFailures",
        "FetchDuration",
    }  # fmt: skip
    assert (metrics["PostsFetched"], metrics["PostsInserted"], metrics["FetchFailures"]) == ([100.0], [100.0], [0.0])


def test_a_failed_sync_fetch_is_logged_and_counted(upstream, log_lines):
    upstream.then_respond(500, {})
    job = body(invoke("FetchApiFunction", load_event("post_fetch_sync")))
    lines = log_lines()
    assert any(line.get("correlation_id") == job["job_id"] for line in lines)
    [metrics] = emf(lines)
    assert (metrics["FetchFailures"], metrics["PostsInserted"]) == ([1.0], [0.0])


@pytest.mark.parametrize(
    ("function", "event"),
    [
        ("ReadApiFunction", "get_data"),
        ("FetchApiFunction", "post_fetch_task"),
        ("DocsFunction", "get_docs"),
        ("WorkerFunction", "sqs_fetch_job"),
        ("SchedulerFunction", "schedule"),
    ],
)
def test_every_function_logs_json_with_its_context(sqs, log_lines, monkeypatch, function, event):
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")  # read when the handler is decorated, at import
    spec = TEMPLATE.functions[function]
    handler = load_handler(spec.code_uri, spec.handler, f"{function}_logging_events")
    received = load_event(event)
    handler(received, LambdaContext(function))
    [line] = [line for line in log_lines() if line.get("message") == received]
    assert (line["service"], line["level"], line["function_name"]) == ("aggregator", "INFO", function)
    assert {"timestamp", "location", "cold_start", "function_request_id"} <= set(line)
