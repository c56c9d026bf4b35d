"""Fetches never overlap, stale jobs never block, and a fresh success spares the upstream."""

import pytest

from aggregator.config import load
from aggregator.jobs import claim
from aggregator.models import Claim, ClaimOutcome, FetchMode, JobCounts, JobStatus

STARTED, JOINED, FRESH = ClaimOutcome.STARTED, ClaimOutcome.JOINED, ClaimOutcome.FRESH
SYNC, TASK = FetchMode.SYNC, FetchMode.TASK


def settings(interval=0):
    return load({"MIN_FETCH_INTERVAL": str(interval)})


def test_a_request_with_nothing_in_progress_starts_a_queued_job(db):
    started = claim(db, settings(), TASK)
    assert (started.outcome, started.job.status, started.job.mode) == (STARTED, JobStatus.QUEUED, TASK)


@pytest.mark.parametrize("state", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_a_request_while_a_job_is_in_progress_joins_it(db, state):
    first = claim(db, settings(), TASK).job
    if state == JobStatus.RUNNING:
        db.start_job(first.job_id)
    for mode in FetchMode:
        joined = claim(db, settings(), mode)
        assert (joined.outcome, joined.job.job_id) == (JOINED, first.job_id)
    assert len(db.list_jobs()) == 1


def test_after_a_job_finishes_the_next_request_starts_another(db):
    first = claim(db, settings(), TASK).job
    db.start_job(first.job_id)
    db.finish_job(first.job_id, JobStatus.FAILED, JobCounts(), "boom")
    again = claim(db, settings(), TASK)
    assert again.outcome == STARTED and again.job.job_id != first.job_id


def test_a_success_inside_the_window_answers_instead_of_a_new_fetch(db):
    first = claim(db, settings(), SYNC).job
    db.start_job(first.job_id)
    done = db.finish_job(first.job_id, JobStatus.SUCCEEDED, JobCounts(fetched=1), None)
    assert claim(db, settings(interval=60), TASK) == Claim(done, FRESH)
    assert claim(db, settings(interval=0), TASK).outcome == STARTED


def test_a_failure_inside_the_window_does_not_count_as_fresh(db):
    first = claim(db, settings(), SYNC).job
    db.finish_job(first.job_id, JobStatus.FAILED, JobCounts(), "boom")
    assert claim(db, settings(interval=60), SYNC).outcome == STARTED


def test_a_job_abandoned_long_ago_is_failed_and_does_not_block(db, monkeypatch):
    import aggregator.jobs as jobs

    stuck = claim(db, settings(), SYNC).job
    db.start_job(stuck.job_id)
    monkeypatch.setattr(jobs, "SYNC_STALE_SECONDS", -1)  # as if the request that ran it died long ago
    assert claim(db, settings(), TASK).outcome == STARTED
    abandoned = db.get_job(stuck.job_id)
    assert (abandoned.status, abandoned.error) == (JobStatus.FAILED, "abandoned: no progress")
