"""Read routes: stored posts and job records. Light imports: no boto3, no requests."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from aggregator import api
from aggregator.api import ERROR_RESPONSES, NotFoundError, public_path
from aggregator.config import settings
from aggregator.models import JOB_ID_PATTERN, MAX_ID, Job, Post
from aggregator.store import open_store

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_RESPONSE_BYTES = 5_000_000  # the budget of one GET /data answer: a Lambda response must stay under 6 MB

router = api.router()


@router.get(
    "/data",
    summary="List stored posts, ordered by id, a page at a time",
    description=(
        f"At most `limit` posts (and at most {MAX_RESPONSE_BYTES // 1_000_000} MB) with ids above `after_id`. "
        'While more remain, `Link: <...>; rel="next"` names the next page.'
    ),
    responses={
        200: OpenAPIResponse(description="A page of posts", content={"application/json": {"model": list[Post]}}),
        422: ERROR_RESPONSES[422],
    },
)
def list_posts(
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this user's posts")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Posts per page")] = DEFAULT_LIMIT,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Start after this post id")] = 0,
) -> Response[str]:
    store = open_store(settings())
    page = store.page_of_posts_json(user_id=user_id, after_id=after_id, limit=limit, max_bytes=MAX_RESPONSE_BYTES)
    headers = {}
    if page.more:
        query = {"limit": limit, "after_id": page.last_id} | ({"user_id": user_id} if user_id else {})
        headers["Link"] = f'<{public_path(router.current_event, "/data")}?{urlencode(query)}>; rel="next"'
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=page.json, headers=headers)


@router.get(
    "/fetch/status/<job_id>",
    summary="Read a fetch job's record",
    responses={
        200: OpenAPIResponse(description="The job", content={"application/json": {"model": Job}}),
        **ERROR_RESPONSES,
    },
)
def job_status(job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN, description="The job's UUID")]) -> Job:
    job = open_store(settings()).get_job(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job
