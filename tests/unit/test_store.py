import json
import sqlite3

import pytest

from aggregator.models import FetchMode, JobCounts, JobStatus, Post
from aggregator.store import Merge, UnknownJob, fill_page, json_string_bytes
from aggregator.store.sqlite import SqliteStore

UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"


def rows(*ids, title="t"):
    return [(i, 1 + i % 3, f"{title} {i}", f"body {i}") for i in ids]


def test_the_schema_is_created_on_first_use_in_a_new_folder(tmp_path):
    path = tmp_path / "a" / "b" / "x.db"
    SqliteStore(str(path)).close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"posts", "jobs"} <= tables


def test_the_file_uses_a_rollback_journal_not_wal(tmp_path):
    path = str(tmp_path / "x.db")
    SqliteStore(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_new_posts_are_inserted_and_counted(db):
    assert db.upsert_posts([rows(1, 2), rows(3)]) == Merge(staged=3, inserted=3, updated=0)
    assert [p.id for p in db.list_posts()] == [1, 2, 3]


def test_unchanged_posts_are_not_written_again(db):
    db.upsert_posts([rows(1, 2, 3)])
    assert db.upsert_posts([rows(1, 2, 3)]) == Merge(staged=3, inserted=0, updated=0)


def test_a_changed_post_is_updated_in_place(db):
    db.upsert_posts([rows(1, 2)])
    assert db.upsert_posts([rows(1, title="new") + rows(2)]) == Merge(staged=2, inserted=0, updated=1)
    assert db.list_posts()[0].title == "new 1"
    assert db.count_posts() == 2


def test_an_error_while_reading_pages_writes_nothing(db):
    db.upsert_posts([rows(1)])

    def pages():
        yield rows(2, 3)
        yield rows(1, title="changed")
        raise RuntimeError("upstream broke on page 3")

    with pytest.raises(RuntimeError):
        db.upsert_posts(pages())
    assert db.list_posts() == [Post(id=1, user_id=2, title="t 1", body="body 1")]


def test_a_post_repeated_across_pages_is_stored_once_with_its_last_version(db):
    assert db.upsert_posts([rows(1, 2), rows(2, 3, title="again")]) == Merge(staged=3, inserted=3, updated=0)
    assert [p.title for p in db.list_posts()] == ["t 1", "again 2", "again 3"]


def test_staging_a_fetch_holds_no_lock_on_the_shared_file(db, db_path):
    other = SqliteStore(db_path)

    def pages():
        yield rows(1, 2)
        other.upsert_posts([rows(7)])  # another writer commits while this fetch is still reading pages
        yield rows(3)

    assert db.upsert_posts(pages()).inserted == 3
    assert [p.id for p in db.list_posts()] == [1, 2, 3, 7]
    other.close()


def test_posts_are_listed_by_id_and_filtered_by_user(db):
    db.upsert_posts([rows(5, 3, 1, 4, 2)])
    assert [p.id for p in db.list_posts()] == [1, 2, 3, 4, 5]
    assert [p.id for p in db.list_posts(user_id=2)] == [1, 4]
    assert db.list_posts(user_id=99) == []


def test_hostile_text_is_stored_exactly_as_sent(db):
    text = 'Robert\'); DROP TABLE posts;-- "quoted" \n\t ünïcødé 🙂 \x00 end'
    db.upsert_posts([[(1, 1, text, text * 1000)]])
    post = db.list_posts()[0]
    assert (post.title, post.body) == (text, text * 1000)


def test_a_job_moves_forward_only(db):
    job = db.create_job(FetchMode.TASK)
    assert job.status == JobStatus.QUEUED
    assert job.created_at.endswith("Z")
    assert db.start_job(job.job_id).status == JobStatus.RUNNING
    done = db.finish_job(job.job_id, JobStatus.SUCCEEDED, JobCounts(fetched=3, inserted=3), None)
    assert (done.status, done.fetched, done.inserted) == (JobStatus.SUCCEEDED, 3, 3)
    assert db.start_job(job.job_id) is None
    again = db.finish_job(job.job_id, JobStatus.FAILED, JobCounts(), "late failure")
    assert again == done
    assert db.get_job(job.job_id) == done


def test_a_job_cannot_be_finished_as_queued_or_running(db):
    job = db.create_job(FetchMode.TASK)
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        with pytest.raises(ValueError, match="succeeded or failed"):
            db.finish_job(job.job_id, status, JobCounts(), None)
    assert db.get_job(job.job_id) == job


def test_an_unknown_job_is_none_and_cannot_be_finished(db):
    assert db.get_job(UNKNOWN_JOB) is None
    assert db.start_job(UNKNOWN_JOB) is None
    with pytest.raises(UnknownJob):
        db.finish_job(UNKNOWN_JOB, JobStatus.FAILED, JobCounts(), "no such job")
    assert db.list_jobs() == []


HOSTILE = ['"quoted"', "back\\slash", "new\nline \t tab \x01 \x1f \x7f", "é ü ñ", "🙂 astral", "\u2028 \u2029", "\x00"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_posts_size_is_counted_as_a_lambda_answer_carries_it(db, text):
    db.upsert_posts([[(1, 1, text, text * 3)]])
    page = db.page_of_posts_json(user_id=None, after_id=0, limit=10, max_bytes=10**6)
    in_answer = json.dumps({"body": page.json}, ensure_ascii=False).encode()  # as the runtime sends it
    assert json_string_bytes(page.json) == len(in_answer) - len(b'{"body": ""}')
    assert json.loads(page.json)[0]["title"] == text


def test_a_page_stops_before_the_post_that_would_pass_the_budget_and_says_more_follow(db):
    db.upsert_posts([[(i, 1, "t", '"' * 1000) for i in range(1, 11)]])
    one = json_string_bytes(db.page_of_posts_json(user_id=None, after_id=0, limit=1, max_bytes=10**6).json) - 2
    page = db.page_of_posts_json(user_id=None, after_id=0, limit=10, max_bytes=2 + 3 * (one + 1))
    assert (page.post_count, page.last_id, page.more) == (3, 3, True)
    assert json_string_bytes(page.json) <= 2 + 3 * (one + 1)


def test_the_first_post_stays_even_past_the_budget(db):
    db.upsert_posts([[(1, 1, "t", "x" * 5000), (2, 1, "t", "y")]])
    page = db.page_of_posts_json(user_id=None, after_id=0, limit=10, max_bytes=100)
    assert (page.post_count, page.last_id, page.more) == (1, 1, True)


def test_a_full_page_says_whether_more_follow(db):
    db.upsert_posts([rows(1, 2, 3, 4)])
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
