"""Fetch jobs on SQS: record a job, send it, and read it back from a message."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from aggregator import jobs
from aggregator.config import Settings
from aggregator.models import JOB_ID_PATTERN, Claim, ClaimOutcome, FetchMode
from aggregator.observability import logger
from aggregator.scrub import scrub
from aggregator.store import Store

MESSAGE_GROUP = "fetch-jobs"
JOB_ID = re.compile(JOB_ID_PATTERN)
ERROR_CODE = re.compile(r"[A-Za-z][\w.]{0,99}")


class QueueError(Exception):
    """The job could not be sent to the queue."""


class BadMessage(ValueError):
    """A queue message that does not name a job."""


def submit(store: Store, settings: Settings, mode: FetchMode) -> Claim:
    """Claim a job and send it if it is new; a job that cannot be sent ends `failed`."""
    lease = jobs.queued_lease(settings, deliveries_left=settings.max_receive_count)
    claim = jobs.claim(store, settings, mode, lease_seconds=lease)
    if claim.outcome != ClaimOutcome.STARTED:
        return claim
    try:
        send(settings, claim.job.job_id)
    except Exception as exc:
        reason = f"could not enqueue the job: {_short_reason(exc)}"  # the job is readable without a key
        logger.error("could not enqueue the job", extra={"reason": reason, "detail": scrub(str(exc))})
        store.fail_job(claim.job.job_id, reason)
        raise QueueError(reason) from exc
    return claim


def _short_reason(exc: Exception) -> str:
    """Our own reason, or AWS's error code (such as AccessDenied) without its message, which names
    ARNs and roles; else the kind of error."""
    if isinstance(exc, QueueError):
        return str(exc)
    response = getattr(exc, "response", None)  # botocore's ClientError keeps the parsed error here
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code if isinstance(code, str) and ERROR_CODE.fullmatch(code) else type(exc).__name__


def send(settings: Settings, job_id: str, client: Any = None) -> None:
    """Send the job's message with `client`, by default this process's SQS client."""
    if not settings.queue_url:
        raise QueueError("QUEUE_URL is not set")
    message = {"QueueUrl": settings.queue_url, "MessageBody": json.dumps({"job_id": job_id})}
    if settings.queue_url.endswith(".fifo"):
        message |= {"MessageGroupId": MESSAGE_GROUP, "MessageDeduplicationId": job_id}
    (client or _sqs(settings.aws_endpoint_url)).send_message(**message)


def job_id_of(body: str) -> str:
    """The job id a message carries; BadMessage if it carries none."""
    try:
        message = json.loads(body)
    except ValueError:
        raise BadMessage("message body is not JSON") from None
    job_id = message.get("job_id") if isinstance(message, dict) else None
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise BadMessage("message has no valid 'job_id'")
    return job_id


@lru_cache(maxsize=4)
def _sqs(endpoint_url: str | None) -> Any:
    # Imported here, not at the top: only the task path should pay for boto3's import. It ships no type hints.
    import boto3  # type: ignore[import-untyped]

    return boto3.client("sqs", endpoint_url=endpoint_url)
