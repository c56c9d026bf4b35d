"""Fetches never overlap: a request starts a job, joins the one in progress, or is answered by a
success younger than MIN_FETCH_INTERVAL.

A job in progress is leased for as long as something can still run it; once its lease ends, the next
claim gives it up ("abandoned"), so a job whose runner died never blocks fetching for long.
"""

from __future__ import annotations

from aggregator.config import Settings
from aggregator.models import Claim, FetchMode
from aggregator.store import Store

LEASE_MARGIN_SECONDS = 10.0  # for clocks that differ between hosts, and a queue's delivery latency
JOBS_KEPT = 1000  # the history keeps the newest jobs; older finished ones are deleted


def claim(store: Store, settings: Settings, mode: FetchMode, *, lease_seconds: float) -> Claim:
    return store.claim_job(
        mode, fresh_for=settings.min_fetch_interval, lease_seconds=lease_seconds, keep_jobs=JOBS_KEPT
    )


def sync_lease(seconds_left: float) -> float:
    """A sync job runs inside its request: until the fetch function's invocation ends."""
    return seconds_left + LEASE_MARGIN_SECONDS


def queued_lease(settings: Settings, *, deliveries_left: int) -> float:
    """A queued job runs while its message has deliveries left: the next delivery begins at most the
    queue's visibility timeout after one begins, and the last runs up to the worker's timeout."""
    between = max(0, deliveries_left - 1) * settings.queue_visibility_timeout
    return between + settings.worker_timeout + LEASE_MARGIN_SECONDS


def deliveries_left(settings: Settings, attempt: int) -> int:
    """Deliveries of a job's message from `attempt` on, that one included."""
    return max(1, settings.max_receive_count - attempt + 1)
