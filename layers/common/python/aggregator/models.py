"""The records the API serves: posts, fetch jobs, the outcome of a claim, and errors."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class FetchMode(StrEnum):
    SYNC = "sync"
    TASK = "task"
    SCHEDULED = "scheduled"


class ClaimOutcome(StrEnum):
    """What a request for a fetch got: sent as `X-Fetch-Outcome`."""

    STARTED = "started"  # a new queued job
    JOINED = "joined"  # the job already in progress
    FRESH = "fresh"  # the last success, younger than MIN_FETCH_INTERVAL


JOB_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # a job id: a lower-case UUID
# A job id as the API reads it: a UUID in either case (RFC 9562 compares them so); it is lower-cased.
ANY_CASE_JOB_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
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
    fetched: int = Field(0, description="Records received from the upstream; grows while the job runs.")
    pages: int = Field(0, description="Upstream pages received; grows while the job runs.")
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = Field(0, description="Stored posts that the upstream no longer lists, deleted by this fetch.")
    rejected: int = Field(0, description="Records that did not fit the post schema; not stored.")
    error: str | None = Field(None, description="Why the job failed, or which records were rejected.")

    def as_json(self) -> dict[str, Any]:
        """The job as its JSON answer and log field carry it."""
        return self.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class Claim:
    """The job a request for a fetch got, and how it got it."""

    job: Job
    outcome: ClaimOutcome


class ErrorDetail(BaseModel):
    """What is wrong with one piece of the input."""

    loc: list[str | int] = Field(description='Where: `["query", name]` or `["path", name]`.')
    type: str = Field(description="What kind of fault, e.g. `int_parsing`, `extra_forbidden`, `repeated`.")
    msg: str = Field(description="The fault in words.")


class BackendError(Exception):
    """A part the request needs (the store) failed: the API answers 500 with this message, the part's own
    reason, which is safe to show."""


class Unavailable(BackendError):
    """Something the request needs cannot be used now (missing, locked, throttled): the API answers 503 with
    this message; the request may succeed later."""


class ErrorBody(BaseModel):
    """The one error shape of the API's own answers."""

    statusCode: int  # noqa: N815 - the name API Gateway and Powertools use
    message: str
    detail: list[ErrorDetail] | SkipJsonSchema[None] = Field(None, description="Only for invalid input: a fault each.")


class GatewayMessage(BaseModel):
    """An answer API Gateway gives itself, without calling a function (e.g. 403 without the API key)."""

    message: str
