"""SQLite storage: schema, post upserts, job records and queries. The only module with SQL."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

# Rollback journal, not WAL: WAL needs shared memory, which a network filesystem (EFS) lacks.
PRAGMAS = """
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = FULL;
"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id, id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    fetched INTEGER NOT NULL DEFAULT 0,
    inserted INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
"""
# A fetch is staged in a table private to the connection, so the network wait holds no lock on the
# shared file; the merge into posts is one short write transaction. A later duplicate replaces an
# earlier one.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL
)
"""
STAGE_POST = "INSERT OR REPLACE INTO temp.incoming (id, user_id, title, body) VALUES (?, ?, ?, ?)"
UPDATE_FROM_STAGED = """
UPDATE posts SET user_id = s.user_id, title = s.title, body = s.body FROM temp.incoming AS s
WHERE posts.id = s.id AND (posts.user_id, posts.title, posts.body) IS NOT (s.user_id, s.title, s.body)
"""
INSERT_NEW_STAGED = (
    "INSERT OR IGNORE INTO posts (id, user_id, title, body) SELECT id, user_id, title, body FROM temp.incoming"
)
# The candidate posts of a page, each as a JSON object; {where} is a fixed clause with ? parameters.
PAGE_POSTS = """
SELECT id, json_object('id', id, 'user_id', user_id, 'title', title, 'body', body) AS post
FROM posts WHERE {where} ORDER BY id LIMIT ?
"""
# A page of posts as one JSON list, built by SQLite; with its size in bytes, count and last id.
PAGE_JSON = """
SELECT page, length(CAST(page AS BLOB)), n, last_id FROM (
    SELECT json_group_array(json(post)) AS page, count(*) AS n, max(id) AS last_id FROM ({posts})
)
"""
# The same page cut at a byte budget (the first post always stays): only needed for very large posts.
PAGE_JSON_WITHIN_BYTES = """
WITH sized AS (
    SELECT id, post, row_number() OVER win AS n, sum(length(CAST(post AS BLOB)) + 1) OVER win AS bytes
    FROM ({posts}) WINDOW win AS (ORDER BY id)
)
SELECT '[' || group_concat(post, ',') || ']', 0, count(*), max(id) FROM (
    SELECT id, post FROM sized WHERE n = 1 OR bytes + 1 <= ? ORDER BY id
)
"""
JOB_COLUMNS = (
    "job_id, mode, status, created_at, started_at, finished_at, fetched, inserted, updated, unchanged, rejected, error"
)
POST_COLUMNS = ("id", "user_id", "title", "body")
COUNT_COLUMNS = ("fetched", "inserted", "updated", "unchanged", "rejected")
BUSY_TIMEOUT_SECONDS = 30.0

PostRow = tuple[int, int, str, str]


class PostsPage(NamedTuple):
    json: str
    count: int
    last_id: int | None
    more: bool


class Merge(NamedTuple):
    staged: int  # distinct posts in the fetch
    inserted: int
    updated: int


