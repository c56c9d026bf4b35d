"""POST /fetch: a sync fetch now, or a queued one for the worker."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from aggregator import ingest, queue
from aggregator.api import ERROR_RESPONSES, error, error_response, public_path
from aggregator.config import settings
from aggregator.metrics import record_fetch
from aggregator.models import Job
from aggregator.observability import logger
from aggregator.store import open_store

OUTCOME_HEADER = "X-Fetch-Outcome"  # started | joined | fresh

router = Router()


def _job(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"model": Job}}}


@router.post(
    "/fetch",
    security=[{"apiKey": []}],
    summary="Fetch posts from the upstream now (sync) or in the background (task)",
    responses={
        200: _job("sync: the finished job; or, either mode, the last success if it is fresher than MIN_FETCH_INTERVAL"),
        202: _job("task: the queued job, or the job in progress that this request joins; `Location` names its status"),
        403: {"description": "No valid `x-api-key` (API Gateway answers `{message: Forbidden}`)"},
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
    job = outcome.job
    logger.set_correlation_id(job["job_id"])
    logger.info("sync fetch answered", extra={"outcome": outcome.claim, "job": job})
    if outcome.claim == "joined":
        return _job_response(202, job, "joined")
    if outcome.claim == "started":
        record_fetch(job)
    status = 200 if job["status"] == "succeeded" else 504 if outcome.timed_out else 502
    return _job_response(status, job, outcome.claim)


def _queue(store, config) -> Response:
    try:
        job, outcome = queue.submit(store, config, "task")
    except queue.QueueError as exc:
        logger.error("could not queue a fetch", extra={"reason": str(exc)})
        return error(503, "the fetch job could not be queued")
    logger.set_correlation_id(job["job_id"])
    logger.info("task fetch answered", extra={"outcome": outcome})
    return _job_response(200 if outcome == "fresh" else 202, job, outcome)


def _job_response(status: int, job: dict, outcome: str) -> Response:
    headers = {OUTCOME_HEADER: outcome}
    if status == 202:
        headers["Location"] = public_path(router.current_event, f"/fetch/status/{job['job_id']}")
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=job, headers=headers)
