"""POST /fetch: a sync fetch now, or a queued one for the worker."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from aggregator import api, ingest, queue
from aggregator.api import ERROR_RESPONSES, error, error_response, public_path
from aggregator.config import Settings, settings
from aggregator.metrics import record_fetch
from aggregator.models import ClaimOutcome, FetchMode, Job, JobStatus
from aggregator.observability import logger
from aggregator.store import Store, open_store

OUTCOME_HEADER = "X-Fetch-Outcome"  # a ClaimOutcome: started | joined | fresh

router = api.router()


def _job(description: str) -> OpenAPIResponse:
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
) -> Response[Any]:
    config = settings()
    store = open_store(config)
    if FetchMode(mode) == FetchMode.TASK:
        return _queue(store, config)
    result = ingest.fetch_now(store, config)
    job = result.job
    logger.set_correlation_id(job.job_id)
    logger.info("sync fetch answered", extra={"outcome": result.outcome.value, "job": job.as_json()})
    if result.outcome == ClaimOutcome.JOINED:
        return _job_response(202, job, result.outcome)
    if result.outcome == ClaimOutcome.STARTED:
        record_fetch(job)
    status = 200 if job.status == JobStatus.SUCCEEDED else 504 if result.timed_out else 502
    return _job_response(status, job, result.outcome)


def _queue(store: Store, config: Settings) -> Response[Any]:
    try:
        claim = queue.submit(store, config, FetchMode.TASK)
    except queue.QueueError as exc:
        logger.error("could not queue a fetch", extra={"reason": str(exc)})
        return error(503, "the fetch job could not be queued")
    logger.set_correlation_id(claim.job.job_id)
    logger.info("task fetch answered", extra={"outcome": claim.outcome.value})
    return _job_response(200 if claim.outcome == ClaimOutcome.FRESH else 202, claim.job, claim.outcome)


def _job_response(status: int, job: Job, outcome: ClaimOutcome) -> Response[Any]:
    headers = {OUTCOME_HEADER: outcome.value}
    if status == 202:
        headers["Location"] = public_path(router.current_event, f"/fetch/status/{job.job_id}")
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=job.as_json(), headers=headers
    )
