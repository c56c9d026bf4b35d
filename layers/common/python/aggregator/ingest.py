"""One fetch: upstream -> store, with the job's transitions and counts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeGuard, cast

from aggregator import jobs, upstream
from aggregator.config import Settings
from aggregator.models import MAX_ID, ClaimOutcome, FetchMode, Job, JobCounts, JobStatus
from aggregator.observability import logger
from aggregator.scrub import scrub
from aggregator.store import PostRow, Store, UnknownJob

POST_FIELDS = (("id", int), ("userId", int), ("title", str), ("body", str))
MAX_REASONS = 3
MAX_POST_CHARS = 500_000  # title + body; any post must fit in one page of GET /data
BATCH_ROWS = 1000  # rows handed to the store at a time: bounded memory, and the store works in bulk
FINISH_MARGIN_SECONDS = 4.0  # what an invocation keeps, after its fetch, to record the outcome


class RetryLater(Exception):
    """The fetch failed on a delivery that is not the last: the queue should deliver the job again."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The job a fetch request ended with; `outcome` as its claim had it (see jobs.claim)."""

    job: Job
    outcome: ClaimOutcome = ClaimOutcome.STARTED
    timed_out: bool = False


@dataclass
class Tally:
    fetched: int = 0
    rejected: int = 0
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


def fetch_budget(seconds_left: float, cap: float = math.inf) -> float:
    """The seconds a fetch may take in an invocation that has `seconds_left`: all but the margin to
    record its outcome, and at most `cap`."""
    return max(0.0, min(cap, seconds_left - FINISH_MARGIN_SECONDS))


def fetch_now(store: Store, settings: Settings, *, seconds_left: float) -> FetchResult:
    """A sync fetch: a new job run to its end, unless another is in progress or a success is fresh."""
    claim = jobs.claim(store, settings, FetchMode.SYNC)
    if claim.outcome != ClaimOutcome.STARTED:
        return FetchResult(claim.job, claim.outcome)
    budget = fetch_budget(seconds_left, settings.sync_fetch_budget)
    return run_job(store, settings, claim.job.job_id, budget=budget)


def run_job(store: Store, settings: Settings, job_id: str, *, budget: float, last_attempt: bool = True) -> FetchResult:
    """Run a queued job, its fetch within `budget` seconds; a job that has already finished is
    returned as it is.

    On a failure, a job on its last attempt ends `failed`; otherwise RetryLater is
    raised and the job stays `running` for the next delivery. Nothing of a failed
    fetch is written. The job's error is a short reason; the detail goes to the log.
    """
    if store.start_job(job_id) is None:
        finished = store.get_job(job_id)
        if finished is None:
            raise UnknownJob(job_id)
        return FetchResult(finished)
    tally = Tally()
    try:
        merge = store.upsert_posts(_valid_pages(settings, tally, budget))
    except Exception as exc:
        reason = str(exc) if isinstance(exc, upstream.UpstreamError) else f"internal error: {type(exc).__name__}"
        detail = exc.detail if isinstance(exc, upstream.UpstreamError) else scrub(str(exc))
        logger.warning("fetch failed", extra={"reason": reason, "detail": detail, "last_attempt": last_attempt})
        if not last_attempt:
            raise RetryLater(reason) from exc
        job = store.finish_job(job_id, JobStatus.FAILED, JobCounts(fetched=tally.fetched), reason)
        if not isinstance(exc, upstream.UpstreamError):
            raise
        return FetchResult(job, timed_out=isinstance(exc, upstream.UpstreamTimeout))
    counts = JobCounts(
        fetched=tally.fetched,
        inserted=merge.inserted,
        updated=merge.updated,
        unchanged=merge.unchanged,
        rejected=tally.rejected,
    )
    return FetchResult(store.finish_job(job_id, JobStatus.SUCCEEDED, counts, tally.summary()))


def _valid_pages(settings: Settings, tally: Tally, budget: float) -> Iterator[list[PostRow]]:
    """The valid rows of the upstream's pages, in batches of at most BATCH_ROWS for the store."""
    pages = upstream.fetch_pages(
        settings.upstream_url,
        timeout=settings.upstream_timeout,
        attempts=settings.upstream_attempts,
        budget=budget,
        max_page_bytes=settings.max_page_bytes,
    )
    for records in pages:
        rows = parse_posts(records, tally)
        while batch := list(itertools.islice(rows, BATCH_ROWS)):
            yield batch


def parse_posts(records: Iterable[upstream.Record], tally: Tally) -> Iterator[PostRow]:
    """The records that fit the post schema, each as a row as soon as it is read; the others are
    counted and named in `tally`. The store keeps the last of several rows with one id."""
    for record in records:
        tally.fetched += 1
        if type(record) is dict:
            row = (record.get("id"), record.get("userId"), record.get("title"), record.get("body"))
            if _plainly_valid(row):
                yield row
                continue
        reason = _problem(record)
        if reason:
            tally.reject(tally.fetched, reason)
        else:
            yield cast(PostRow, row)  # `_problem` found nothing wrong with it


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
