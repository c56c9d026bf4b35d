"""POST /fetch: a sync fetch now, or a queued one for the worker."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from aggregator import api, examples, ingest, queue
from aggregator.api import (
    ERROR_SCHEMA,
    FUNCTION_FAILED_EXAMPLE,
    GATEWAY_SCHEMA,
    GATEWAY_TIMEOUT_EXAMPLE,
    JOBS_TAG,
    STORE_FAILED_EXAMPLE,
    STORE_LOCKED_EXAMPLE,
    STORE_UNAVAILABLE_EXAMPLE,
    any_of_response,
    error,
    error_response,
    error_responses,
    public_path,
)
from aggregator.config import Settings, settings
from aggregator.examples import examples as example_objects
from aggregator.metrics import record_fetch
from aggregator.models import ClaimOutcome, FetchMode, GatewayMessage, Job, JobStatus
from aggregator.observability import logger
from aggregator.store import Store, open_store

OUTCOME_HEADER = "X-Fetch-Outcome"  # a ClaimOutcome: started | joined | fresh
JOB_SCHEMA = "#/components/schemas/Job"

router = api.router()


def _job_answer(
    description: str,
    statuses: tuple[JobStatus, ...],
    outcomes: tuple[ClaimOutcome, ...],
    *,
    others: tuple[dict[str, Any], ...] = (),
    **named: dict[str, Any],
) -> OpenAPIResponse:
    """An answer whose body is a job in one of `statuses`, sent with one of `outcomes`; a 202 also has Location.
    With `others`, the schemas of the other bodies this status may have (the headers are then not required)."""
    headers = {
        OUTCOME_HEADER: api.header(
            "How this request got its job: it `started` it, `joined` the one in progress, or got a `fresh` success",
            {"type": "string", "enum": [o.value for o in outcomes]},
            required=not others,
        )
    }
    if JobStatus.QUEUED in statuses:
        headers["Location"] = api.header(
            "Where to read the job: `/fetch/status/{job_id}`, under the stage path when deployed",
            {"type": "string", "pattern": r"/fetch/status/[0-9a-f-]{36}$"},
            required=True,
        )
    schema = {"allOf": [{"$ref": JOB_SCHEMA}, {"properties": {"status": {"enum": [s.value for s in statuses]}}}]}
    return any_of_response(description, [schema, *others], headers, **named)


@router.post(
    "/fetch",
    security=[{"apiKey": []}],
    summary="Fetch posts from the upstream now (sync) or in the background (task)",
    tags=[JOBS_TAG],
    responses={
        200: _job_answer(
            "sync: the finished job; or, either mode, the last success if it is fresher than MIN_FETCH_INTERVAL",
            (JobStatus.SUCCEEDED,),
            (ClaimOutcome.STARTED, ClaimOutcome.FRESH),
            succeeded=examples.SUCCEEDED,
        ),
        202: _job_answer(
            "task: the queued job; or, either mode, the job in progress that this request joins",
            (JobStatus.QUEUED, JobStatus.RUNNING),
            (ClaimOutcome.STARTED, ClaimOutcome.JOINED),
            queued=examples.QUEUED,
            joined=examples.RUNNING,
        ),
        403: {
            "description": "No valid `x-api-key`: API Gateway answers this itself",
            "content": {
                "application/json": {
                    "model": GatewayMessage,
                    "examples": example_objects(forbidden=examples.FORBIDDEN_EXAMPLE),
                }
            },
        },
        **error_responses(examples.INVALID_MODE),
        409: _job_answer(
            "sync: the job was given up on before its fetch ended; nothing of it was written",
            (JobStatus.FAILED,),
            (ClaimOutcome.STARTED,),
            given_up=examples.GIVEN_UP,
        ),
        500: _job_answer(
            "sync: the store failed during the fetch; the body is the failed job, its `error` the database's own "
            "reason. Or the store failed before a job began (the error shape), or API Gateway's own answer when "
            "Lambda throttles the function",
            (JobStatus.FAILED,),
            (ClaimOutcome.STARTED,),
            others=(ERROR_SCHEMA, GATEWAY_SCHEMA),
            store_failed=examples.STORE_FAILED,
            store_failed_before_a_job=STORE_FAILED_EXAMPLE,
            throttled=FUNCTION_FAILED_EXAMPLE,
        ),
        502: _job_answer(
            "sync: the upstream failed; the body is the failed job. Or API Gateway's own answer when the function "
            "failed (an exception, a crash, its memory or its timeout)",
            (JobStatus.FAILED,),
            (ClaimOutcome.STARTED,),
            others=(GATEWAY_SCHEMA,),
            failed=examples.FAILED,
            function_failed=FUNCTION_FAILED_EXAMPLE,
        ),
        503: error_response(
            "task: the job could not be queued; it is recorded failed. Either mode: the database is unavailable, "
            "and may be later (its file missing or not the database created there, a lock held past the request's "
            "time, a table missing, its requests throttled)",
            not_queued=examples.NOT_QUEUED_EXAMPLE,
            missing=STORE_UNAVAILABLE_EXAMPLE,
            locked=STORE_LOCKED_EXAMPLE,
        ),
        504: _job_answer(
            "sync: the upstream timed out, or the merge ran past the function's time; the body is the failed job. "
            "Or API Gateway's own answer when the "
            "function did not answer within the integration's timeout (29 s)",
            (JobStatus.FAILED,),
            (ClaimOutcome.STARTED,),
            others=(GATEWAY_SCHEMA,),
            timed_out=examples.TIMED_OUT,
            gateway_timed_out=GATEWAY_TIMEOUT_EXAMPLE,
        ),
    },
)
def fetch(
    mode: Annotated[Literal["sync", "task"], Query(description="sync answers when done; task queues")] = "sync",
) -> Response[Any]:
    config = settings()
    seconds_left = router.lambda_context.get_remaining_time_in_millis() / 1000
    store = open_store(config, seconds_left=seconds_left)
    if FetchMode(mode) == FetchMode.TASK:
        return _queue(store, config)
    result = ingest.fetch_now(store, config, seconds_left=seconds_left)
    job = result.job
    logger.set_correlation_id(job.job_id)
    logger.info("sync fetch answered", extra={"outcome": result.outcome.value, "job": job.as_json()})
    if result.outcome == ClaimOutcome.JOINED:
        return _job_response(202, job, result.outcome)
    if result.outcome == ClaimOutcome.STARTED:
        record_fetch(job)
    return _job_response(_status(result), job, result.outcome)


def _status(result: ingest.FetchResult) -> int:
    if result.job.status == JobStatus.SUCCEEDED:
        return 200
    if result.given_up:
        return 409
    return 500 if result.store_failed else 504 if result.timed_out else 502


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
