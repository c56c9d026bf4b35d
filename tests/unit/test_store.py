import sqlite3

import pytest

from aggregator.store import Store


@pytest.fixture
def db(tmp_path):
    store = Store(str(tmp_path / "nested" / "posts.db"))
    yield store
    store.close()


def rows(*ids, title="t"):
    return [(i, 1 + i % 3, f"{title} {i}", f"body {i}") for i in ids]


def test_the_schema_is_created_on_first_use_in_a_new_folder(tmp_path):
    path = tmp_path / "a" / "b" / "x.db"
    Store(str(path)).close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"posts", "jobs"} <= tables


def test_the_file_uses_a_rollback_journal_not_wal(tmp_path):
    path = str(tmp_path / "x.db")
    Store(path).close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_new_posts_are_inserted_and_counted(db):
    assert db.upsert_posts([rows(1, 2), rows(3)]) == (3, 3, 0)
    assert [p["id"] for p in db.list_posts()] == [1, 2, 3]


def test_unchanged_posts_are_not_written_again(db):
    db.upsert_posts([rows(1, 2, 3)])
    assert db.upsert_posts([rows(1, 2, 3)]) == (3, 0, 0)


def test_a_changed_post_is_updated_in_place(db):
    db.upsert_posts([rows(1, 2)])
    assert db.upsert_posts([rows(1, title="new") + rows(2)]) == (2, 0, 1)
    assert db.list_posts()[0]["title"] == "new 1"
    assert db.count_posts() == 2


def test_an_error_while_reading_pages_writes_nothing(db):
    db.upsert_posts([rows(1)])

    def pages():
        yield rows(2, 3)
        yield rows(1, title="changed")
        raise RuntimeError("upstream broke on page 3")

    with pytest.raises(RuntimeError):
        db.upsert_posts(pages())
    assert db.list_posts() == [{"id": 1, "user_id": 2, "title": "t 1", "body": "body 1"}]


def test_a_post_repeated_across_pages_is_stored_once_with_its_last_version(db):
    assert db.upsert_posts([rows(1, 2), rows(2, 3, title="again")]) == (3, 3, 0)
    assert [p["title"] for p in db.list_posts()] == ["t 1", "again 2", "again 3"]


def test_staging_a_fetch_holds_no_lock_on_the_shared_file(db, tmp_path):
    other = Store(str(tmp_path / "nested" / "posts.db"))

    def pages():
        yield rows(1, 2)
        other.upsert_posts([rows(7)])  # another writer commits while this fetch is still reading pages
        yield rows(3)

    assert db.upsert_posts(pages()).inserted == 3
    assert [p["id"] for p in db.list_posts()] == [1, 2, 3, 7]
    other.close()


def test_posts_are_listed_by_id_and_filtered_by_user(db):
    db.upsert_posts([rows(5, 3, 1, 4, 2)])
    assert [p["id"] for p in db.list_posts()] == [1, 2, 3, 4, 5]
    assert [p["id"] for p in db.list_posts(user_id=2)] == [1, 4]
    assert db.list_posts(user_id=99) == []


def test_hostile_text_is_stored_exactly_as_sent(db):
    text = 'Robert\'); DROP TABLE posts;-- "quoted" \n\t ünïcødé 🙂 \x00 end'
    db.upsert_posts([[(1, 1, text, text * 1000)]])
    post = db.list_posts()[0]
    assert post["title"] == text
    assert post["body"] == text * 1000


def test_a_job_moves_forward_only(db):
    job = db.create_job("task")
    assert job["status"] == "queued"
    assert job["created_at"].endswith("Z")
    assert db.start_job(job["job_id"])["status"] == "running"
    done = db.finish_job(job["job_id"], "succeeded", {"fetched": 3, "inserted": 3}, None)
    assert (done["status"], done["fetched"], done["inserted"]) == ("succeeded", 3, 3)
    assert db.start_job(job["job_id"]) is None
    again = db.finish_job(job["job_id"], "failed", {}, "late failure")
    assert again == done


def test_an_unknown_job_is_none(db):
    assert db.get_job("00000000-0000-4000-8000-000000000000") is None
    assert db.start_job("00000000-0000-4000-8000-000000000000") is None
