"""The one storage interface, held to its semantics on every backend: each test that takes `db` runs on a
real SQLite file and on moto's DynamoDB with the template's tables; those that take `sqlite_db` are about
SQLite's file."""

import json
import os
import random
import sqlite3
import threading
import time

import boto3
import pytest

from aggregator import config
from aggregator.models import ClaimOutcome, FetchMode, JobStatus, Post
from aggregator.store import (
    LeaseLost,
    Progress,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    UnknownJob,
    fill_page,
    json_string_bytes,
)
from aggregator.store.sqlite import ABANDONED_QUEUED, ABANDONED_SYNC, SqliteStore
from tests.helpers import LEASE_SECONDS, fetch_end, merge, queued_job, running_job

UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"


def rows(*ids, title="t"):
    return [(i, 1 + i % 3, f"{title} {i}", f"body {i}") for i in ids]


def counts(job):
    return job.inserted, job.updated, job.unchanged, job.deleted


def test_the_schema_is_created_on_first_use_in_a_new_folder(tmp_path):
    path = tmp_path / "a" / "b" / "x.db"
    SqliteStore(str(path)).close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"posts", "jobs"} <= tables


def test_the_file_uses_a_rollback_journal_not_wal(tmp_path):
    path = str(tmp_path / "x.db")
    SqliteStore(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_database_made_by_the_first_schema_gains_the_new_job_columns(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, mode TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT"
        " NOT NULL, started_at TEXT, finished_at TEXT, fetched INTEGER NOT NULL DEFAULT 0, inserted INTEGER NOT"
        " NULL DEFAULT 0, updated INTEGER NOT NULL DEFAULT 0, unchanged INTEGER NOT NULL DEFAULT 0, rejected"
        " INTEGER NOT NULL DEFAULT 0, error TEXT);"
        "INSERT INTO jobs (job_id, mode, status, created_at) VALUES"
        " ('0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10', 'task', 'succeeded', '2024-01-01T00:00:00.000Z');"
    )
    old.close()
    store = SqliteStore(str(path))
    [job] = store.list_jobs()
    assert (job.pages, job.deleted, job.status) == (0, 0, JobStatus.SUCCEEDED)
    assert merge(store, [rows(1)]).inserted == 1


def test_new_posts_are_inserted_and_counted(db):
    job = merge(db, [rows(1, 2), rows(3)])
    assert (job.status, job.fetched, job.pages, counts(job)) == (JobStatus.SUCCEEDED, 3, 2, (3, 0, 0, 0))
    assert [p.id for p in db.list_posts()] == [1, 2, 3]


def test_unchanged_posts_are_not_written_again(db):
    merge(db, [rows(1, 2, 3)])
    assert counts(merge(db, [rows(1, 2, 3)])) == (0, 0, 3, 0)


def test_a_changed_post_is_updated_in_place(db):
    merge(db, [rows(1, 2)])
    assert counts(merge(db, [rows(1, title="new") + rows(2)])) == (0, 1, 1, 0)
    assert db.list_posts()[0].title == "new 1"
    assert db.count_posts() == 2


def test_an_error_while_reading_pages_writes_nothing(db):
    merge(db, [rows(1)])
    lease = running_job(db)

    def pages():
        yield rows(2, 3)
        yield rows(1, title="changed")
        raise RuntimeError("upstream broke on page 3")

    with pytest.raises(RuntimeError):
        db.merge_fetch(lease, pages(), lambda: fetch_end([]))
    assert db.list_posts() == [Post(id=1, user_id=2, title="t 1", body="body 1")]
    assert db.get_job(lease.job.job_id).status == JobStatus.RUNNING


def test_a_post_repeated_across_pages_is_stored_once_with_its_last_version(db):
    assert counts(merge(db, [rows(1, 2), rows(2, 3, title="again")])) == (3, 0, 0, 0)
    assert [p.title for p in db.list_posts()] == ["t 1", "again 2", "again 3"]


def test_staging_a_fetch_holds_no_lock_on_the_shared_store(db, other_db):
    def pages():
        yield rows(1, 2)
        merge(other_db, [rows(1, 2, 7)])  # another writer commits while this fetch is still reading pages
        yield rows(3)

    lease = running_job(db)
    assert db.merge_fetch(lease, pages(), lambda: fetch_end([[], []], complete=False)).inserted == 1
    assert [p.id for p in db.list_posts()] == [1, 2, 3, 7]


def test_posts_are_listed_by_id_and_filtered_by_user(db):
    merge(db, [rows(5, 3, 1, 4, 2)])
    assert [p.id for p in db.list_posts()] == [1, 2, 3, 4, 5]
    assert [p.id for p in db.list_posts(user_id=2)] == [1, 4]
    assert db.list_posts(user_id=99) == []


def test_hostile_text_is_stored_exactly_as_sent(db):
    text = 'Robert\'); DROP TABLE posts;-- "quoted" \n\t ünïcødé 🙂 \x00 end'
    merge(db, [[(1, 1, text, text * 1000)]])
    post = db.list_posts()[0]
    assert (post.title, post.body) == (text, text * 1000)


# Deletions upstream: the store mirrors a complete fetch


def test_a_complete_fetch_deletes_the_posts_it_no_longer_lists(db):
    merge(db, [rows(1, 2, 3, 4)])
    job = merge(db, [rows(1), rows(3)])
    assert counts(job) == (0, 0, 2, 2)
    assert [p.id for p in db.list_posts()] == [1, 3]


def test_a_post_whose_record_was_rejected_is_kept_as_it_was(db):
    merge(db, [rows(1, 2, 3)])
    job = merge(db, [[*rows(1), 2], rows(3)])  # 2: the id of a record rejected for its other fields
    assert job.deleted == 0
    assert [(p.id, p.title) for p in db.list_posts()] == [(1, "t 1"), (2, "t 2"), (3, "t 3")]


def test_an_incomplete_fetch_deletes_nothing(db):
    merge(db, [rows(1, 2, 3)])
    job = merge(db, [rows(1)], complete=False)
    assert job.deleted == 0 and db.count_posts() == 3


def test_an_empty_complete_fetch_empties_the_store(db):
    merge(db, [rows(1, 2)])
    assert merge(db, [[]]).deleted == 2
    assert db.count_posts() == 0


# Jobs: forward only, leased, fenced


def test_a_job_moves_forward_only(db):
    job = queued_job(db)
    assert job.status == JobStatus.QUEUED
    assert job.created_at.endswith("Z")
    lease = db.start_job(job.job_id, lease_seconds=LEASE_SECONDS)
    assert lease.job.status == JobStatus.RUNNING
    done = merge(db, [rows(1, 2, 3)], lease=lease)
    assert (done.status, done.fetched, done.inserted) == (JobStatus.SUCCEEDED, 3, 3)
    assert db.start_job(job.job_id, lease_seconds=LEASE_SECONDS) is None
    assert db.reissue_lease(job.job_id, lease_seconds=LEASE_SECONDS) is None
    assert db.fail_job(job.job_id, "late failure") == done
    assert db.get_job(job.job_id) == done


def test_an_unknown_job_is_none_and_cannot_be_failed(db):
    assert db.get_job(UNKNOWN_JOB) is None
    assert db.start_job(UNKNOWN_JOB, lease_seconds=LEASE_SECONDS) is None
    with pytest.raises(UnknownJob):
        db.fail_job(UNKNOWN_JOB, "no such job")
    assert db.list_jobs() == []


HOSTILE = ['"quoted"', "back\\slash", "new\nline \t tab \x01 \x1f \x7f", "é ü ñ", "🙂 astral", "\u2028 \u2029", "\x00"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_posts_size_is_counted_as_a_lambda_answer_carries_it(db, text):
    merge(db, [[(1, 1, text, text * 3)]])
    page = db.page_of_posts_json(user_id=None, after_id=0, limit=10, max_bytes=10**6)
    in_answer = json.dumps({"body": page.json}, ensure_ascii=False).encode()  # as the runtime sends it
    assert json_string_bytes(page.json) == len(in_answer) - len(b'{"body": ""}')
    assert json.loads(page.json)[0]["title"] == text


def test_a_page_stops_before_the_post_that_would_pass_the_budget_and_says_more_follow(db):
    merge(db, [[(i, 1, "t", '"' * 1000) for i in range(1, 11)]])
    one = json_string_bytes(db.page_of_posts_json(user_id=None, after_id=0, limit=1, max_bytes=10**6).json) - 2
    page = db.page_of_posts_json(user_id=None, after_id=0, limit=10, max_bytes=2 + 3 * (one + 1))
    assert (page.post_count, page.last_id, page.more) == (3, 3, True)
    assert json_string_bytes(page.json) <= 2 + 3 * (one + 1)


def test_the_first_post_stays_even_past_the_budget(db):
    merge(db, [[(1, 1, "t", "x" * 5000), (2, 1, "t", "y")]])
    page = db.page_of_posts_json(user_id=None, after_id=0, limit=10, max_bytes=100)
    assert (page.post_count, page.last_id, page.more) == (1, 1, True)


def test_a_full_page_says_whether_more_follow(db):
    merge(db, [rows(1, 2, 3, 4)])
    assert db.page_of_posts_json(user_id=None, after_id=0, limit=4, max_bytes=10**6).more is False
    assert db.page_of_posts_json(user_id=None, after_id=0, limit=3, max_bytes=10**6).more is True
    assert db.page_of_posts_json(user_id=2, after_id=0, limit=1, max_bytes=10**6).more is True  # posts 1 and 4


def test_a_cut_page_reads_no_further_than_one_post_past_it():
    taken = []

    def posts():
        for i in range(1, 1000):
            taken.append(i)
            yield i, "x" * 100

    assert fill_page(posts(), limit=1000, max_bytes=1000)[1:] == (9, True)
    assert taken == list(range(1, 11))


def test_a_job_given_up_on_never_writes(db):
    merge(db, [rows(1, 2)])
    lease = running_job(db, FetchMode.SYNC)
    db.fail_job(lease.job.job_id, "abandoned: given up")
    with pytest.raises(LeaseLost) as lost:
        merge(db, [rows(1, title="late"), rows(2, 9)], lease=lease)
    assert (lost.value.job.status, lost.value.job.error) == (JobStatus.FAILED, "abandoned: given up")
    assert [(p.id, p.title) for p in db.list_posts()] == [(1, "t 1"), (2, "t 2")]
    with pytest.raises(LeaseLost):
        db.record_progress(lease, Progress(fetched=5, pages=1))
    assert db.fail_job(lease.job.job_id, "late failure", lease=lease).error == "abandoned: given up"


def test_a_run_replaced_by_a_newer_one_never_writes(db):
    first = running_job(db)
    second = db.start_job(first.job.job_id, lease_seconds=LEASE_SECONDS)  # a redelivery: the first run is gone
    with pytest.raises(LeaseLost):
        merge(db, [rows(1)], lease=first)
    assert db.fail_job(first.job.job_id, "first run failed", lease=first).status == JobStatus.RUNNING
    assert merge(db, [rows(2)], lease=second).status == JobStatus.SUCCEEDED
    assert [p.id for p in db.list_posts()] == [2]


def test_a_reissued_lease_revokes_the_runs_before_it(db):
    lease = running_job(db)
    assert db.reissue_lease(lease.job.job_id, lease_seconds=LEASE_SECONDS).status == JobStatus.RUNNING
    with pytest.raises(LeaseLost):
        merge(db, [rows(1)], lease=lease)
    assert db.start_job(lease.job.job_id, lease_seconds=LEASE_SECONDS) is not None


def test_progress_is_written_while_the_lease_holds_and_starts_again_at_zero(db):
    lease = running_job(db)
    db.record_progress(lease, Progress(fetched=40, pages=2))
    assert (db.get_job(lease.job.job_id).fetched, db.get_job(lease.job.job_id).pages) == (40, 2)
    again = db.start_job(lease.job.job_id, lease_seconds=LEASE_SECONDS)
    assert (again.job.fetched, again.job.pages) == (0, 0)


def claim(db, mode=FetchMode.TASK, lease_seconds=LEASE_SECONDS, keep_jobs=1000):
    return db.claim_job(mode, fresh_for=0, lease_seconds=lease_seconds, keep_jobs=keep_jobs)


@pytest.mark.parametrize(("mode", "reason"), [(FetchMode.SYNC, ABANDONED_SYNC), (FetchMode.TASK, ABANDONED_QUEUED)])
def test_a_claim_gives_up_a_job_whose_lease_has_ended(db, mode, reason):
    ended = claim(db, mode, lease_seconds=-1).job
    started = claim(db)
    assert started.outcome == ClaimOutcome.STARTED
    assert (db.get_job(ended.job_id).status, db.get_job(ended.job_id).error) == (JobStatus.FAILED, reason)


def test_a_claim_joins_a_job_whose_lease_holds(db):
    leased = claim(db, lease_seconds=30).job
    assert claim(db).job.job_id == leased.job_id
    assert db.get_job(leased.job_id).status == JobStatus.QUEUED


def test_a_job_from_before_leases_is_given_up_at_the_first_claim(sqlite_db, db_path):
    job = queued_job(sqlite_db)
    sqlite3.connect(db_path, isolation_level=None).execute("UPDATE jobs SET lease_expires_at = NULL")
    assert claim(sqlite_db).outcome == ClaimOutcome.STARTED
    assert sqlite_db.get_job(job.job_id).status == JobStatus.FAILED


# History


def finished_jobs(db, count):
    for _ in range(count):
        merge(db, [[]])
    return list(reversed(db.list_jobs()))


def test_the_history_pages_from_the_newest_job_to_the_oldest(db):
    newest_first = finished_jobs(db, 5)
    first = db.page_of_jobs(before=None, limit=2)
    assert (first.jobs, first.more) == (newest_first[:2], True)
    second = db.page_of_jobs(before=first.jobs[-1].job_id, limit=2)
    assert (second.jobs, second.more) == (newest_first[2:4], True)
    last = db.page_of_jobs(before=second.jobs[-1].job_id, limit=2)
    assert (last.jobs, last.more) == (newest_first[4:], False)
    with pytest.raises(UnknownJob):
        db.page_of_jobs(before=UNKNOWN_JOB, limit=2)


def test_jobs_created_in_the_same_millisecond_page_without_loss(sqlite_db, db_path):
    finished_jobs(sqlite_db, 4)
    sqlite3.connect(db_path, isolation_level=None).execute("UPDATE jobs SET created_at = '2024-01-01T00:00:00.000Z'")
    seen, before = [], None
    while True:
        page = sqlite_db.page_of_jobs(before=before, limit=1)
        seen += page.jobs
        if not page.more:
            break
        before = page.jobs[-1].job_id
    assert sorted(j.job_id for j in seen) == sorted(j.job_id for j in sqlite_db.list_jobs()) and len(seen) == 4


def test_a_new_job_deletes_the_finished_jobs_past_the_newest_kept(db):
    in_progress = queued_job(db, lease_seconds=3600)
    older = finished_jobs(db, 4)
    new = db.claim_job(FetchMode.TASK, fresh_for=0, lease_seconds=60, keep_jobs=3)
    assert new.outcome == ClaimOutcome.JOINED  # a job in progress is never deleted, and blocks a new one
    db.fail_job(in_progress.job_id, "done")
    started = db.claim_job(FetchMode.TASK, fresh_for=0, lease_seconds=60, keep_jobs=3).job
    assert [j.job_id for j in reversed(db.list_jobs())] == [started.job_id, *[j.job_id for j in older[:2]]]


# Errors tell the truth


def test_a_full_database_fails_with_its_own_error_and_keeps_what_it_had(db_path):
    db = SqliteStore(db_path, max_mb=1)
    merge(db, [rows(1, 2)])
    lease = running_job(db)
    big = [[(i, 1, f"title {i}", "x" * 2000) for i in range(start, start + 100)] for start in range(10, 1000, 100)]
    with pytest.raises(StoreError, match=r"database or disk is full \(SQLITE_FULL; DB_MAX_MB is 1\)") as error:
        merge(db, big, lease=lease)
    assert "cannot rollback" not in str(error.value)
    assert [p.id for p in db.list_posts()] == [1, 2]
    assert os.path.getsize(db_path) <= 2**20
    failed = db.fail_job(lease.job.job_id, str(error.value), lease=lease)
    assert failed.status == JobStatus.FAILED and "SQLITE_FULL" in failed.error
    assert merge(db, [rows(1, 2, 3)]).inserted == 1  # the store works on after the failure


# Every read and write fails with the store's own errors


STORE_CALLS = {  # every read and write of the interface, given a running job's lease
    "count_posts": lambda db, lease: db.count_posts(),
    "page_of_posts_json": lambda db, lease: db.page_of_posts_json(user_id=None, after_id=0, limit=9, max_bytes=9999),
    "list_posts": lambda db, lease: db.list_posts(),
    "create_job": lambda db, lease: db.create_job(FetchMode.TASK, lease_seconds=LEASE_SECONDS),
    "claim_job": lambda db, lease: db.claim_job(FetchMode.TASK, fresh_for=0, lease_seconds=60, keep_jobs=9),
    "get_job": lambda db, lease: db.get_job(lease.job.job_id),
    "list_jobs": lambda db, lease: db.list_jobs(),
    "page_of_jobs": lambda db, lease: db.page_of_jobs(before=None, limit=9),
    "start_job": lambda db, lease: db.start_job(lease.job.job_id, lease_seconds=LEASE_SECONDS),
    "reissue_lease": lambda db, lease: db.reissue_lease(lease.job.job_id, lease_seconds=LEASE_SECONDS),
    "record_progress": lambda db, lease: db.record_progress(lease, Progress(fetched=1, pages=1)),
    "merge_fetch": lambda db, lease: db.merge_fetch(lease, [rows(1)], lambda: fetch_end([rows(1)])),
    "fail_job": lambda db, lease: db.fail_job(lease.job.job_id, "failed"),
}


@pytest.mark.parametrize("call", STORE_CALLS)
def test_every_read_and_write_on_a_broken_database_fails_with_the_stores_own_error(db, backend, db_path, call):
    lease = running_job(db)
    merge(db, [rows(1, 2)])
    if backend == "sqlite":
        with open(db_path, "r+b") as file:  # overwritten in place: the store's connection still has it open
            file.write(b"garbage\n" * 64)
    else:
        for table in (config.settings().posts_table, config.settings().jobs_table):
            boto3.client("dynamodb").delete_table(TableName=table)
    with pytest.raises(StoreError) as raised:
        STORE_CALLS[call](db, lease)
    assert isinstance(raised.value, StoreUnavailable)  # not a database (any longer), no table: try again later
    assert raised.value.args[0].startswith("the database is unavailable: ")


# The file: deleted, emptied, overwritten or replaced under an open store


def test_a_deleted_file_is_an_error_and_is_never_recreated_empty(sqlite_db, db_path):
    merge(sqlite_db, [rows(1, 2)])
    os.remove(db_path)
    with pytest.raises(StoreUnavailable, match="database file is missing"):
        sqlite_db.list_posts()
    with pytest.raises(StoreUnavailable, match="database file is missing"):
        SqliteStore(db_path)  # a new process refuses as well
    assert not os.path.exists(db_path)


@pytest.mark.parametrize(("content", "what"), [(b"", "empty"), (b"garbage\n", "not a SQLite database")])
def test_an_emptied_or_overwritten_file_is_refused_like_a_missing_one(sqlite_db, db_path, content, what):
    merge(sqlite_db, [rows(1, 2)])
    os.remove(db_path)
    with open(db_path, "wb") as file:  # `rm $DB_PATH; touch $DB_PATH`, or `echo garbage > $DB_PATH`
        file.write(content)
    refused = f"the database file is {what}, though a database was created there"
    with pytest.raises(StoreUnavailable, match=refused):
        sqlite_db.list_posts()
    with pytest.raises(StoreUnavailable, match=refused):
        SqliteStore(db_path)  # a new process refuses as well
    with open(db_path, "rb") as file:
        assert file.read() == content  # never made into a new database


def test_deleting_the_marker_makes_an_empty_file_a_new_database(sqlite_db, db_path):
    merge(sqlite_db, [rows(1, 2)])
    os.remove(db_path)
    open(db_path, "wb").close()
    os.remove(db_path + config.DB_MARKER_SUFFIX)
    assert sqlite_db.count_posts() == 0


def test_a_lock_held_past_the_deadline_is_unavailable_at_the_deadline(sqlite_db, db_path):
    merge(sqlite_db, [rows(1)])
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a merge's commit holds it, for longer
    sqlite_db.set_deadline(time.monotonic() + 0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"database is locked \(SQLITE_BUSY\)"):
        sqlite_db.count_posts()
    assert 0.4 < time.monotonic() - started < 2.0
    holder.execute("ROLLBACK")
    sqlite_db.set_deadline(None)
    assert sqlite_db.count_posts() == 1


def test_a_merge_still_running_at_the_deadline_is_stopped_and_writes_nothing(sqlite_db, db_path):
    fill_posts(db_path, 200_000)
    lease = running_job(sqlite_db)
    sqlite_db.set_deadline(time.monotonic() + 0.05)  # far less than deleting 200,000 posts takes
    started = time.monotonic()
    with pytest.raises(StoreTimeout, match="ran past the invocation's time; nothing was written"):
        sqlite_db.merge_fetch(lease, [], lambda: fetch_end([]))  # an empty complete fetch deletes every post
    assert time.monotonic() - started < 1.0
    sqlite_db.set_deadline(None)
    assert sqlite_db.count_posts() == 200_000
    assert sqlite_db.fail_job(lease.job.job_id, "out of time", lease=lease).status == JobStatus.FAILED


def test_a_merge_stopped_at_the_deadline_records_its_failure_though_a_reader_holds_the_file(sqlite_db, db_path):
    fill_posts(db_path, 200_000)
    lease = running_job(sqlite_db)
    sqlite_db.set_deadline(time.monotonic() + 0.05)
    with pytest.raises(StoreTimeout):
        sqlite_db.merge_fetch(lease, [], lambda: fetch_end([]))
    reader = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM posts").fetchone()  # a read in progress holds its lock a moment
    threading.Timer(0.2, reader.execute, ("COMMIT",)).start()
    failed = sqlite_db.fail_job(lease.job.job_id, "out of time", lease=lease)  # the deadline has passed
    assert failed.status == JobStatus.FAILED
    reader.close()
    assert len(sqlite_db.list_posts(limit=50_000)) == 50_000  # a long read after it is not interrupted


def fill_posts(db_path: str, count: int) -> None:
    """`count` posts written straight into the file, far faster than merging them."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO posts SELECT i, 1 + i % 10, 't', 'b' FROM n",
        (count,),
    )
    db.close()


def test_a_file_moved_away_and_back_is_read_again(sqlite_db, db_path):
    merge(sqlite_db, [rows(1, 2)])
    os.rename(db_path, db_path + ".away")
    with pytest.raises(StoreUnavailable):
        sqlite_db.count_posts()
    os.rename(db_path + ".away", db_path)
    assert sqlite_db.count_posts() == 2


def test_a_replaced_file_is_opened_anew(sqlite_db, db_path, tmp_path):
    merge(sqlite_db, [rows(1, 2)])
    other = str(tmp_path / "other.db")
    replacement = SqliteStore(other)
    merge(replacement, [rows(7, 8, 9)])
    replacement.close()
    os.replace(other, db_path)
    assert [p.id for p in sqlite_db.list_posts()] == [7, 8, 9]
    assert merge(sqlite_db, [rows(7, 8, 9, 10)]).inserted == 1
    assert [p.id for p in SqliteStore(db_path).list_posts()] == [7, 8, 9, 10]


def test_deleting_the_marker_too_starts_an_empty_database(sqlite_db, db_path):
    merge(sqlite_db, [rows(1, 2)])
    os.remove(db_path)
    os.remove(db_path + config.DB_MARKER_SUFFIX)
    assert sqlite_db.count_posts() == 0
    assert os.path.exists(db_path + config.DB_MARKER_SUFFIX)


def test_a_lease_holds_for_its_seconds_then_ends(db):
    leased = claim(db, lease_seconds=0.5).job
    assert claim(db).outcome == ClaimOutcome.JOINED
    time.sleep(0.6)
    assert claim(db).outcome == ClaimOutcome.STARTED
    assert db.get_job(leased.job_id).error == ABANDONED_QUEUED


# Reads, on every backend


def page(db, after_id=0, limit=100, user_id=None, max_bytes=6_000_000):
    return db.page_of_posts_json(user_id=user_id, after_id=after_id, limit=limit, max_bytes=max_bytes)


def ids(found):
    return [post["id"] for post in json.loads(found.json)]


def incompressible_text(length: int) -> str:
    """Text that no compression shrinks much, most of it four bytes a character in UTF-8."""
    chosen = random.Random(length).choices(range(0x1F300, 0x1FAFF), k=length)
    return "".join(map(chr, chosen))


def test_posts_are_counted(db):
    assert db.count_posts() == 0
    merge(db, [rows(*range(1, 31))])
    assert db.count_posts() == 30


def test_pages_follow_the_keyset_in_id_order_and_say_whether_more_remain(db):
    merge(db, [rows(*range(25, 0, -1))])
    first = page(db, limit=10)
    assert (ids(first), first.post_count, first.last_id, first.more) == (list(range(1, 11)), 10, 10, True)
    last = page(db, after_id=20, limit=10)
    assert (ids(last), last.last_id, last.more) == ([21, 22, 23, 24, 25], 25, False)
    exactly = page(db, after_id=15, limit=10)
    assert (ids(exactly), exactly.more) == (list(range(16, 26)), False)
    beyond = page(db, after_id=25)
    assert (beyond.json, beyond.post_count, beyond.last_id, beyond.more) == ("[]", 0, None, False)


def test_a_users_pages_hold_only_that_users_posts(db):
    merge(db, [rows(*range(1, 21))])  # user 2 has 1, 4, 7, 10, 13, 16, 19
    first = page(db, user_id=2, limit=3)
    assert (ids(first), first.last_id, first.more) == ([1, 4, 7], 7, True)
    rest = page(db, user_id=2, after_id=7)
    assert (ids(rest), rest.more) == ([10, 13, 16, 19], False)
    assert page(db, user_id=99).json == "[]"


def test_a_page_is_the_posts_as_the_api_serves_them(db):
    text = 'quote " backslash \\ newline \n tab \t nul \x00 ünïcødé 🙂'
    merge(db, [[(1, 5, text, text)]])
    assert json.loads(page(db).json) == [{"id": 1, "user_id": 5, "title": text, "body": text}]


def test_a_post_larger_than_any_item_is_stored_and_read_back_exactly(db):
    body = incompressible_text(499_990)  # about 2 MB of UTF-8; a DynamoDB item holds 400 KB
    assert counts(merge(db, [[(1, 1, "big", body), *rows(2)]])) == (2, 0, 0, 0)
    assert db.list_posts()[0] == Post(id=1, user_id=1, title="big", body=body)
    assert json.loads(page(db).json)[0]["body"] == body
    assert counts(merge(db, [[(1, 1, "big", body), *rows(2)]])) == (0, 0, 2, 0)
    changed = body[:-1] + "!"
    assert counts(merge(db, [[(1, 1, "big", changed), *rows(2)]])) == (0, 1, 1, 0)
    assert json.loads(page(db, limit=1).json)[0]["body"] == changed
    assert counts(merge(db, [[(1, 1, "small", "now")]])) == (0, 1, 0, 1)
    assert db.list_posts() == [Post(id=1, user_id=1, title="small", body="now")]


def test_jobs_are_listed_oldest_first(db):
    made = [queued_job(db, mode).job_id for mode in (FetchMode.TASK, FetchMode.SYNC, FetchMode.SCHEDULED)]
    assert [job.job_id for job in db.list_jobs()] == made


def test_a_merge_whose_connection_is_closed_meanwhile_fails_with_the_databases_reason(sqlite_db):
    lease = running_job(sqlite_db)

    def pages():
        yield rows(1)
        sqlite_db.close()  # as when its file is found replaced, and the store opens the new one
        yield rows(2)

    with pytest.raises(StoreError, match="closed database"):
        sqlite_db.merge_fetch(lease, pages(), lambda: fetch_end([rows(1), rows(2)]))
