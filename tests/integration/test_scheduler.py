"""The schedule's function through its real handler, with the committed EventBridge event, on each store backend."""

import json

import pytest

from aggregator.models import FetchMode, JobStatus
from aggregator.queue import QueueError
from tests.helpers import LEASE_SECONDS, invoke, load_event, queued_job

pytestmark = pytest.mark.usefixtures("backend")


def test_a_scheduled_event_queues_a_scheduled_fetch(sqs, store):
    result = invoke("SchedulerFunction", load_event("schedule"))
    job = store.get_job(result["job_id"])
    assert (job.mode, job.status) == (FetchMode.SCHEDULED, JobStatus.QUEUED)
    [message] = sqs.client.receive_message(QueueUrl=sqs.url)["Messages"]
    assert json.loads(message["Body"]) == {"job_id": result["job_id"]}


def test_without_a_queue_the_job_is_marked_failed_not_left_queued(store):
    with pytest.raises(QueueError):
        invoke("SchedulerFunction", load_event("schedule"))
    [job] = store.list_jobs()
    assert job.status == JobStatus.FAILED and "QUEUE_URL" in job.error


def test_the_schedule_never_starts_a_fetch_on_top_of_a_running_one(sqs, store):
    running = queued_job(store, FetchMode.SYNC)
    store.start_job(running.job_id, lease_seconds=LEASE_SECONDS)
    result = invoke("SchedulerFunction", load_event("schedule"))
    assert result == {"job_id": running.job_id, "outcome": "joined"}
    assert "Messages" not in sqs.client.receive_message(QueueUrl=sqs.url)
