"""Readers, two writers, and a process killed mid-fetch: the store stays whole."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aggregator import ingest
from aggregator.config import load
from aggregator.models import FetchMode, JobStatus
from aggregator.store.sqlite import SqliteStore
from local.sample_upstream import SampleUpstream, make_posts
from tests.helpers import ROOT, queued_job


def paged(upstream, page_size=10, attempts=1):
    return load({"UPSTREAM_URL": f"{upstream.url}?_page=1&_limit={page_size}", "UPSTREAM_ATTEMPTS": str(attempts)})


def test_readers_during_a_fetch_see_the_data_before_or_after_it_never_half(tmp_path, upstream):
    path = str(tmp_path / "posts.db")
    ingest.fetch_now(SqliteStore(path), paged(upstream), seconds_left=30)
    for post in upstream.posts:
        post["title"] = "v2"
    upstream.posts += make_posts(50, start=101)
    upstream.delay = 0.02
    writer = threading.Thread(target=lambda: ingest.fetch_now(SqliteStore(path), paged(upstream), seconds_left=30))
    reader = SqliteStore(path)
    seen = set()

    def look():
        posts = reader.list_posts()
        seen.add((len(posts), {p.title == "v2" for p in posts[:100]} == {len(posts) == 150}))

    writer.start()
    while writer.is_alive():
        look()
    writer.join()
    look()
    assert seen == {(100, True), (150, True)}


def test_two_writers_at_once_both_finish(tmp_path):
    path = str(tmp_path / "posts.db")
    with SampleUpstream(300) as first, SampleUpstream(300) as second:
        first.posts = make_posts(300)
        second.posts = make_posts(300, start=1000)
        first.delay = second.delay = 0.01
        finished = []

        def fetch(upstream):
            store = SqliteStore(path)
            job = queued_job(store, FetchMode.TASK)
            finished.append(ingest.run_job(store, paged(upstream, 20), job.job_id, budget=25, lease_seconds=60).job)

        threads = [threading.Thread(target=fetch, args=(u,)) for u in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [job.status for job in finished] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    # each mirrors its upstream: the one that merged last replaced the other's posts
    assert sorted(job.deleted for job in finished) == [0, 300]
    assert SqliteStore(path).count_posts() == 300


KILLED_FETCH = """
import sys
import pytest

from aggregator import ingest
from aggregator.config import load
from aggregator.store.sqlite import SqliteStore
settings = load({"UPSTREAM_URL": sys.argv[2], "UPSTREAM_ATTEMPTS": "1"})
ingest.fetch_now(SqliteStore(sys.argv[1]), settings, seconds_left=30)
"""


def run_and_kill(path, url, when):
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_FETCH, path, url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common" / "python")},
    )
    try:
        when()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_process_killed_mid_fetch_leaves_the_store_as_it_was(tmp_path):
    path = str(tmp_path / "posts.db")
    with SampleUpstream(100) as upstream:
        ingest.fetch_now(SqliteStore(path), paged(upstream), seconds_left=30)
        upstream.posts = make_posts(100, start=51)
        upstream.posts[0]["title"] = "changed"
        upstream.delay = 0.05
        served = upstream.requests
        run_and_kill(
            path, f"{upstream.url}?_page=1&_limit=10", lambda: wait_until(lambda: upstream.requests >= served + 3)
        )
    store = SqliteStore(path)
    assert store.count_posts() == 100
    assert store.list_posts()[50].title == "post 51 title"
    assert [j.status for j in store.list_jobs()] == [JobStatus.SUCCEEDED, JobStatus.RUNNING]


def wait_for(moment, path, journal, last_page_served):
    """Wait for a moment of the merge, seen from outside: its rollback journal, then its writes to the file,
    or its job recorded succeeded (the journal of a commit may come and go between two looks)."""
    wait_until(last_page_served)

    def committed():  # the refetch's job recorded succeeded, beside the first fetch's
        return succeeded_jobs(path) == 2

    if moment == "committed":
        wait_until(committed)
        return
    wait_until(lambda: journal.exists() or committed())
    if moment == "writing":
        unwritten = path.stat().st_mtime_ns
        wait_until(lambda: path.stat().st_mtime_ns != unwritten or committed())


def succeeded_jobs(path):
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0)) as db:
            return db.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
    except sqlite3.OperationalError:  # the merge holds its lock
        return 0


@pytest.mark.parametrize(
    ("moment", "applied"), [("begun", False), ("writing", False), ("committed", True)], ids=lambda v: str(v)
)
def test_a_process_killed_while_merging_leaves_all_or_nothing(tmp_path, moment, applied):
    posts = 40_000  # a merge that outgrows SQLite's 2 MB page cache, so it writes before its commit
    for attempt in range(5):  # on a loaded machine the merge may commit before the kill lands: kill another
        path = tmp_path / f"posts{attempt}.db"
        journal = Path(f"{path}-journal")
        kill_while_merging(path, journal, posts, moment)
        if applied or journal.exists():  # the kill landed inside the merge's transaction
            break
    else:
        pytest.fail(f"in 5 attempts no kill landed while the merge was {moment}")
    store = SqliteStore(str(path))  # opening rolls back a hot journal, as any later reader would
    stored = store.list_posts()
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(stored) == posts
    assert {post.title == "v2" for post in stored} == {applied}  # every post old, or every post new


def kill_while_merging(path, journal, posts, moment, page=5_000):
    """Store `posts`, then kill a process refetching them all changed at `moment` of its merge."""
    with SampleUpstream(posts, page_size=page) as upstream:
        ingest.fetch_now(SqliteStore(str(path)), paged(upstream, page), seconds_left=30)
        for post in upstream.posts:
            post["title"] = "v2"
        last_page = upstream.requests + posts // page
        run_and_kill(
            str(path), upstream.url, lambda: wait_for(moment, path, journal, lambda: upstream.requests >= last_page)
        )
