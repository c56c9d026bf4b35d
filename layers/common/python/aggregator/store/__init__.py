"""The one storage interface: what every backend keeps, and the factory that opens the configured one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aggregator.config import Settings
from aggregator.models import BackendError, Claim, FetchMode, Job, Post, Unavailable

PostRow = tuple[int, int, str, str]  # id, user_id, title, body: a post as the upstream reader hands it over
# A page of a fetch holds posts, and the ids of records rejected for their other fields: the upstream
# still lists those posts, so the store keeps them as they were.
PageItem = PostRow | int
WAIT_MARGIN_SECONDS = 2.0  # what an invocation keeps, after waiting for the database, to answer


@dataclass(frozen=True, slots=True)
class PostsPage:
    """A page of GET /data, already encoded as a JSON list."""

    json: str
    post_count: int
    last_id: int | None  # the keyset: the next page starts after it
    more: bool  # whether posts follow it


@dataclass(frozen=True, slots=True)
class JobsPage:
    """A page of the job history, newest first."""

    jobs: list[Job]
    more: bool  # whether older jobs follow the last one


@dataclass(frozen=True, slots=True)
class Lease:
    """One run's right to write for its job. The token is new each time the job starts, and is revoked
    when the job is given up on or handed to a new run; a write with a revoked token is refused."""

    job: Job
    token: str


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running fetch has got."""

    fetched: int = 0  # records received
    pages: int = 0  # upstream pages received


@dataclass(frozen=True, slots=True)
class FetchEnd:
    """What a fetch knows once it has read every page."""

    fetched: int
    pages: int
    rejected: int
    error: str | None  # which records were rejected
    complete: bool  # every record's id could be read, so a stored post it does not list is gone upstream


class StoreError(BackendError):
    """The store failed; the message is the database's own reason, safe to show."""


class StoreTimeout(StoreError):
    """The store's work ran past the invocation's deadline and was stopped: with SQLite nothing was written;
    with DynamoDB the batches written before it stay, as after any merge cut short."""


class StoreUnavailable(StoreError, Unavailable):
    """The database cannot be used now: its file is missing or is not the database created there, a lock
    on it was held past the time allowed, a table is missing, the requests are throttled. Nothing was
    read or written."""

    def __init__(self, reason: str):
        super().__init__(f"the database is unavailable: {reason}")


class LeaseLost(Exception):
    """The job was given up on, or handed to another run, before this run wrote: nothing was written."""

    def __init__(self, job: Job):
        super().__init__(f"job {job.job_id} is no longer this run's: {job.error or job.status}")
        self.job = job


class UnknownJob(LookupError):
    """No job has this id."""


class Store(Protocol):
    """Posts and fetch jobs. Every backend keeps these semantics; the tests hold each one to them.

    - Job states only move forward: queued -> running -> succeeded | failed. A finished job never changes.
    - A job in progress is leased until a time; a claim after that fails it ("abandoned"). Each start of
      a job issues a new lease token, and only the run holding the current token writes: its progress,
      its posts and its end, each checked in the write itself. A job given up on never writes.
    - Counts are exact: `inserted`, `updated` and `unchanged` add up to the distinct posts of a fetch,
      and a post equal to the stored one is not written.
    - The posts mirror the upstream: a complete fetch deletes the stored posts it does not list.
    - A failed fetch writes no post: none is written before every page has been read. SQLite then
      merges in one transaction with the job's end, so readers see all of a fetch or none of it; a
      backend that cannot must say so, and a redelivered job must complete a merge that was cut short.
    - Pages of posts are keyset pages in id order, within a byte budget, never empty while posts remain.
    """

    def close(self) -> None: ...

    def set_deadline(self, deadline: float | None) -> None:
        """Wait for the database (a lock another connection holds) until `deadline`, a `time.monotonic()`
        value, at the latest, then give up with StoreUnavailable; None: the backend's own limit."""
        ...

    # Posts

    def count_posts(self) -> int:
        """How many posts are stored."""
        ...

    def page_of_posts_json(self, *, user_id: int | None, after_id: int, limit: int, max_bytes: int) -> PostsPage:
        """Up to `limit` posts with ids above `after_id` (only `user_id`'s, if given), in id order, as one
        JSON list of `Post` objects that takes at most `max_bytes` bytes inside a JSON string (counted by
        `json_string_bytes`: where a Lambda response carries it), yet never fewer than one post while any
        remain; and whether more posts follow. Memory follows the page, not the posts it skips or leaves."""
        ...

    def list_posts(self, *, user_id: int | None = None, after_id: int = 0, limit: int = -1) -> list[Post]:
        """Posts with ids above `after_id` (only `user_id`'s, if given), in id order; `limit` < 0: all."""
        ...

    # Jobs

    def create_job(self, mode: FetchMode, *, lease_seconds: float) -> Job:
        """A new `queued` job with a fresh id, leased for `lease_seconds`."""
        ...

    def claim_job(self, mode: FetchMode, *, fresh_for: float, lease_seconds: float, keep_jobs: int) -> Claim:
        """Atomically: fail the jobs in progress whose lease has ended ("abandoned"); then return the
        oldest job still in progress (`joined`), or else the latest success finished within `fresh_for`
        seconds (`fresh`, only if `fresh_for` > 0), or else a new queued job leased for `lease_seconds`
        (`started`), deleting the finished jobs older than the newest `keep_jobs`. Two claims never both
        start a job."""
        ...

    def get_job(self, job_id: str) -> Job | None:
        """The job, or None if no job has this id."""
        ...

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        ...

    def page_of_jobs(self, *, before: str | None, limit: int) -> JobsPage:
        """Up to `limit` jobs, newest first, starting after job `before` (from the newest if None).
        UnknownJob if no job has the id `before`."""
        ...

    def start_job(self, job_id: str, *, lease_seconds: float) -> Lease | None:
        """Mark a job in progress `running` under a new lease of `lease_seconds`, revoking any earlier
        one, with its progress back at zero; None if the job has finished or is unknown."""
        ...

    def reissue_lease(self, job_id: str, *, lease_seconds: float) -> Job | None:
        """A job in progress whose runner is gone, leased anew for `lease_seconds` for a run to come:
        the earlier lease is revoked, so its runner can no longer write. None if finished or unknown."""
        ...

    def record_progress(self, lease: Lease, progress: Progress) -> None:
        """Write a running job's progress; LeaseLost if the lease was revoked. One short write."""
        ...

    def merge_fetch(self, lease: Lease, pages: Iterable[Iterable[PageItem]], end: Callable[[], FetchEnd]) -> Job:
        """Stage every page of a fetch, then, if `lease` still holds: merge its posts into the store (a
        later duplicate id wins), delete the stored posts it does not list if `end().complete`, and finish
        the job `succeeded` with its counts, all at once. Return the finished job.

        `pages` is read outside any transaction, so the code producing it may call `record_progress`;
        `end` is called once every page has been read. Nothing is written if reading `pages` raises, and
        LeaseLost (nothing written) if the lease was revoked. StoreError if the database fails.
        """
        ...

    def fail_job(
        self, job_id: str, reason: str, *, lease: Lease | None = None, progress: Progress | None = None
    ) -> Job:
        """Finish a job in progress `failed` with `reason` (and `progress`, if given), revoking its lease;
        return it. With `lease`, only while that lease holds. A finished job is returned as it was;
        UnknownJob if no job has this id."""
        ...


