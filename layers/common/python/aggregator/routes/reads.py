"""Read routes: stored posts and job records. Light imports: no boto3, no requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from aggregator import api
from aggregator.api import (
    JOBS_TAG,
    POSTS_TAG,
    DecimalInt,
    NotFoundError,
    error_response,
    error_responses,
    header,
    public_path,
)
from aggregator.config import settings
from aggregator.examples import (
    HISTORY_EXAMPLE,
    INVALID_JOB_ID,
    INVALID_LIMIT,
    INVALID_USER_ID,
    JOB_EXAMPLES,
    PAGE_EXAMPLE,
    UNKNOWN_JOB_EXAMPLE,
)
from aggregator.jobs import JOBS_KEPT
from aggregator.models import ANY_CASE_JOB_ID_PATTERN, MAX_ID, Job, Post
from aggregator.store import Store, UnknownJob, open_store

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_JOBS_LIMIT = 20
MAX_JOBS_LIMIT = 100
LAMBDA_RESPONSE_LIMIT = 6_291_556  # bytes of a function's serialized answer to a synchronous call
PAGE_BUDGET_BYTES = (
    6_000_000  # a page's share of it, escaped as the answer carries it; status and headers fit in the rest
)

router = api.router()


def _page_answer(description: str, remaining: str, path: str, model: Any, example: Any) -> OpenAPIResponse:
    """A 200 whose body is a page of `model`, with the `Link` to the next page of `path` while `remaining`."""
    return OpenAPIResponse(
        description=description,
        headers={
            "Link": header(
                f'The next page, while {remaining}: `<path?query>; rel="next"`',
                {"type": "string", "pattern": rf'^<[^<>]*{path}\?[^<>]*>; rel="next"$'},
            )
        },
        content={"application/json": {"model": model, "examples": {"page": {"value": example}}}},
    )


@router.get(
    "/data",
    summary="List stored posts, ordered by id, a page at a time",
    description=(
        "At most `limit` posts with ids above `after_id`, in id order. A page also ends early rather than let the "
        f"function's answer pass Lambda's limit of {LAMBDA_RESPONSE_LIMIT:,} bytes: the page may take "
        f"{PAGE_BUDGET_BYTES:,} of them, counted as the answer carries it, escapes included. "
        'While more posts remain, `Link: <...>; rel="next"` names the next page.'
    ),
    tags=[POSTS_TAG],
    responses={
        200: _page_answer("A page of posts", "more posts remain", "/data", list[Post], PAGE_EXAMPLE),
        **error_responses(INVALID_USER_ID),
    },
)
def list_posts(
    user_id: Annotated[int | None, DecimalInt(1, MAX_ID), Query(description="Only this user's posts")] = None,
    limit: Annotated[int, DecimalInt(1, MAX_LIMIT), Query(description="Posts per page")] = DEFAULT_LIMIT,
    after_id: Annotated[int, DecimalInt(0, MAX_ID), Query(description="Start after this post id")] = 0,
) -> Response[str]:
    store = _store()
    page = store.page_of_posts_json(user_id=user_id, after_id=after_id, limit=limit, max_bytes=PAGE_BUDGET_BYTES)
    query = {"limit": limit, "after_id": page.last_id} | ({"user_id": user_id} if user_id else {})
    headers = _next_link("/data", query) if page.more else {}
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=page.json, headers=headers)


@router.get(
    "/fetch/status/<job_id>",
    summary="Read a fetch job's record",
    tags=[JOBS_TAG],
    responses={
        200: OpenAPIResponse(
            description="The job",
            content={"application/json": {"model": Job, "examples": JOB_EXAMPLES}},
        ),
        404: error_response("No job has this id", UNKNOWN_JOB_EXAMPLE),
        **error_responses(INVALID_JOB_ID),
    },
)
def job_status(
    job_id: Annotated[str, Path(pattern=ANY_CASE_JOB_ID_PATTERN, description="The job's UUID, in either case")],
) -> Job:
    job = _store().get_job(job_id.lower())
    if job is None:
        raise NotFoundError(f"no job {job_id.lower()}")
    return job


@router.get(
    "/fetch/jobs",
    summary="List recent fetch jobs, newest first, a page at a time",
    description=(
        "At most `limit` jobs, newest first, starting after job `before` (from the newest without it). While "
        'older jobs remain, `Link: <...>; rel="next"` names the next page. The newest '
        f"{JOBS_KEPT:,} jobs are kept: when a new job starts, the finished jobs older than those are deleted."
    ),
    tags=[JOBS_TAG],
    responses={
        200: _page_answer(
            "A page of jobs, newest first", "older jobs remain", "/fetch/jobs", list[Job], HISTORY_EXAMPLE
        ),
        404: error_response("No job has the id `before`", UNKNOWN_JOB_EXAMPLE),
        **error_responses(INVALID_LIMIT),
    },
)
def job_history(
    limit: Annotated[int, DecimalInt(1, MAX_JOBS_LIMIT), Query(description="Jobs per page")] = DEFAULT_JOBS_LIMIT,
    before: Annotated[
        str | None,
        Query(pattern=ANY_CASE_JOB_ID_PATTERN, description="Start after this job: the last of the page before"),
    ] = None,
) -> Response[list[dict[str, Any]]]:
    before = before.lower() if before else None
    try:
        page = _store().page_of_jobs(before=before, limit=limit)
    except UnknownJob:
        raise NotFoundError(f"no job {before}") from None
    headers = _next_link("/fetch/jobs", {"limit": limit, "before": page.jobs[-1].job_id}) if page.more else {}
    body = [job.as_json() for job in page.jobs]
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def _store() -> Store:
    """The store, waiting for the database no longer than this invocation has time for."""
    return open_store(settings(), seconds_left=router.lambda_context.get_remaining_time_in_millis() / 1000)


def _next_link(path: str, query: Mapping[str, object]) -> dict[str, str]:
    """The `Link` header that names the next page of `path`."""
    return {"Link": f'<{public_path(router.current_event, path)}?{urlencode(query)}>; rel="next"'}
