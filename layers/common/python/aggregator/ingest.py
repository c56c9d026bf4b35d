"""One fetch: upstream -> store, with the job's transitions, counts and progress."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeGuard, cast

from aggregator import jobs, upstream
from aggregator.config import Settings
from aggregator.models import MAX_ID, ClaimOutcome, FetchMode, Job, JobStatus
from aggregator.observability import logger
from aggregator.scrub import scrub
from aggregator.store import (
    FetchEnd,
    Lease,
    LeaseLost,
    PageItem,
    PostRow,
    Progress,
    Store,
    StoreError,
    StoreTimeout,
    UnknownJob,
)

POST_FIELDS = (("id", int), ("userId", int), ("title", str), ("body", str))
MAX_REASONS = 3
MAX_POST_CHARS = 500_000  # title + body; any post must fit in one page of GET /data
BATCH_ROWS = 1000  # rows handed to the store at a time: bounded memory, and the store works in bulk
FINISH_MARGIN_SECONDS = 4.0  # what an invocation keeps, after its fetch, to record the outcome
PROGRESS_EVERY_SECONDS = 1.0  # a running job's progress is written at most this often: one writer at a time


class RetryLater(Exception):
    """The fetch failed on a delivery that is not the last: the queue should deliver the job again."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The job a fetch request ended with; `outcome` as its claim had it (see jobs.claim)."""

    job: Job
    outcome: ClaimOutcome = ClaimOutcome.STARTED
    timed_out: bool = False
    given_up: bool = False  # the job was given up on before its fetch ended: nothing of it was written
    already_finished: bool = False  # it finished before this run could start it: this run did nothing
    store_failed: bool = False  # the store, not the upstream, failed the fetch


@dataclass
class Tally:
    fetched: int = 0
    pages: int = 0
    rejected: int = 0
    unidentified: int = 0  # rejected records whose id could not be read
    reasons: list[str] = field(default_factory=list)

    def reject(self, position: int, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"record {position}: {reason}")

    def summary(self) -> str | None:
        if not self.rejected:
            return None
        more = "" if self.rejected <= MAX_REASONS else f"; and {self.rejected - MAX_REASONS} more"
        return f"{self.rejected} record(s) rejected: " + "; ".join(self.reasons) + more

    def progress(self) -> Progress:
        return Progress(fetched=self.fetched, pages=self.pages)

    def end(self) -> FetchEnd:
        """The fetch, every page read. It is complete, and so deletes the posts it does not list, only if
        every record's id could be read: a record without one may be the post that seems gone."""
        return FetchEnd(self.fetched, self.pages, self.rejected, self.summary(), complete=not self.unidentified)


@dataclass
class ProgressWriter:
    """Writes a running job's progress, at most every PROGRESS_EVERY_SECONDS; LeaseLost once it is given up."""

    store: Store
    lease: Lease
    written_at: float = field(default_factory=time.monotonic)

    def update(self, tally: Tally) -> None:
        now = time.monotonic()
        if now - self.written_at >= PROGRESS_EVERY_SECONDS:
            self.store.record_progress(self.lease, tally.progress())
            self.written_at = now


def fetch_budget(seconds_left: float, cap: float = math.inf) -> float:
    """The seconds a fetch may take in an invocation that has `seconds_left`: all but the margin to
    record its outcome, and at most `cap`."""
    return max(0.0, min(cap, seconds_left - FINISH_MARGIN_SECONDS))


def fetch_now(store: Store, settings: Settings, *, seconds_left: float) -> FetchResult:
    """A sync fetch in an invocation with `seconds_left`: a new job run to its end, unless another is in
    progress or a success is fresh. The job is leased until the invocation ends."""
    lease = jobs.sync_lease(seconds_left)
    claim = jobs.claim(store, settings, FetchMode.SYNC, lease_seconds=lease)
    if claim.outcome != ClaimOutcome.STARTED:
        return FetchResult(claim.job, claim.outcome)
    budget = fetch_budget(seconds_left, settings.sync_fetch_budget)
    return run_job(store, settings, claim.job.job_id, budget=budget, lease_seconds=lease)


