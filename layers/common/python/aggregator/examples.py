"""The examples the OpenAPI document shows. Each is an answer the API gives; the tests hold them to it."""

from __future__ import annotations

from typing import Any

from aggregator.models import ANY_CASE_JOB_ID_PATTERN, FetchMode, Job, JobStatus

JOB_ID = "0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10"
CREATED, STARTED, FINISHED = "2026-11-28T12:00:00.000Z", "2026-11-28T12:00:00.004Z", "2026-11-28T12:00:00.912Z"


def _job(mode: FetchMode, status: JobStatus, **fields: Any) -> dict[str, Any]:
    return Job(job_id=JOB_ID, mode=mode, status=status, created_at=CREATED, **fields).as_json()


SUCCEEDED = _job(
    FetchMode.SYNC, JobStatus.SUCCEEDED, started_at=STARTED, finished_at=FINISHED, fetched=100, pages=1, inserted=100
)
QUEUED = _job(FetchMode.TASK, JobStatus.QUEUED)
RUNNING = _job(FetchMode.TASK, JobStatus.RUNNING, started_at=STARTED)
FAILED = _job(
    FetchMode.SYNC, JobStatus.FAILED, started_at=STARTED, finished_at=FINISHED, error="upstream answered HTTP 500"
)
TIMED_OUT = _job(
    FetchMode.SYNC, JobStatus.FAILED, started_at=STARTED, finished_at=FINISHED, error="upstream timed out after 10 s"
)


def examples(**named: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI Example Objects, by name."""
    return {name: {"value": value} for name, value in named.items()}


GIVEN_UP = _job(
    FetchMode.SYNC,
    JobStatus.FAILED,
    started_at=STARTED,
    finished_at=FINISHED,
    error="abandoned: the request running it ended before it finished",
)
STORE_FAILED = _job(
    FetchMode.SYNC,
    JobStatus.FAILED,
    started_at=STARTED,
    finished_at=FINISHED,
    fetched=1000,
    pages=1,
    error="database error: database or disk is full (SQLITE_FULL; DB_MAX_MB is 1)",
)
HISTORY_EXAMPLE = [  # the newest first: a scheduled job fetching its fourth page, then the sync job before it
    Job(
        job_id="5f0c7d2e-9b1a-4e3c-8d6f-2a4b6c8e0f13",
        mode=FetchMode.SCHEDULED,
        status=JobStatus.RUNNING,
        created_at="2026-11-28T13:00:00.000Z",
        started_at="2026-11-28T13:00:00.021Z",
        fetched=30,
        pages=3,
    ).as_json(),
    SUCCEEDED,
]
JOB_EXAMPLES = examples(succeeded=SUCCEEDED, queued=QUEUED, running=RUNNING, failed=FAILED)
PAGE_EXAMPLE = [
    {"id": 1, "user_id": 1, "title": "post 1 title", "body": "The first post's body."},
    {"id": 2, "user_id": 1, "title": "post 2 title", "body": 'A body may hold "quotes", \\ and new\nlines.'},
]
UNKNOWN_JOB_EXAMPLE = {"statusCode": 404, "message": f"no job {JOB_ID}"}
NOT_QUEUED_EXAMPLE = {"statusCode": 503, "message": "the fetch job could not be queued"}
FORBIDDEN_EXAMPLE = {"message": "Forbidden"}


def _invalid(where: str, name: str, kind: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": 422,
        "message": f"invalid request: {name}",
        "detail": [{"loc": [where, name], "type": kind, "msg": message}],
    }


# Each operation's 422, as it answers a request (GET /data?user_id=1_0, GET /fetch/status/not-a-uuid,
# GET /fetch/jobs?limit=0, POST /fetch?mode=later).
INVALID_USER_ID = _invalid("query", "user_id", "int_parsing", "Input should be plain decimal digits")
INVALID_JOB_ID = _invalid(
    "path", "job_id", "string_pattern_mismatch", f"String should match pattern '{ANY_CASE_JOB_ID_PATTERN}'"
)
INVALID_LIMIT = _invalid("query", "limit", "greater_than_equal", "Input should be greater than or equal to 1")
INVALID_MODE = _invalid("query", "mode", "literal_error", "Input should be 'sync' or 'task'")
