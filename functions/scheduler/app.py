"""The EventBridge schedule: queue a fetch job (mode `scheduled`) on the worker's queue."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from aggregator import queue
from aggregator.config import settings
from aggregator.models import FetchMode
from aggregator.observability import logger
from aggregator.store import open_store

SCHEDULED = ("aws.events", "Scheduled Event")  # an EventBridge schedule's source and detail-type


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict) or (event.get("source"), event.get("detail-type")) != SCHEDULED:
        logger.error("not a scheduled event; nothing queued")
        return {"error": "not a scheduled event: expected an EventBridge 'Scheduled Event' from 'aws.events'"}
    config = settings()
    store = open_store(config, seconds_left=context.get_remaining_time_in_millis() / 1000)
    claim = queue.submit(store, config, FetchMode.SCHEDULED)
    logger.set_correlation_id(claim.job.job_id)
    logger.info("scheduled fetch", extra={"outcome": claim.outcome.value})
    return {"job_id": claim.job.job_id, "outcome": claim.outcome.value}