def utc_now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime, plus_seconds: float = 0.0) -> str:
    """ISO 8601 in UTC with milliseconds: such strings sort as the times they name."""
    moment += timedelta(seconds=plus_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """One connection to the SQLite file; the schema is created on first use."""

    def __init__(self, path: str):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        self._db.executescript(PRAGMAS + SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Posts

    def upsert_posts(self, pages: Iterable[list[PostRow]]) -> Merge:
        """Stage every page, then merge them all into posts in one transaction.

        Rows equal to the stored ones are not written. An exception raised while
        iterating `pages` writes nothing.
        """
        self._db.execute(STAGING)
        try:
            self._db.execute("BEGIN")  # touches only the private temp table: no lock on the shared file
            self._db.execute("DELETE FROM temp.incoming")
            for page in pages:
                self._db.executemany(STAGE_POST, page)
            staged = self._db.execute("SELECT count(*) FROM temp.incoming").fetchone()[0]
            self._db.execute("COMMIT")
            with self._transaction():
                updated = self._db.execute(UPDATE_FROM_STAGED).rowcount
                inserted = self._db.execute(INSERT_NEW_STAGED).rowcount
        finally:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute("DELETE FROM temp.incoming")
        return Merge(staged, inserted, updated)

    def count_posts(self) -> int:
        return self._db.execute("SELECT count(*) FROM posts").fetchone()[0]

    def page_of_posts_json(self, *, user_id: int | None, after_id: int, limit: int, max_bytes: int) -> PostsPage:
        """Up to `limit` posts after `after_id` as one JSON list, built by SQLite, of at most `max_bytes`
        (yet never fewer than one post), and whether more posts follow."""
        where, args = "id > ?", [after_id]
        if user_id is not None:
            where, args = where + " AND user_id = ?", [*args, user_id]
        posts = PAGE_POSTS.format(where=where)
        text, size, count, last_id = self._db.execute(PAGE_JSON.format(posts=posts), (*args, limit)).fetchone()
        if size > max_bytes:
            sql = PAGE_JSON_WITHIN_BYTES.format(posts=posts)
            text, _, count, last_id = self._db.execute(sql, (*args, limit, max_bytes)).fetchone()
        more = (
            count > 0
            and self._db.execute(
                f"SELECT EXISTS (SELECT 1 FROM posts WHERE {where} AND id > ?)", (*args, last_id)
            ).fetchone()[0]
        )
        return PostsPage(text, count, last_id, bool(more))

    def list_posts(self, *, user_id: int | None = None, after_id: int = 0, limit: int = -1) -> list[dict]:
        sql = "SELECT id, user_id, title, body FROM posts WHERE id > ?"
        args: list[int] = [after_id]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [dict(zip(POST_COLUMNS, row, strict=True)) for row in rows]

    # Jobs

    def create_job(self, mode: str) -> dict:
        job_id = str(uuid.uuid4())
        self._db.execute(
            "INSERT INTO jobs (job_id, mode, status, created_at) VALUES (?, ?, 'queued', ?)",
            (job_id, mode, utc_now()),
        )
        return self.get_job(job_id)

    def claim_job(
        self, mode: str, *, fresh_for: float, stale_after: float, sync_stale_after: float
    ) -> tuple[dict, str]:
        """In one transaction: fail abandoned jobs, then join the active job (`joined`), or return a
        success younger than `fresh_for` seconds (`fresh`), or create a queued job (`started`)."""
        now = datetime.now(UTC)
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?"
                " WHERE status IN ('queued', 'running') AND (created_at < ? OR (mode = 'sync' AND created_at < ?))",
                (_iso(now), "abandoned: no progress", _iso(now, -stale_after), _iso(now, -sync_stale_after)),
            )
            active = self._jobs("WHERE status IN ('queued', 'running') ORDER BY created_at LIMIT 1")
            if active:
                return active[0], "joined"
            fresh = self._jobs(
                "WHERE status = 'succeeded' AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
                _iso(now, -fresh_for),
            )
            if fresh_for > 0 and fresh:
                return fresh[0], "fresh"
            return self.create_job(mode), "started"

    def get_job(self, job_id: str) -> dict | None:
        jobs = self._jobs("WHERE job_id = ?", job_id)
        return jobs[0] if jobs else None

    def list_jobs(self) -> list[dict]:
        """Every job, oldest first."""
        return self._jobs("ORDER BY created_at, rowid")

    def _jobs(self, clause: str, *args) -> list[dict]:
        cursor = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs {clause}", args)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def start_job(self, job_id: str) -> dict | None:
        """Mark a queued (or abandoned running) job running; None if it has finished or is unknown."""
        cursor = self._db.execute(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE job_id = ? AND status IN ('queued', 'running')",
            (utc_now(), job_id),
        )
        return self.get_job(job_id) if cursor.rowcount else None

    def finish_job(self, job_id: str, status: str, counts: Mapping[str, int], error: str | None) -> dict:
        """Record the end of a job that is not finished yet; a finished job is left as it was."""
        self._db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, fetched = ?, inserted = ?, updated = ?,"
            " unchanged = ?, rejected = ?, error = ?"
            " WHERE job_id = ? AND status IN ('queued', 'running')",
            (status, utc_now(), *(counts.get(c, 0) for c in COUNT_COLUMNS), error, job_id),
        )
        return self.get_job(job_id)


_connections = threading.local()


def open_store(path: str) -> Store:
    """This thread's store for `path`, opened once and reused across invocations."""
    stores = _connections.__dict__.setdefault("stores", {})
    if path not in stores:
        stores[path] = Store(path)
    return stores[path]
