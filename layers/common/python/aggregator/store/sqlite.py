"""The SQLite backend: schema, post merges, job records and queries; and the staging of a fetch that the
DynamoDB backend merges from. The only module with SQL."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from aggregator.config import DB_MARKER_SUFFIX
from aggregator.models import Claim, ClaimOutcome, FetchMode, Job, JobStatus, Post
from aggregator.store import (
    FetchEnd,
    JobsPage,
    Lease,
    LeaseLost,
    PageItem,
    PostRow,
    PostsPage,
    Progress,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    UnknownJob,
    fill_page,
    iso,
    utc_now,
)

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
# Columns added since the first schema: a database created before them gains them when opened.
ADDED_JOB_COLUMNS = {
    "pages": "INTEGER NOT NULL DEFAULT 0",
    "deleted": "INTEGER NOT NULL DEFAULT 0",
    "lease_token": "TEXT",  # the running run's token; NULL when no run may write
    "lease_expires_at": "TEXT",  # when a claim may give the job up; NULL (a job from before leases): now
}
JOBS_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs (created_at, job_id)"
# A fetch is staged in tables private to the connection, so the network wait holds no lock on the
# shared file; the merge into posts is one short write transaction. A later duplicate replaces an
# earlier one. `kept` holds the ids of records rejected for their other fields.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS kept (id INTEGER PRIMARY KEY);
"""
STAGE_POST = "INSERT OR REPLACE INTO temp.incoming (id, user_id, title, body) VALUES (?, ?, ?, ?)"
STAGE_KEPT = "INSERT OR IGNORE INTO temp.kept (id) VALUES (?)"
# What StagedPosts hands back: posts and kept ids (user_id NULL) in one stream; a post outranks a kept id.
STAGED_IN_ORDER = """
SELECT id, user_id, title, body FROM temp.incoming
UNION ALL SELECT id, NULL, NULL, NULL FROM temp.kept WHERE id NOT IN (SELECT id FROM temp.incoming)
ORDER BY id
"""
STAGED_RANGE = "SELECT min(id), max(id) FROM (SELECT id FROM temp.incoming UNION ALL SELECT id FROM temp.kept)"
DELETE_ABSENT = """
DELETE FROM posts WHERE id NOT IN (SELECT id FROM temp.incoming) AND id NOT IN (SELECT id FROM temp.kept)
"""
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
FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
BUSY_TIMEOUT_SECONDS = 30.0  # the longest wait for a lock, when the store is given no deadline
# A job's failure is recorded even once the deadline has passed (a merge stopped there), waiting this long
# for a lock a reader holds: within the WAIT_MARGIN_SECONDS an invocation keeps to answer.
FAILURE_WAIT_SECONDS = 1.0
DEADLINE_CHECK_STEPS = 10_000  # a merge checks its deadline once per this many SQLite instructions
HEADER = b"SQLite format 3\x00"  # how every SQLite database file begins
MISSING = (
    f"the database file is missing, though a database was created there (DB_PATH{DB_MARKER_SUFFIX} says so); "
    f"restore the file, or delete DB_PATH{DB_MARKER_SUFFIX} to start with an empty database"
)
NOT_A_DATABASE = (
    "the database file is {what}, though a database was created there (DB_PATH{marker} says so); restore the "
    "file, or delete it and DB_PATH{marker} to start with an empty database"
)
LOCKED = "{reason}: another connection held its lock past the time this request had; try again"
ABANDONED_SYNC = "abandoned: the request running it ended before it finished"
ABANDONED_QUEUED = "abandoned: its queue message has no delivery left to run it"
GIVE_UP_EXPIRED = f"""
UPDATE jobs SET status = 'failed', finished_at = ?, lease_token = NULL, error = CASE mode WHEN ? THEN ? ELSE ? END
WHERE status IN {IN_PROGRESS} AND COALESCE(lease_expires_at, '') < ?
"""
FINISH_SUCCEEDED = """
UPDATE jobs SET status = 'succeeded', finished_at = ?, lease_token = NULL, fetched = ?, pages = ?, inserted = ?,
    updated = ?, unchanged = ?, deleted = ?, rejected = ?, error = ?
WHERE job_id = ? AND lease_token = ?
"""
FAIL = """
UPDATE jobs SET status = 'failed', finished_at = ?, lease_token = NULL, error = ?,
    fetched = COALESCE(?, fetched), pages = COALESCE(?, pages)
WHERE job_id = ? AND status IN (?, ?) AND (? IS NULL OR lease_token = ?)
"""


