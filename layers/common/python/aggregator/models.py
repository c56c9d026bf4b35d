"""The records the API serves: posts, fetch jobs and errors."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FetchMode(StrEnum):
    SYNC = "sync"
    TASK = "task"
    SCHEDULED = "scheduled"


FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
JOB_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # a job id: a lower-case UUID
MAX_ID = 2**53 - 1  # the largest integer every JSON client (JavaScript included) reads exactly


class Post(BaseModel):
    id: int = Field(description="The upstream id; a post is stored once under it.")
    user_id: int
    title: str
    body: str


class Job(BaseModel):
    job_id: str
    mode: FetchMode
    status: JobStatus = Field(description="queued -> running -> succeeded | failed, only forward.")
    created_at: str = Field(description="ISO 8601, UTC")
    started_at: str | None = None
    finished_at: str | None = None
    fetched: int = Field(0, description="Records received from the upstream.")
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = Field(0, description="Records that did not fit the post schema; not stored.")
    error: str | None = Field(None, description="Why the job failed, or which records were rejected.")


class ErrorBody(BaseModel):
    statusCode: int  # noqa: N815 - the name API Gateway and Powertools use
    message: str
    detail: list[dict] | None = None
