"""Fetches never overlap, stale jobs never block, and a fresh success spares the upstream."""

import pytest

from aggregator.config import load
from aggregator.jobs import claim
from aggregator.store import Store


@pytest.fixture
def db(tmp_path):
    store = Store(str(tmp_path / "jobs.db"))
    yield store
    store.close()


def settings(interval=0):
    return load({"MIN_FETCH_INTERVAL": str(interval)})


def test_a_request_with_nothing_in_progress_starts_a_queued_job(db):
    job, outcome = claim(db, settings(), "task")
    assert (outcome, job["status"], job["mode"]) == ("started", "queued", "task")


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_request_while_a_job_is_in_progress_joins_it(db, state):
    first, _ = claim(db, settings(), "task")
    if state == "running":
        db.start_job(first["job_id"])
    for mode in ("sync", "task", "scheduled"):
        job, outcome = claim(db, settings(), mode)
        assert (outcome, job["job_id"]) == ("joined", first["job_id"])
    assert len(db.list_jobs()) == 1


def test_after_a_job_finishes_the_next_request_starts_another(db):
    first, _ = claim(db, settings(), "task")
    db.start_job(first["job_id"])
    db.finish_job(first["job_id"], "failed", {}, "boom")
    job, outcome = claim(db, settings(), "task")
    assert outcome == "started" and job["job_id"] != first["job_id"]


def test_a_success_inside_the_window_answers_instead_of_a_new_fetch(db):
    first, _ = claim(db, settings(), "sync")
    db.start_job(first["job_id"])
    done = db.finish_job(first["job_id"], "succeeded", {"fetched": 1}, None)
    assert claim(db, settings(interval=60), "task") == (done, "fresh")
    assert claim(db, settings(interval=0), "task").outcome == "started"


def test_a_failure_inside_the_window_does_not_count_as_fresh(db):
    first, _ = claim(db, settings(), "sync")
    db.finish_job(first["job_id"], "failed", {}, "boom")
    assert claim(db, settings(interval=60), "sync").outcome == "started"


def test_a_job_abandoned_long_ago_is_failed_and_does_not_block(db, monkeypatch):
    import aggregator.jobs as jobs

    stuck, _ = claim(db, settings(), "sync")
    db.start_job(stuck["job_id"])
    monkeypatch.setattr(jobs, "SYNC_STALE_SECONDS", -1)  # as if the request that ran it died long ago
    assert claim(db, settings(), "task").outcome == "started"
    abandoned = db.get_job(stuck["job_id"])
    assert (abandoned["status"], abandoned["error"]) == ("failed", "abandoned: no progress")
