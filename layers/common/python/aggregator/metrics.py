"""Fetch metrics in one CloudWatch namespace, written as embedded metric format log lines."""

import warnings
from datetime import datetime

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from aggregator.models import Job, JobStatus

NAMESPACE = "ApiAggregator"

metrics = Metrics(namespace=NAMESPACE, service="aggregator")
# A request that joins a job, or is answered from the freshness window, has no fetch to record.
warnings.filterwarnings("ignore", message="No application metrics to publish")


def record_fetch(job: Job) -> None:
    """The counts, failure and duration of a job that has just finished."""
    if not job.status.finished or not job.started_at or not job.finished_at:
        return
    counts = {
        "PostsFetched": job.fetched,
        "PostsInserted": job.inserted,
        "PostsUpdated": job.updated,
        "PostsDeleted": job.deleted,
        "PostsRejected": job.rejected,
        "FetchFailures": int(job.status == JobStatus.FAILED),
    }
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    took = _time(job.finished_at) - _time(job.started_at)
    metrics.add_metric(name="FetchDuration", unit=MetricUnit.Milliseconds, value=took.total_seconds() * 1000)


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))