class StagedPosts:
    """A fetch staged in a private temporary SQLite database, deleted when closed (the DynamoDB backend
    merges from it): a later duplicate replaces an earlier one, and the posts, with the ids of records
    kept as they were, come back in id order. Memory follows SQLite's page cache (it spills to a temporary
    file), not the size of the fetch. Its errors are StoreError."""

    def __init__(self) -> None:
        with _staging_errors():
            self._db = sqlite3.connect("", isolation_level=None)  # "": a temporary database of its own
            self._db.executescript(STAGING)

    def __enter__(self) -> StagedPosts:
        return self

    def __exit__(self, *_: object) -> None:
        self._db.close()

    def add(self, pages: Iterable[Iterable[PageItem]]) -> int:
        """Stage every page; how many distinct posts are staged."""
        with _staging_errors():
            self._db.execute("BEGIN")
            for page in pages:
                kept: list[tuple[int]] = []
                self._db.executemany(STAGE_POST, _posts_of(page, kept))
                self._db.executemany(STAGE_KEPT, kept)
            self._db.execute("COMMIT")
            count: int = self._value("SELECT count(*) FROM temp.incoming")
        return count

    def id_range(self) -> tuple[int, int] | None:
        """The lowest and highest id staged, of a post or a kept record; None if nothing is staged."""
        with _staging_errors():
            low, high = self._db.execute(STAGED_RANGE).fetchone()
        return None if low is None else (low, high)

    def items(self) -> Iterator[PageItem]:
        """The staged posts and kept ids (as `int`), in id order, read as they are used."""
        with _staging_errors():
            for post_id, user_id, title, body in self._db.execute(STAGED_IN_ORDER):
                yield post_id if user_id is None else (post_id, user_id, title, body)

    def _value(self, sql: str) -> Any:
        return self._db.execute(sql).fetchone()[0]


@contextmanager
def _staging_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        raise StoreError(f"database error: staging the fetch: {exc} ({name})") from exc


P = ParamSpec("P")
R = TypeVar("R")


