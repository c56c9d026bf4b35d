"""Read routes: stored posts and job records. Light imports: no boto3, no requests."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from aggregator.api import ERROR_RESPONSES, NotFoundError
from aggregator.config import settings
from aggregator.models import Job, Post
from aggregator.store import open_store

JOB_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MAX_ID = 2**63 - 1

router = Router()


@router.get("/data", summary="List stored posts, ordered by id", responses={422: ERROR_RESPONSES[422]})
def list_posts(
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this user's posts")] = None,
) -> list[Post]:
    return open_store(settings().db_path).list_posts(user_id=user_id)


@router.get("/fetch/status/<job_id>", summary="Read a fetch job's record", responses=ERROR_RESPONSES)
def job_status(job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN, description="The job's UUID")]) -> Job:
    job = open_store(settings().db_path).get_job(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job
