"""Fetches never overlap, a job whose runner is gone never blocks for longer than its lease, and a fresh
success spares the upstream."""

import sqlite3
import uuid

import pytest

from aggregator import jobs
from aggregator.config import load
from aggregator.models import Claim, ClaimOutcome, FetchMode, JobStatus
from tests.helpers import merge

STARTED, JOINED, FRESH = ClaimOutcome.STARTED, ClaimOutcome.JOINED, ClaimOutcome.FRESH
SYNC, TASK = FetchMode.SYNC, FetchMode.TASK
LEASE = 60.0


def settings(interval=0, **env):
    return load({"MIN_FETCH_INTERVAL": str(interval), **env})


def claim(db, mode, interval=0, lease_seconds=LEASE):
    return jobs.claim(db, settings(interval), mode, lease_seconds=lease_seconds)


def test_a_request_with_nothing_in_progress_starts_a_queued_job(db):
    started = claim(db, TASK)
    assert (started.outcome, started.job.status, started.job.mode) == (STARTED, JobStatus.QUEUED, TASK)


@pytest.mark.parametrize("state", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_a_request_while_a_job_is_in_progress_joins_it(db, state):
    first = claim(db, TASK).job
    if state == JobStatus.RUNNING:
        db.start_job(first.job_id, lease_seconds=LEASE)
    for mode in FetchMode:
        joined = claim(db, mode)
        assert (joined.outcome, joined.job.job_id) == (JOINED, first.job_id)
    assert len(db.list_jobs()) == 1


def test_after_a_job_finishes_the_next_request_starts_another(db):
    first = claim(db, TASK).job
    db.fail_job(first.job_id, "boom")
    again = claim(db, TASK)
    assert again.outcome == STARTED and again.job.job_id != first.job_id


def test_a_success_inside_the_window_answers_instead_of_a_new_fetch(db):
    first = claim(db, SYNC).job
    done = merge(db, [[(1, 1, "t", "b")]], lease=db.start_job(first.job_id, lease_seconds=LEASE))
    assert claim(db, TASK, interval=60) == Claim(done, FRESH)
    assert claim(db, TASK).outcome == STARTED


def test_a_failure_inside_the_window_does_not_count_as_fresh(db):
    first = claim(db, SYNC).job
    db.fail_job(first.job_id, "boom")
    assert claim(db, SYNC, interval=60).outcome == STARTED


def test_a_job_whose_lease_has_ended_is_failed_and_does_not_block(db):
    stuck = claim(db, SYNC, lease_seconds=-1).job  # as if the request that ran it died long ago
    db.start_job(stuck.job_id, lease_seconds=-1)
    assert claim(db, TASK).outcome == STARTED
    abandoned = db.get_job(stuck.job_id)
    assert abandoned.status == JobStatus.FAILED and abandoned.error.startswith("abandoned: ")


def test_a_sync_job_is_leased_until_its_invocation_ends_plus_ten_seconds():
    assert jobs.sync_lease(29.0) == 29.0 + 10


def test_a_queued_job_is_leased_for_its_deliveries_left_plus_ten_seconds():
    config = settings(WORKER_TIMEOUT="60", QUEUE_VISIBILITY_TIMEOUT="360", MAX_RECEIVE_COUNT="3")
    assert jobs.queued_lease(config, deliveries_left=3) == 360 + 360 + 60 + 10
    assert jobs.queued_lease(config, deliveries_left=1) == 60 + 10
    assert [jobs.deliveries_left(config, attempt) for attempt in (1, 2, 3, 4)] == [3, 2, 1, 1]


def test_the_history_keeps_the_newest_thousand_jobs(sqlite_db, db_path):
    with sqlite3.connect(db_path) as finished:  # 1,200 jobs written by earlier runs, in one transaction
        finished.executemany(
            "INSERT INTO jobs (job_id, mode, status, created_at) VALUES (?, 'task', 'succeeded', ?)",
            [(str(uuid.UUID(int=n)), f"2024-01-01T00:00:{n // 1000:02d}.{n % 1000:03d}Z") for n in range(1200)],
        )
    started = claim(sqlite_db, TASK).job
    kept = sqlite_db.list_jobs()
    assert len(kept) == 1000 and kept[-1] == started
    assert kept[0].job_id == str(uuid.UUID(int=201))  # the 999 newest of the 1,200 finished ones