def _store_errors(method: Callable[Concatenate[SqliteStore, P], R]) -> Callable[Concatenate[SqliteStore, P], R]:
    """The database's errors in `method` as the store's own: StoreError, or StoreUnavailable."""

    @functools.wraps(method)
    def call(store: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(store, *args, **kwargs)
        except sqlite3.Error as exc:
            raise store._error(exc) from exc

    return call


class SqliteStore:
    """One connection to the SQLite file, the schema created on first use.

    The file is never silently recreated: a store notices when the file at `path` is no longer the one
    it opened, and opens it anew; where a database was created (its marker file says so) but the file is
    missing, empty or not a SQLite database, it raises StoreUnavailable instead of creating an empty one.
    Every error of the database reaches the caller as StoreError (StoreUnavailable: try again later).
    """

    def __init__(self, path: str, *, max_mb: int = 0, deadline: float | None = None):
        self._path, self._max_mb, self._deadline = path, max_mb, deadline
        self._identity: tuple[int, int] | None = None
        self._busy_ms: int | None = None  # the busy timeout set on the connection
        self._db = self._open()

    def close(self) -> None:
        self._db.close()

    def set_deadline(self, deadline: float | None) -> None:
        self._deadline = deadline

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _wait_seconds(self, at_least: float = 0.0) -> float:
        """How long a statement may wait for a lock: until the deadline, at most BUSY_TIMEOUT_SECONDS, and
        `at_least` however late it is."""
        if self._deadline is None:
            return BUSY_TIMEOUT_SECONDS
        return max(at_least, min(BUSY_TIMEOUT_SECONDS, self._deadline - time.monotonic()))

    # The file and the connection

    def _open(self) -> sqlite3.Connection:
        if self._path == ":memory:":
            db = sqlite3.connect(self._path, isolation_level=None)
            db.executescript(PRAGMAS + SCHEMA)
            self._add_columns(db)
            return db
        file, marker = Path(self._path), Path(self._path + DB_MARKER_SUFFIX)
        try:
            if marker.exists():
                _refuse_unless_a_database(file)
            else:
                file.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, timeout=self._wait_seconds(), isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            db.executescript(PRAGMAS + SCHEMA)
            self._add_columns(db)
            if self._max_mb:
                page_size = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count = {self._max_mb * 2**20 // page_size}")
            self._identity = _identity(file)
            marker.touch()
        except (OSError, sqlite3.Error) as exc:
            db.close()
            raise self._error(exc) from exc
        return db

    def _add_columns(self, db: sqlite3.Connection) -> None:
        """Bring a database created by an earlier version up to this schema."""
        if not set(ADDED_JOB_COLUMNS) - _columns(db, "jobs"):
            db.execute(JOBS_INDEX)
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in ADDED_JOB_COLUMNS.items():
                if name not in _columns(db, "jobs"):
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            db.execute(JOBS_INDEX)
            db.execute("COMMIT")
        finally:
            _rollback(db)

    def _connection(self, wait_at_least: float = 0.0) -> sqlite3.Connection:
        """The connection to the file that `path` names now, opened anew if the file was replaced, waiting
        for a lock no longer than the deadline allows (but `wait_at_least`)."""
        if self._identity is not None and self._file_changed():
            opened = self._open()  # StoreUnavailable if it is missing: the old connection stays for its return
            self._db.close()
            self._db, self._busy_ms = opened, None
        # to a tenth of a second: mostly unchanged, so not set
        busy_ms = int(self._wait_seconds(wait_at_least) * 10) * 100
        if busy_ms != self._busy_ms:
            self._db.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._busy_ms = busy_ms
        return self._db

    def _file_changed(self) -> bool:
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            return True
        return (found.st_dev, found.st_ino) != self._identity

    @contextmanager
    def _transaction(self, wait_at_least: float = 0.0) -> Iterator[sqlite3.Connection]:
        """A write transaction on the file `path` names; the database's errors as StoreError."""
        db = self._connection(wait_at_least)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._identity is not None and self._file_changed():
                    raise StoreUnavailable("the database file was replaced or deleted while in use; nothing written")
                yield db
                db.execute("COMMIT")
            finally:
                _rollback(db)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> StoreError:
        """The database's own reason, as StoreUnavailable where the database cannot be used now: its file no
        longer holds the database created there (emptied or overwritten in place, under this connection), or
        a lock was held past the deadline. SQLite may have rolled the transaction back itself."""
        if self._path != ":memory:" and Path(self._path + DB_MARKER_SUFFIX).exists():
            try:
                _refuse_unless_a_database(Path(self._path))
            except StoreUnavailable as refused:
                return refused
            except OSError:
                pass  # the error is the database's own
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        primary = "_".join(name.split("_")[:2])  # SQLITE_BUSY_RECOVERY is a SQLITE_BUSY
        if primary in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return StoreUnavailable(LOCKED.format(reason=f"{exc} ({name})"))
        if primary == "SQLITE_INTERRUPT":
            return StoreTimeout("merging the fetch ran past the invocation's time; nothing was written")
        if primary == "SQLITE_NOTADB":
            return StoreUnavailable(f"{exc} ({name})")
        limit = f"; DB_MAX_MB is {self._max_mb}" if name == "SQLITE_FULL" and self._max_mb else ""
        return StoreError(f"database error: {exc} ({name}{limit})")

    def _value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, args).fetchone()[0]

    # Posts

    @_store_errors
    def count_posts(self) -> int:
        count: int = self._connection().execute("SELECT count(*) FROM posts").fetchone()[0]
        return count

    @_store_errors
    def page_of_posts_json(self, *, user_id: int | None, after_id: int, limit: int, max_bytes: int) -> PostsPage:
        db = self._connection()
        where, args = "id > ?", [after_id]
        if user_id is not None:
            where, args = where + " AND user_id = ?", [*args, user_id]
        cursor = db.execute(PAGE_POSTS.format(where=where), (*args, limit))
        try:  # SQLite hands over one post at a time; a cut leaves the rest unread
            posts, last_id, cut = fill_page(cursor, limit=limit, max_bytes=max_bytes)
        finally:
            cursor.close()  # an open statement would hold its read lock
        more = cut or (
            len(posts) == limit
            and bool(self._value(f"SELECT EXISTS (SELECT 1 FROM posts WHERE {where} AND id > ?)", (*args, last_id)))
        )
        return PostsPage(json="[" + ",".join(posts) + "]", post_count=len(posts), last_id=last_id, more=more)

    @_store_errors
    def list_posts(self, *, user_id: int | None = None, after_id: int = 0, limit: int = -1) -> list[Post]:
        sql = "SELECT id, user_id, title, body FROM posts WHERE id > ?"
        args = [after_id]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        rows = self._connection().execute(sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [Post(id=id_, user_id=user, title=title, body=body) for id_, user, title, body in rows]

    def merge_fetch(self, lease: Lease, pages: Iterable[Iterable[PageItem]], end: Callable[[], FetchEnd]) -> Job:
        db = self._connection()
        # However many posts it stages, compares or deletes, a merge still running at the deadline is
        # interrupted (SQLITE_INTERRUPT) and rolled back, leaving the invocation the time to record it.
        db.set_progress_handler(self._past_deadline, DEADLINE_CHECK_STEPS)
        try:
            db.executescript(STAGING)
            self._stage(db, pages)
            fetch = end()
            with self._transaction():
                self._hold(lease)
                deleted = db.execute(DELETE_ABSENT).rowcount if fetch.complete else 0
                updated = db.execute(UPDATE_FROM_STAGED).rowcount
                inserted = db.execute(INSERT_NEW_STAGED).rowcount
                unchanged = self._value("SELECT count(*) FROM temp.incoming") - inserted - updated
                db.execute(
                    FINISH_SUCCEEDED,
                    (utc_now(), fetch.fetched, fetch.pages, inserted, updated, unchanged, deleted, fetch.rejected,
                     fetch.error, lease.job.job_id, lease.token),
                )  # fmt: skip
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed: its file was replaced meanwhile
                db.set_progress_handler(None, 0)
                _rollback(db)
            with contextlib.suppress(sqlite3.Error):
                db.executescript("DELETE FROM temp.incoming; DELETE FROM temp.kept;")
        return self._job(lease.job.job_id)

    def _stage(self, db: sqlite3.Connection, pages: Iterable[Iterable[PageItem]]) -> None:
        """Each page in a transaction of its own on the private tables; pages are pulled between them."""
        db.executescript("DELETE FROM temp.incoming; DELETE FROM temp.kept;")
        for page in pages:
            kept: list[tuple[int]] = []
            db.execute("BEGIN")
            db.executemany(STAGE_POST, _posts_of(page, kept))
            db.executemany(STAGE_KEPT, kept)
            db.execute("COMMIT")

    def _hold(self, lease: Lease) -> None:
        """Inside a write transaction: LeaseLost unless `lease` is still its running job's."""
        held = self._db.execute(
            "SELECT 1 FROM jobs WHERE job_id = ? AND status = 'running' AND lease_token = ?",
            (lease.job.job_id, lease.token),
        ).fetchone()
        if held is None:
            raise LeaseLost(self._job(lease.job.job_id))

    # Jobs

    @_store_errors
    def create_job(self, mode: FetchMode, *, lease_seconds: float) -> Job:
        with self._transaction():
            return self._insert_job(mode, lease_seconds)

    def _insert_job(self, mode: FetchMode, lease_seconds: float) -> Job:
        job_id, now = str(uuid.uuid4()), datetime.now(UTC)
        self._db.execute(
            "INSERT INTO jobs (job_id, mode, status, created_at, lease_expires_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, mode.value, JobStatus.QUEUED.value, iso(now), iso(now, lease_seconds)),
        )
        return self._job(job_id)

    @_store_errors
    def claim_job(self, mode: FetchMode, *, fresh_for: float, lease_seconds: float, keep_jobs: int) -> Claim:
        now = datetime.now(UTC)
        with self._transaction() as db:
            db.execute(GIVE_UP_EXPIRED, (iso(now), FetchMode.SYNC.value, ABANDONED_SYNC, ABANDONED_QUEUED, iso(now)))
            active = self._jobs(f"WHERE status IN {IN_PROGRESS} ORDER BY created_at LIMIT 1")
            if active:
                return Claim(active[0], ClaimOutcome.JOINED)
            fresh = self._jobs(
                "WHERE status = ? AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
                JobStatus.SUCCEEDED.value,
                iso(now, -fresh_for),
            )
            if fresh_for > 0 and fresh:
                return Claim(fresh[0], ClaimOutcome.FRESH)
            job = self._insert_job(mode, lease_seconds)
            db.execute(
                f"DELETE FROM jobs WHERE status IN {FINISHED} AND job_id NOT IN"
                " (SELECT job_id FROM jobs ORDER BY created_at DESC, job_id DESC LIMIT ?)",
                (keep_jobs,),
            )
            return Claim(job, ClaimOutcome.STARTED)

    @_store_errors
    def get_job(self, job_id: str) -> Job | None:
        self._connection()
        jobs = self._jobs("WHERE job_id = ?", job_id)
        return jobs[0] if jobs else None

    @_store_errors
    def list_jobs(self) -> list[Job]:
        self._connection()
        return self._jobs("ORDER BY created_at, rowid")

    @_store_errors
    def page_of_jobs(self, *, before: str | None, limit: int) -> JobsPage:
        db = self._connection()
        newest_first = "ORDER BY created_at DESC, job_id DESC LIMIT ?"
        if before is None:
            jobs = self._jobs(newest_first, limit + 1)
        else:
            anchor = db.execute("SELECT created_at FROM jobs WHERE job_id = ?", (before,)).fetchone()
            if anchor is None:
                raise UnknownJob(before)
            jobs = self._jobs(f"WHERE (created_at, job_id) < (?, ?) {newest_first}", anchor[0], before, limit + 1)
        return JobsPage(jobs=jobs[:limit], more=len(jobs) > limit)

    @_store_errors
    def start_job(self, job_id: str, *, lease_seconds: float) -> Lease | None:
        token, now = str(uuid.uuid4()), datetime.now(UTC)
        with self._transaction() as db:
            started = db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, lease_token = ?, lease_expires_at = ?,"
                f" fetched = 0, pages = 0 WHERE job_id = ? AND status IN {IN_PROGRESS}",
                (iso(now), token, iso(now, lease_seconds), job_id),
            ).rowcount
        return Lease(self._job(job_id), token) if started else None

    @_store_errors
    def reissue_lease(self, job_id: str, *, lease_seconds: float) -> Job | None:
        with self._transaction() as db:
            reissued = db.execute(
                "UPDATE jobs SET lease_token = NULL, lease_expires_at = ?"
                f" WHERE job_id = ? AND status IN {IN_PROGRESS}",
                (iso(datetime.now(UTC), lease_seconds), job_id),
            ).rowcount
        return self._job(job_id) if reissued else None

    @_store_errors
    def record_progress(self, lease: Lease, progress: Progress) -> None:
        with self._transaction() as db:
            written = db.execute(
                "UPDATE jobs SET fetched = ?, pages = ? WHERE job_id = ? AND status = 'running' AND lease_token = ?",
                (progress.fetched, progress.pages, lease.job.job_id, lease.token),
            ).rowcount
        if not written:
            raise LeaseLost(self._job(lease.job.job_id))

    @_store_errors
    def fail_job(
        self, job_id: str, reason: str, *, lease: Lease | None = None, progress: Progress | None = None
    ) -> Job:
        token = lease.token if lease else None
        counts = (progress.fetched, progress.pages) if progress else (None, None)
        with self._transaction(FAILURE_WAIT_SECONDS) as db:
            db.execute(FAIL, (utc_now(), reason, *counts, job_id, *IN_PROGRESS, token, token))
        return self._job(job_id)

    def _job(self, job_id: str) -> Job:
        jobs = self._jobs("WHERE job_id = ?", job_id)
        if not jobs:
            raise UnknownJob(job_id)
        return jobs[0]

    def _jobs(self, clause: str, *args: object) -> list[Job]:
        cursor = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs {clause}", args)
        return [Job.model_validate(dict(zip(JOB_FIELDS, row, strict=True))) for row in cursor]


def _posts_of(page: Iterable[PageItem], kept: list[tuple[int]]) -> Iterator[PostRow]:
    """The posts of a page; the ids of the records kept as they were go to `kept`."""
    for item in page:
        if isinstance(item, int):
            kept.append((item,))
        else:
            yield item


def _refuse_unless_a_database(file: Path) -> None:
    """StoreUnavailable unless `file`, where a database was created, still holds one: it may have been
    deleted, emptied or overwritten, and SQLite would make a new database of a missing or empty file."""
    try:
        with file.open("rb") as opened:
            header = opened.read(len(HEADER))
    except FileNotFoundError:
        raise StoreUnavailable(MISSING) from None
    if header != HEADER:
        raise StoreUnavailable(_not_a_database("empty" if not header else "not a SQLite database"))


def _not_a_database(what: str) -> str:
    return NOT_A_DATABASE.format(what=what, marker=DB_MARKER_SUFFIX)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _identity(file: Path) -> tuple[int, int]:
    found = file.stat()
    return found.st_dev, found.st_ino


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is left open. SQLite rolls back by itself on some errors (a full disk): a ROLLBACK
    then fails, and must not hide the error that caused it."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
