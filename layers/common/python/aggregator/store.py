"""SQLite storage: schema, post upserts, job records and queries. The only module with SQL."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

# Rollback journal, not WAL: WAL needs shared memory, which a network filesystem (EFS) lacks.
PRAGMAS = """
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = FULL;
PRAGMA cache_size = -65536;
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
UPSERT_POST = """
INSERT INTO posts (id, user_id, title, body) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, title = excluded.title, body = excluded.body
WHERE (user_id, title, body) IS NOT (excluded.user_id, excluded.title, excluded.body)
"""
JOB_COLUMNS = (
    "job_id, mode, status, created_at, started_at, finished_at, fetched, inserted, updated, unchanged, rejected, error"
)
POST_COLUMNS = ("id", "user_id", "title", "body")
COUNT_COLUMNS = ("fetched", "inserted", "updated", "unchanged", "rejected")
BUSY_TIMEOUT_SECONDS = 30.0

PostRow = tuple[int, int, str, str]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def upsert_posts(self, pages: Iterable[list[PostRow]]) -> tuple[int, int]:
        """Write every page in one transaction and return (inserted, updated).

        Rows equal to the stored ones are not written. An exception raised while
        iterating `pages` rolls the whole write back.
        """
        with self._transaction():
            before = self.count_posts()
            changes = self._db.total_changes
            for page in pages:
                self._db.executemany(UPSERT_POST, page)
            inserted = self.count_posts() - before
            changed = self._db.total_changes - changes
        return inserted, changed - inserted

    def count_posts(self) -> int:
        return self._db.execute("SELECT count(*) FROM posts").fetchone()[0]

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
