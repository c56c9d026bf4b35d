"""The one storage interface: what every backend keeps, and the factory that opens the configured one."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aggregator.config import Settings
from aggregator.models import Claim, FetchMode, Job, JobCounts, JobStatus, Post

PostRow = tuple[int, int, str, str]  # id, user_id, title, body: a post as the upstream reader hands it over


@dataclass(frozen=True, slots=True)
class PostsPage:
    """A page of GET /data, already encoded as a JSON list."""

    json: str
    post_count: int
    last_id: int | None  # the keyset: the next page starts after it
    more: bool  # whether posts follow it


@dataclass(frozen=True, slots=True)
class Merge:
    """What merging a fetch did: `staged` distinct posts, of which `inserted` were new and `updated` changed."""

    staged: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated


class UnknownJob(LookupError):
    """No job has this id."""


class Store(Protocol):
    """Posts and fetch jobs. Every backend keeps these semantics; the tests hold each one to them.

    - Job states only move forward: queued -> running -> succeeded | failed. A finished job never changes.
    - Counts are exact: `inserted`, `updated` and unchanged add up to the distinct posts of a fetch, and a
      post equal to the stored one is not written.
    - A failed fetch writes nothing: no post is written before every page has been read. SQLite then
      merges in one transaction, so readers see all of a fetch or none of it; a backend that cannot must
      say so, and a redelivered job must complete a merge that was cut short.
    - Pages of posts are keyset pages in id order, within a byte budget, never empty while posts remain.
    """

    def close(self) -> None: ...

    # Posts

    def upsert_posts(self, pages: Iterable[Sequence[PostRow]]) -> Merge:
        """Merge every post of `pages` into the store; a later duplicate id wins over an earlier one.

        Nothing is written until `pages` is exhausted; an exception raised while iterating it writes
        nothing. Posts equal to the stored ones are not written.
        """
        ...

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

    def create_job(self, mode: FetchMode) -> Job:
        """A new `queued` job with a fresh id."""
        ...

    def claim_job(self, mode: FetchMode, *, fresh_for: float, stale_after: float, sync_stale_after: float) -> Claim:
        """Atomically: fail the jobs abandoned in `queued` or `running` (created more than `stale_after`
        seconds ago, or `sync_stale_after` for sync jobs); then return the oldest job still in progress
        (`joined`), or else the latest success finished within `fresh_for` seconds (`fresh`, only if
        `fresh_for` > 0), or else a new queued job (`started`). Two claims never both start a job."""
        ...

    def get_job(self, job_id: str) -> Job | None:
        """The job, or None if no job has this id."""
        ...

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        ...

    def start_job(self, job_id: str) -> Job | None:
        """Mark a queued (or abandoned running) job `running` and return it; None if it has finished or
        is unknown."""
        ...

    def finish_job(self, job_id: str, status: JobStatus, counts: JobCounts, error: str | None) -> Job:
        """Record the end of a job in progress (`status` is `succeeded` or `failed`) and return the job;
        a finished job is returned as it was. UnknownJob if no job has this id."""
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


def open_store(settings: Settings) -> Store:
    """This thread's store for the configured backend, opened once and reused across invocations."""
    opened: dict[str, Store] = _stores.__dict__.setdefault("opened", {})
    if settings.db_path not in opened:
        from aggregator.store.sqlite import SqliteStore  # here: each backend imports only what it needs

        opened[settings.db_path] = SqliteStore(settings.db_path)
    return opened[settings.db_path]


def utc_now() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime, plus_seconds: float = 0.0) -> str:
    """ISO 8601 in UTC with milliseconds: such strings sort as the times they name."""
    moment += timedelta(seconds=plus_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "Merge",
    "PostRow",
    "PostsPage",
    "Store",
    "UnknownJob",
    "fill_page",
    "iso",
    "json_string_bytes",
    "open_store",
    "utc_now",
]