def json_string_bytes(text: str) -> int:
    """The bytes that `text`, a JSON document, takes inside a JSON string as Lambda's Python runtime writes a
    response: UTF-8, each `"` and `\\` escaped. (JSON text holds no raw control character to escape.)"""
    return len(text.encode()) + text.count('"') + text.count("\\")


def fill_page(posts: Iterable[tuple[int, str]], *, limit: int, max_bytes: int) -> tuple[list[str], int | None, bool]:
    """Take posts `(id, JSON object)` in order until `limit`, or until the next would pass `max_bytes` as
    `json_string_bytes` counts the page (the first post always stays). Returns the posts taken, the last id,
    and whether the budget cut the page short. Reads `posts` lazily, one past the page at most."""
    taken: list[str] = []
    last_id: int | None = None
    bound = 2  # "[]", then at most 4 bytes a character: exact sizes are needed only once this passes
    size: int | None = None
    for post_id, post in posts:
        bound += 4 * len(post) + 1
        if bound > max_bytes:
            if size is None:
                size = 2 + sum(json_string_bytes(p) + 1 for p in taken)
            size += json_string_bytes(post) + 1
            if size > max_bytes and taken:
                return taken, last_id, True
        taken.append(post)
        last_id = post_id
        if len(taken) == limit:
            break
    return taken, last_id, False


_stores = threading.local()


def open_store(settings: Settings, *, seconds_left: float | None = None) -> Store:
    """This thread's store for the configured backend, opened once and reused across invocations. Given the
    `seconds_left` of the invocation, the store waits for the database no longer than leaves it time to answer."""
    opened: dict[tuple[str | None, ...], Store] = _stores.__dict__.setdefault("opened", {})
    if settings.store_backend == "dynamodb":
        key: tuple[str | None, ...] = (settings.posts_table, settings.jobs_table, settings.aws_endpoint_url)
    else:
        key = (settings.db_path,)
    deadline = None if seconds_left is None else time.monotonic() + seconds_left - WAIT_MARGIN_SECONDS
    if key not in opened:
        opened[key] = _open(settings, deadline)
    opened[key].set_deadline(deadline)
    return opened[key]


def _open(settings: Settings, deadline: float | None) -> Store:
    # Each backend is imported only when chosen: the SQLite path never pays for boto3's import.
    if settings.store_backend == "dynamodb":
        from aggregator.store.dynamodb import DynamoDbStore, dynamodb_client

        return DynamoDbStore(settings.posts_table, settings.jobs_table, dynamodb_client(settings.aws_endpoint_url))
    from aggregator.store.sqlite import SqliteStore

    return SqliteStore(settings.db_path, max_mb=settings.db_max_mb, deadline=deadline)


def close_stores() -> None:
    """Close and forget this thread's stores, so the next open_store opens afresh."""
    opened: dict[tuple[str | None, ...], Store] = _stores.__dict__.setdefault("opened", {})
    for store in opened.values():
        store.close()
    opened.clear()


def utc_now() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime, plus_seconds: float = 0.0) -> str:
    """ISO 8601 in UTC with milliseconds: such strings sort as the times they name."""
    moment += timedelta(seconds=plus_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "FetchEnd",
    "JobsPage",
    "Lease",
    "LeaseLost",
    "PageItem",
    "PostRow",
    "PostsPage",
    "Progress",
    "Store",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "UnknownJob",
    "close_stores",
    "fill_page",
    "iso",
    "json_string_bytes",
    "open_store",
    "utc_now",
]
