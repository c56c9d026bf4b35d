"""Logs are JSON with the job id as correlation id, from the API through SQS into the worker;
metrics are embedded metric format lines in one namespace."""

import io
import json

import pytest

from aggregator.metrics import NAMESPACE
from aggregator.observability import logger
from tests.helpers import body, invoke, load_event


@pytest.fixture
def log_lines(capsys):
    """What the functions log (and print: metrics) from here on, as parsed JSON lines."""
    stream = io.StringIO()
    previous = logger.registered_handler.setStream(stream)
    logger.setLevel("INFO")

    def read():
        text = stream.getvalue() + capsys.readouterr().out
        stream.seek(0)
        stream.truncate()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    yield read
    logger.setLevel("WARNING")
    logger.registered_handler.setStream(previous)


def emf(lines):
    return [line for line in lines if "_aws" in line]


def test_the_job_id_follows_a_task_fetch_from_the_api_through_the_queue_into_the_worker(upstream, sqs, log_lines):
    job_id = body(invoke("FetchApiFunction", load_event("post_fetch_task")))["job_id"]
    api_logs = [line for line in log_lines() if "message" in line]
    assert api_logs and all(line["correlation_id"] == job_id for line in api_logs if line["level"] == "INFO")
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
    assert names == {"PostsFetched", "PostsInserted", "PostsUpdated", "PostsRejected", "FetchFailures", "FetchDuration"}
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
    [("ReadApiFunction", "get_data"), ("DocsFunction", "get_docs"), ("SchedulerFunction", "schedule")],
)
def test_every_function_logs_json_with_its_context(sqs, log_lines, function, event):
    invoke(function, load_event(event))
    logger.info("probe")
    [probe] = [line for line in log_lines() if line.get("message") == "probe"]
    assert probe["service"] == "aggregator" and probe["level"] == "INFO"
    assert {"timestamp", "location"} <= set(probe)
