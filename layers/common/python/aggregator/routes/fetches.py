"""POST /fetch: a sync fetch now, or a queued one for the worker."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from aggregator import ingest, queue
from aggregator.api import ERROR_RESPONSES, error, error_response
from aggregator.config import settings
from aggregator.models import Job
from aggregator.observability import logger
from aggregator.store import open_store

router = Router()


def _job(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"model": Job}}}


@router.post(
    "/fetch",
    summary="Fetch posts from the upstream now (sync) or in the background (task)",
    responses={
        200: _job("sync: the finished job"),
        202: _job("task: the queued job; `Location` names its status URL"),
        422: ERROR_RESPONSES[422],
        502: _job("sync: the upstream failed; the body is the failed job"),
        503: error_response("task: the job could not be queued"),
        504: _job("sync: the upstream timed out; the body is the failed job"),
    },
)
def fetch(
    mode: Annotated[Literal["sync", "task"], Query(description="sync answers when done; task queues")] = "sync",
):
    store, config = open_store(settings().db_path), settings()
    if mode == "task":
        return _queue(store, config)
    outcome = ingest.fetch_now(store, config)
    logger.set_correlation_id(outcome.job["job_id"])
    logger.info("sync fetch finished", extra={"job": outcome.job})
    status = 200 if outcome.job["status"] == "succeeded" else 504 if outcome.timed_out else 502
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=outcome.job)


def _queue(store, config) -> Response:
    try:
        job = queue.submit(store, config, "task")
    except queue.QueueError as exc:
        logger.error("could not queue a fetch", extra={"reason": str(exc)})
        return error(503, "the fetch job could not be queued")
    logger.set_correlation_id(job["job_id"])
    logger.info("fetch job queued")
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=job,
        headers={"Location": _status_url(job["job_id"])},
    )


def _status_url(job_id: str) -> str:
    """The job's status path, under the stage prefix the request came through, if any."""
    request_path = router.current_event.request_context.path or "/fetch"
    return f"{request_path.rsplit('/fetch', 1)[0]}/fetch/status/{job_id}"
