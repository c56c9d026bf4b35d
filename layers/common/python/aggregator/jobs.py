"""Fetches never overlap: a request starts a job, joins the one in progress, or is answered by a
success younger than MIN_FETCH_INTERVAL."""

from __future__ import annotations

from aggregator.config import Settings
from aggregator.models import Claim, FetchMode
from aggregator.store import Store

SYNC_STALE_SECONDS = 120  # a sync job runs inside one API request, which ends within 29 s
STALE_SECONDS = 3600  # longer than a queued job can wait, run and be retried


def claim(store: Store, settings: Settings, mode: FetchMode) -> Claim:
    return store.claim_job(
        mode, fresh_for=settings.min_fetch_interval, stale_after=STALE_SECONDS, sync_stale_after=SYNC_STALE_SECONDS
    )