def run_job(
    store: Store, settings: Settings, job_id: str, *, budget: float, lease_seconds: float, last_attempt: bool = True
) -> FetchResult:
    """Run a job in progress under a lease of `lease_seconds`, its fetch within `budget` seconds; a job
    that has already finished is returned as it is.

    On a failure, a job on its last attempt ends `failed`; otherwise RetryLater is raised and the job
    stays `running` for the next delivery. Nothing of a failed fetch is written, nor anything of a fetch
    whose job was given up on while it ran. The job's error is a short reason; the detail goes to the log.
    """
    lease = store.start_job(job_id, lease_seconds=lease_seconds)
    if lease is None:  # it finished first: it was given up on if it failed, since this run fetched nothing
        finished = store.get_job(job_id)
        if finished is None:
            raise UnknownJob(job_id)
        return FetchResult(finished, given_up=finished.status == JobStatus.FAILED, already_finished=True)
    tally = Tally()
    try:
        pages = _valid_pages(settings, tally, budget, ProgressWriter(store, lease))
        return FetchResult(store.merge_fetch(lease, pages, tally.end))
    except LeaseLost as lost:
        return FetchResult(lost.job, given_up=True)
    except Exception as exc:
        known = isinstance(exc, upstream.UpstreamError | StoreError)
        reason = str(exc) if known else f"internal error: {type(exc).__name__}"
        detail = exc.detail if isinstance(exc, upstream.UpstreamError) else scrub(str(exc))
        logger.warning("fetch failed", extra={"reason": reason, "detail": detail, "last_attempt": last_attempt})
        if not last_attempt:
            raise RetryLater(reason) from exc
        job = store.fail_job(job_id, reason, lease=lease, progress=tally.progress())
        if not known:
            raise
        timed_out = isinstance(exc, upstream.UpstreamTimeout | StoreTimeout)
        return FetchResult(job, timed_out=timed_out, store_failed=isinstance(exc, StoreError) and not timed_out)


def _valid_pages(settings: Settings, tally: Tally, budget: float, progress: ProgressWriter) -> Iterator[list[PageItem]]:
    """The valid rows of the upstream's pages (and the ids of records kept as they were), in batches of at
    most BATCH_ROWS for the store; the job's progress is written between batches."""
    pages = upstream.fetch_pages(
        settings.upstream_url,
        timeout=settings.upstream_timeout,
        attempts=settings.upstream_attempts,
        budget=budget,
        max_page_bytes=settings.max_page_bytes,
    )
    for records in pages:
        tally.pages += 1
        items = parse_posts(records, tally)
        while batch := list(itertools.islice(items, BATCH_ROWS)):
            progress.update(tally)
            yield batch


def parse_posts(records: Iterable[upstream.Record], tally: Tally) -> Iterator[PageItem]:
    """The records that fit the post schema, each as a row as soon as it is read; the others are
    counted and named in `tally`, and the id of each one rejected for its other fields is passed on, so
    that its stored post is kept as it was. The store keeps the last of several rows with one id."""
    for record in records:
        tally.fetched += 1
        if type(record) is dict:
            row = (record.get("id"), record.get("userId"), record.get("title"), record.get("body"))
            if _plainly_valid(row):
                yield row
                continue
        reason = _problem(record)
        if not reason:
            yield cast(PostRow, row)  # `_problem` found nothing wrong with it
            continue
        tally.reject(tally.fetched, reason)
        post_id = record.get("id") if type(record) is dict else None
        if type(post_id) is int and 1 <= post_id <= MAX_ID:
            yield post_id
        else:
            tally.unidentified += 1


def _plainly_valid(row: tuple[object, object, object, object]) -> TypeGuard[PostRow]:
    """The common case, in one expression; what it does not pass gets the full check of `_problem`."""
    post_id, user_id, title, body = row
    return (
        type(post_id) is int
        and type(user_id) is int
        and 0 < post_id <= MAX_ID
        and 0 < user_id <= MAX_ID
        and type(title) is str
        and type(body) is str
        and title.isascii()
        and body.isascii()
        and len(title) + len(body) <= MAX_POST_CHARS
    )


def _problem(record: upstream.Record) -> str | None:
    if isinstance(record, upstream.UnreadableRecord):
        return record.reason
    for name, kind in POST_FIELDS:
        value = record.get(name)
        if value is None:
            return f"'{name}' is missing"
        if type(value) is not kind:
            return f"'{name}' must be {'an integer' if kind is int else 'a string'}"
        if isinstance(value, int) and not 1 <= value <= MAX_ID:
            return f"'{name}' must be between 1 and {MAX_ID}"
        if isinstance(value, str) and not value.isascii() and not _is_utf8(value):
            return f"'{name}' is not valid unicode"
    if len(record["title"]) + len(record["body"]) > MAX_POST_CHARS:
        return f"title and body are longer than {MAX_POST_CHARS} characters"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
