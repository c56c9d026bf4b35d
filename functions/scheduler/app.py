"""The EventBridge schedule: queue a fetch job (mode `scheduled`) on the worker's queue."""

from aggregator import queue
from aggregator.config import settings
from aggregator.observability import logger
from aggregator.store import open_store


class NotAScheduledEvent(ValueError):
    """The event is not an EventBridge scheduled event."""


@logger.inject_lambda_context
def lambda_handler(event, context):
    if not isinstance(event, dict) or (event.get("source"), event.get("detail-type")) != (
        "aws.events",
        "Scheduled Event",
    ):
        raise NotAScheduledEvent("expected an EventBridge 'Scheduled Event' from 'aws.events'")
    config = settings()
    job, outcome = queue.submit(open_store(config.db_path), config, "scheduled")
    logger.set_correlation_id(job["job_id"])
    logger.info("scheduled fetch", extra={"outcome": outcome})
    return {"job_id": job["job_id"], "outcome": outcome}
