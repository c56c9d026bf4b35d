"""The SQS worker: runs each queued fetch job; failed records go back to the queue."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from aggregator import ingest, jobs, queue
from aggregator.config import settings
from aggregator.metrics import metrics, record_fetch
from aggregator.models import Job, JobStatus
from aggregator.observability import logger
from aggregator.scrub import scrub
from aggregator.store import StoreError, open_store

# Jobs are independent, so a failed record must not hold back the ones after it.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class JobFailed(Exception):
    """The job failed on this delivery; the message goes back to the queue, then to the DLQ."""


def run_record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    """Run the job a message names. A failure is logged with its reason, under the job's id as correlation
    id, or the message's when it names no job, then raised: the message goes back to the queue."""
    logger.set_correlation_id(record.message_id)
    try:
        _run(record, lambda_context)
    except ingest.RetryLater as exc:
        logger.warning("job failed on this delivery; the queue delivers it again", extra={"reason": str(exc)})
        raise
    except Exception as exc:
        known = isinstance(exc, queue.BadMessage | JobFailed | StoreError)
        reason = str(exc) if known else f"internal error: {type(exc).__name__}"
        logger.warning(
            "delivery failed", extra={"reason": reason, "detail": scrub(str(exc)), "message_id": record.message_id}
        )
        raise


def _run(record: SQSRecord, lambda_context: LambdaContext) -> None:
    job_id = queue.job_id_of(record.body)
    logger.set_correlation_id(job_id)
    config = settings()
    store = open_store(config, seconds_left=lambda_context.get_remaining_time_in_millis() / 1000)
    job = store.get_job(job_id)
    if job is None:
        raise JobFailed(f"no job {job_id}")
    if job.status.finished:
        return _ignore(job)
    attempt = int(record.attributes.approximate_receive_count)
    last = attempt >= config.max_receive_count
    logger.info("job running", extra={"attempt": attempt, "last_attempt": last})
    budget = ingest.fetch_budget(lambda_context.get_remaining_time_in_millis() / 1000)
    lease = jobs.queued_lease(config, deliveries_left=jobs.deliveries_left(config, attempt))
    result = ingest.run_job(store, config, job_id, budget=budget, lease_seconds=lease, last_attempt=last)
    job = result.job
    if result.already_finished:  # another delivery ended it meanwhile, and recorded it
        return _ignore(job)
    if result.given_up:
        logger.warning("job was given up on while it ran; its fetch was discarded", extra={"job": job.as_json()})
        return
    logger.info("job finished", extra={"job": job.as_json()})
    record_fetch(job)
    if job.status != JobStatus.SUCCEEDED:
        raise JobFailed(job.error or "the job failed")


def _ignore(job: Job) -> None:
    logger.info("job already finished; message ignored", extra={"status": job.status.value})


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse | dict[str, str]:
    fault = sqs_event_fault(event)
    if fault is not None:
        logger.error("not an SQS event; nothing run", extra={"reason": fault})
        return {"error": f"not an SQS event: {fault}"}
    if not event["Records"]:
        return {"batchItemFailures": []}
    return process_partial_response(event=event, record_handler=run_record, processor=processor, context=context)


def sqs_event_fault(event: object) -> str | None:
    """What keeps `event` from being a batch of SQS messages, each with an id, a body and a receive count."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return "it has no list 'Records'"
    for n, record in enumerate(records):
        if not isinstance(record, dict) or record.get("eventSource") != "aws:sqs":
            return f"record {n} is not from SQS"
        attributes = record.get("attributes")
        count = attributes.get("ApproximateReceiveCount") if isinstance(attributes, dict) else None
        if not all(isinstance(record.get(key), str) for key in ("messageId", "body")) or not (
            isinstance(count, str) and count.isascii() and count.isdigit()
        ):
            return f"record {n} lacks a messageId, a body or an ApproximateReceiveCount"
    return None
