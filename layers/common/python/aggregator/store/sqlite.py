"""The SQLite backend: schema, post merges, job records and queries. The only module with SQL."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator.models import Claim, ClaimOutcome, FetchMode, Job, JobCounts, JobStatus, Post
from aggregator.store import Merge, PostRow, PostsPage, UnknownJob, fill_page, iso, utc_now

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
# The posts of a page in id order, each as a JSON object built by SQLite; {where} is a fixed clause with ? parameters.
PAGE_POSTS = """
SELECT id, json_object('id', id, 'user_id', user_id, 'title', title, 'body', body)
FROM posts WHERE {where} ORDER BY id LIMIT ?
"""
JOB_FIELDS = tuple(Job.model_fields)
JOB_COLUMNS = ", ".join(JOB_FIELDS)
IN_PROGRESS = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
BUSY_TIMEOUT_SECONDS = 30.0


class SqliteStore:
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

    def _value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, args).fetchone()[0]

    # Posts

    def upsert_posts(self, pages: Iterable[Sequence[PostRow]]) -> Merge:
        """Stage every page, then merge them all into posts in one transaction."""
        self._db.execute(STAGING)
        try:
            self._db.execute("BEGIN")  # touches only the private temp table: no lock on the shared file
            self._db.execute("DELETE FROM temp.incoming")
            for page in pages:
                self._db.executemany(STAGE_POST, page)
            staged: int = self._value("SELECT count(*) FROM temp.incoming")
            self._db.execute("COMMIT")
            with self._transaction():
                updated = self._db.execute(UPDATE_FROM_STAGED).rowcount
                inserted = self._db.execute(INSERT_NEW_STAGED).rowcount
        finally:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute("DELETE FROM temp.incoming")
        return Merge(staged=staged, inserted=inserted, updated=updated)

    def count_posts(self) -> int:
        count: int = self._value("SELECT count(*) FROM posts")
        return count

    def page_of_posts_json(self, *, user_id: int | None, after_id: int, limit: int, max_bytes: int) -> PostsPage:
        where, args = "id > ?", [after_id]
        if user_id is not None:
            where, args = where + " AND user_id = ?", [*args, user_id]
        cursor = self._db.execute(PAGE_POSTS.format(where=where), (*args, limit))
        try:  # SQLite hands over one post at a time; a cut leaves the rest unread
            posts, last_id, cut = fill_page(cursor, limit=limit, max_bytes=max_bytes)
        finally:
            cursor.close()  # an open statement would hold its read lock
        more = cut or (
            len(posts) == limit
            and bool(self._value(f"SELECT EXISTS (SELECT 1 FROM posts WHERE {where} AND id > ?)", (*args, last_id)))
        )
        return PostsPage(json="[" + ",".join(posts) + "]", post_count=len(posts), last_id=last_id, more=more)

    def list_posts(self, *, user_id: int | None = None, after_id: int = 0, limit: int = -1) -> list[Post]:
        sql = "SELECT id, user_id, title, body FROM posts WHERE id > ?"
        args = [after_id]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [Post(id=id_, user_id=user, title=title, body=body) for id_, user, title, body in rows]

    # Jobs

    def create_job(self, mode: FetchMode) -> Job:
        job_id = str(uuid.uuid4())
        self._db.execute(
            "INSERT INTO jobs (job_id, mode, status, created_at) VALUES (?, ?, ?, ?)",
            (job_id, mode.value, JobStatus.QUEUED.value, utc_now()),
        )
        return self._job(job_id)

    def claim_job(self, mode: FetchMode, *, fresh_for: float, stale_after: float, sync_stale_after: float) -> Claim:
        now = datetime.now(UTC)
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?"
                " WHERE status IN (?, ?) AND (created_at < ? OR (mode = ? AND created_at < ?))",
                (
                    JobStatus.FAILED.value,
                    iso(now),
                    "abandoned: no progress",
                    *IN_PROGRESS,
                    iso(now, -stale_after),
                    FetchMode.SYNC.value,
                    iso(now, -sync_stale_after),
                ),
            )
            active = self._jobs("WHERE status IN (?, ?) ORDER BY created_at LIMIT 1", *IN_PROGRESS)
            if active:
                return Claim(active[0], ClaimOutcome.JOINED)
            fresh = self._jobs(
                "WHERE status = ? AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
                JobStatus.SUCCEEDED.value,
                iso(now, -fresh_for),
            )
            if fresh_for > 0 and fresh:
                return Claim(fresh[0], ClaimOutcome.FRESH)
            return Claim(self.create_job(mode), ClaimOutcome.STARTED)

    def get_job(self, job_id: str) -> Job | None:
        jobs = self._jobs("WHERE job_id = ?", job_id)
        return jobs[0] if jobs else None

    def list_jobs(self) -> list[Job]:
        return self._jobs("ORDER BY created_at, rowid")

    def start_job(self, job_id: str) -> Job | None:
        cursor = self._db.execute(
            "UPDATE jobs SET status = ?, started_at = ? WHERE job_id = ? AND status IN (?, ?)",
            (JobStatus.RUNNING.value, utc_now(), job_id, *IN_PROGRESS),
        )
        return self._job(job_id) if cursor.rowcount else None

    def finish_job(self, job_id: str, status: JobStatus, counts: JobCounts, error: str | None) -> Job:
        if not status.finished:
            raise ValueError(f"a job finishes as succeeded or failed, not {status}")
        self._db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, fetched = ?, inserted = ?, updated = ?,"
            " unchanged = ?, rejected = ?, error = ? WHERE job_id = ? AND status IN (?, ?)",
            (
                status.value,
                utc_now(),
                counts.fetched,
                counts.inserted,
                counts.updated,
                counts.unchanged,
                counts.rejected,
                error,
                job_id,
                *IN_PROGRESS,
            ),
        )
        return self._job(job_id)

    def _job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _jobs(self, clause: str, *args: object) -> list[Job]:
        cursor = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs {clause}", args)
        return [Job.model_validate(dict(zip(JOB_FIELDS, row, strict=True))) for row in cursor]
