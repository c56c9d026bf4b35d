"""The worker through its real handler: SQS events from events/ and from moto's queue, on each store backend."""

import copy
import json
import threading
import time

import boto3
import pytest

from aggregator import queue
from aggregator.config import settings
from aggregator.models import FetchMode, JobStatus
from tests.helpers import LEASE_SECONDS, STORE_FREE, invoke, load_event, merge, queued_job
from tests.unit.test_store import rows

pytestmark = pytest.mark.usefixtures("backend")
UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"


def sqs_event(*records):
    return {"Records": list(records)}


def record(job_id=None, *, body=None, receive_count=1, message_id="m-1"):
    template = copy.deepcopy(load_event("sqs_fetch_job")["Records"][0])
    template["body"] = body if body is not None else json.dumps({"job_id": job_id})
    template["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    template["messageId"] = message_id
    return template


def failures(response):
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_the_committed_event_runs_its_job(upstream, store):
    job = queued_job(store, FetchMode.TASK)
    event = load_event("sqs_fetch_job")
    event["Records"][0]["body"] = json.dumps({"job_id": job.job_id})
    assert invoke("WorkerFunction", event) == {"batchItemFailures": []}
    done = store.get_job(job.job_id)
    assert (done.status, done.inserted) == (JobStatus.SUCCEEDED, 100)
    assert store.count_posts() == 100


def test_a_job_sent_through_the_queue_is_run_by_the_worker(upstream, sqs, store):
    job = queue.submit(store, settings(), FetchMode.TASK).job
    messages = sqs.client.receive_message(QueueUrl=sqs.url, AttributeNames=["All"])["Messages"]
    event = sqs_event(
        record(
            body=messages[0]["Body"],
            receive_count=messages[0]["Attributes"]["ApproximateReceiveCount"],
            message_id=messages[0]["MessageId"],
        )
    )
    assert failures(invoke("WorkerFunction", event)) == []
    assert store.get_job(job.job_id).status == JobStatus.SUCCEEDED


def test_a_redelivered_message_for_a_finished_job_changes_nothing(upstream, store):
    job = queued_job(store, FetchMode.TASK)
    invoke("WorkerFunction", sqs_event(record(job.job_id)))
    finished = store.get_job(job.job_id)
    requests = upstream.requests
    upstream.posts[0]["title"] = "changed after the job"
    assert failures(invoke("WorkerFunction", sqs_event(record(job.job_id, receive_count=2)))) == []
    assert store.get_job(job.job_id) == finished
    assert upstream.requests == requests
    assert store.list_posts()[0].title == "post 1 title"


def test_a_job_left_running_by_a_dead_worker_is_run_again(upstream, store):
    job = queued_job(store, FetchMode.TASK)
    store.start_job(job.job_id, lease_seconds=LEASE_SECONDS)
    assert failures(invoke("WorkerFunction", sqs_event(record(job.job_id, receive_count=2)))) == []
    assert store.get_job(job.job_id).status == JobStatus.SUCCEEDED


def test_an_upstream_failure_before_the_last_delivery_is_retried(upstream, store):
    job = queued_job(store, FetchMode.TASK)
    upstream.then_respond(503, {})
    assert failures(invoke("WorkerFunction", sqs_event(record(job.job_id)))) == ["m-1"]
    assert store.get_job(job.job_id).status == JobStatus.RUNNING
    assert store.count_posts() == 0


def test_an_upstream_failure_on_the_last_delivery_fails_the_job(upstream, store):
    job = queued_job(store, FetchMode.TASK)
    upstream.then_respond(503, {})
    last = settings().max_receive_count
    assert failures(invoke("WorkerFunction", sqs_event(record(job.job_id, receive_count=last)))) == ["m-1"]
    failed = store.get_job(job.job_id)
    assert (failed.status, failed.error) == (JobStatus.FAILED, "upstream answered HTTP 503")


@STORE_FREE  # refused before the store is asked
@pytest.mark.parametrize(
    "body", ["not json", "[]", "null", '{"job": "x"}', '{"job_id": 42}', '{"job_id": "../../etc/passwd"}', ""]
)
def test_a_malformed_message_is_reported_alone(upstream, store, body):
    assert_reported_alone(store, body)


def test_a_message_for_an_unknown_job_is_reported_alone(upstream, store):
    assert_reported_alone(store, '{"job_id": "00000000-0000-4000-8000-000000000000"}')


def assert_reported_alone(store, body: str) -> None:
    good = queued_job(store, FetchMode.TASK)
    event = sqs_event(record(body=body, message_id="bad"), record(good.job_id, message_id="good"))
    assert failures(invoke("WorkerFunction", event)) == ["bad"]
    assert store.get_job(good.job_id).status == JobStatus.SUCCEEDED


def test_a_batch_in_which_one_job_fails_reports_only_that_record(upstream, store):
    first, second, third = (queued_job(store, FetchMode.TASK) for _ in range(3))
    upstream.then_respond(200, [{"userId": 1, "id": 1, "title": "a", "body": "b"}])
    upstream.then_respond(500, {})
    event = sqs_event(
        record(first.job_id, message_id="one"),
        record(second.job_id, message_id="two"),
        record(third.job_id, message_id="three"),
    )
    assert failures(invoke("WorkerFunction", event)) == ["two"]
    assert [store.get_job(j.job_id).status for j in (first, second, third)] == [
        JobStatus.SUCCEEDED,
        JobStatus.RUNNING,
        JobStatus.SUCCEEDED,
    ]


def test_a_batch_where_every_record_fails_reports_them_all():
    event = sqs_event(record(body="x", message_id="a"), record(body="y", message_id="b"))
    assert failures(invoke("WorkerFunction", event)) == ["a", "b"]


def test_a_delivery_whose_job_is_given_up_on_while_it_runs_writes_nothing_and_is_not_retried(upstream, store):
    job = queued_job(store, FetchMode.TASK)
    upstream.then_respond(200, [dict(post, title="late") for post in upstream.posts], delay=1.0)
    answers = []
    delivery = threading.Thread(target=lambda: answers.append(invoke("WorkerFunction", sqs_event(record(job.job_id)))))
    delivery.start()
    while store.get_job(job.job_id).status != JobStatus.RUNNING:
        time.sleep(0.01)
    given_up = store.fail_job(job.job_id, "abandoned: given up by an operator")
    delivery.join()
    assert failures(answers[0]) == []
    assert store.get_job(job.job_id) == given_up
    assert store.count_posts() == 0


@pytest.mark.parametrize("ends", ["succeeded", "failed"])
def test_a_delivery_whose_job_another_delivery_ends_before_it_starts_ignores_its_message(
    upstream, store, log_lines, monkeypatch, ends
):
    job = queued_job(store, FetchMode.TASK)
    start_job = type(store).start_job
    ended = []

    def another_delivery_first(self, job_id, **kwargs):  # a duplicate delivery runs the job to its end meanwhile
        lease = start_job(self, job_id, **kwargs)
        if ends == "succeeded":
            ended.append(merge(self, [rows(1)], lease=lease))
        else:
            ended.append(self.fail_job(job_id, "upstream answered 500", lease=lease))
        return start_job(self, job_id, **kwargs)

    monkeypatch.setattr(type(store), "start_job", another_delivery_first)
    assert failures(invoke("WorkerFunction", sqs_event(record(job.job_id)))) == []
    assert store.get_job(job.job_id) == ended[0]
    assert upstream.requests == 0
    lines = log_lines()
    assert [line["message"] for line in lines if "message" in line][-1] == "job already finished; message ignored"
    assert not [line for line in lines if "_aws" in line]  # the delivery that ran it recorded its metrics


@pytest.mark.parametrize(
    ("body", "reason", "correlation_id"),
    [
        ("garbage", "message body is not JSON", "bad"),
        ('{"job": "x"}', "message has no valid 'job_id'", "bad"),
        (f'{{"job_id": "{UNKNOWN_JOB}"}}', f"no job {UNKNOWN_JOB}", UNKNOWN_JOB),
    ],
)
def test_a_failed_record_is_logged_with_its_reason(upstream, store, log_lines, body, reason, correlation_id):
    good = queued_job(store, FetchMode.TASK)
    event = sqs_event(record(body=body, message_id="bad"), record(good.job_id, message_id="good"))
    assert failures(invoke("WorkerFunction", event)) == ["bad"]
    warnings = [line for line in log_lines() if line.get("level") == "WARNING"]
    assert [(w["reason"], w["correlation_id"], w["message_id"]) for w in warnings] == [(reason, correlation_id, "bad")]


def test_a_store_failure_fails_the_record_and_is_logged(upstream, store, backend, log_lines):
    job = queued_job(store, FetchMode.TASK)
    if backend == "sqlite":
        with open(settings().db_path, "wb") as file:  # overwritten under the worker
            file.write(b"garbage\n")
    else:
        boto3.client("dynamodb").delete_table(TableName=settings().jobs_table)
    assert failures(invoke("WorkerFunction", sqs_event(record(job.job_id)))) == ["m-1"]
    [warning] = [line for line in log_lines() if line.get("level") == "WARNING"]
    assert warning["reason"].startswith("the database is unavailable: ")
    assert warning["correlation_id"] == job.job_id
