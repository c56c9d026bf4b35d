"""One fetch: upstream -> store, with the job's transitions and counts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from aggregator import jobs, upstream
from aggregator.config import Settings
from aggregator.models import MAX_ID, ClaimOutcome, FetchMode, Job, JobCounts, JobStatus
from aggregator.store import PostRow, Store, UnknownJob

POST_FIELDS = (("id", int), ("userId", int), ("title", str), ("body", str))
MAX_REASONS = 3
MAX_POST_CHARS = 500_000  # title + body; any post must fit in one page of GET /data


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


def fetch_now(store: Store, settings: Settings) -> FetchResult:
    """A sync fetch: a new job run to its end, unless another is in progress or a success is fresh."""
    claim = jobs.claim(store, settings, FetchMode.SYNC)
    if claim.outcome != ClaimOutcome.STARTED:
        return FetchResult(claim.job, claim.outcome)
    return run_job(store, settings, claim.job.job_id)


def run_job(store: Store, settings: Settings, job_id: str, *, last_attempt: bool = True) -> FetchResult:
    """Run a queued job; a job that has already finished is returned as it is.

    On a failure, a job on its last attempt ends `failed`; otherwise RetryLater is
    raised and the job stays `running` for the next delivery. Nothing of a failed
    fetch is written.
    """
    if store.start_job(job_id) is None:
        finished = store.get_job(job_id)
        if finished is None:
            raise UnknownJob(job_id)
        return FetchResult(finished)
    tally = Tally()
    try:
        merge = store.upsert_posts(_valid_pages(settings, tally))
    except Exception as exc:
        if not last_attempt:
            raise RetryLater(str(exc)) from exc
        reason = str(exc) if isinstance(exc, upstream.UpstreamError) else f"internal error: {type(exc).__name__}"
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


def _valid_pages(settings: Settings, tally: Tally) -> Iterator[list[PostRow]]:
    pages = upstream.fetch_pages(
        settings.upstream_url, timeout=settings.upstream_timeout, attempts=settings.upstream_attempts
    )
    for records in pages:
        yield parse_posts(records, tally)


def parse_posts(records: list[upstream.Record], tally: Tally) -> list[PostRow]:
    """The records that fit the post schema, as rows; a later record with the same id wins."""
    rows: dict[int, PostRow] = {}
    for record in records:
        tally.fetched += 1
        reason = _problem(record)
        if reason:
            tally.reject(tally.fetched, reason)
        else:
            rows[record["id"]] = (record["id"], record["userId"], record["title"], record["body"])
    return list(rows.values())


def _problem(record: upstream.Record) -> str | None:
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
