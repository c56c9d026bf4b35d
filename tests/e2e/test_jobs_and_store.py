"""Jobs and the store through the local stack over HTTP: a job given up on never writes, nothing strands
fetching across kills and restarts, a deleted database file is never recreated empty, a full database
says so, posts gone upstream are deleted, progress shows while a job runs, and the history pages."""

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from aggregator.config import load
from aggregator.store.sqlite import SqliteStore
from local.api_server import ApiServer
from local.console import Console
from local.sample_upstream import SampleUpstream, make_posts
from local.stack import LocalStack, Options
from tests.helpers import merge
from tests.running_stack import ROOT, user_environment

pytestmark = pytest.mark.e2e
ABANDONED_BY_A_RESTART = "abandoned: the local stack stopped while it ran"


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def orphans():
    """Instance processes a killed stack left running; the test waits for them, and they end with it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads a killed stack's instances from /proc")
def test_a_sync_job_given_up_on_after_a_crash_never_writes_over_a_newer_fetch(start_stack, tmp_path, orphans):
    with SampleUpstream(100) as upstream:
        crashed = start_stack(UPSTREAM_URL=upstream.url, UPSTREAM_TIMEOUT="25")
        stale = [dict(post, title="stale") for post in upstream.posts]
        upstream.then_respond(200, stale, delay=10)  # the crashed stack's fetch gets its answer late
        fetch = threading.Thread(target=request_quietly, args=(crashed, "POST", "/fetch?mode=sync"), daemon=True)
        fetch.start()
        wait_until(lambda: upstream.requests == 1)
        orphans += crashed.kill()  # kill -9: its instance runs on, and will try to merge the stale posts
        [given_up] = SqliteStore(str(tmp_path / "aggregator.db")).list_jobs()

        restarted = start_stack(UPSTREAM_URL=upstream.url, UPSTREAM_TIMEOUT="25")
        restarted.wait_for_output(f"job {given_up.job_id} (sync) was running when the last run stopped: failed")
        status, job = restarted.json("POST", "/fetch?mode=sync")
        assert (status, job["status"], job["inserted"]) == (200, "succeeded", 100)  # not 202 joined to a dead job
        assert any(map(running, orphans)), "the orphan must still be fetching when the newer fetch is done"
        wait_until(lambda: not any(map(running, orphans)))  # its fetch ended and its merge was tried

        titles = {post["title"] for post in restarted.json("GET", "/data")[1]}
        assert titles == {f"post {i} title" for i in range(1, 101)}
        status, old = restarted.json("GET", f"/fetch/status/{given_up.job_id}")
        assert (old["status"], old["error"], old["inserted"]) == ("failed", ABANDONED_BY_A_RESTART, 0)


def request_quietly(stack, method: str, path: str) -> None:
    with contextlib.suppress(OSError):
        stack.request(method, path)


def test_a_task_job_whose_queue_died_is_sent_again_at_the_next_start(start_stack, fake_upstream, tmp_path):
    db = str(tmp_path / "aggregator.db")
    invoked = subprocess.run(
        [sys.executable, "-m", "local", "invoke", "FetchApiFunction", "-e", "events/post_fetch_task.json"],
        cwd=ROOT,
        env={**user_environment(), "DB_PATH": db, "UPSTREAM_URL": fake_upstream.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    job = json.loads(json.loads(invoked.stdout)["body"])
    assert job["status"] == "queued", invoked.stderr  # its queue lived as long as the invocation
    stack = start_stack(UPSTREAM_URL=fake_upstream.url)
    stack.wait_for_output(f"job {job['job_id']} (task) was queued when the last run stopped: sent to the queue again")
    done = stack.wait_for_job(job["job_id"])
    assert (done["status"], done["fetched"]) == ("succeeded", 100)
    status, headers, _ = stack.request("POST", "/fetch?mode=task")
    assert (status, headers["X-Fetch-Outcome"]) == (202, "started")


def test_a_deleted_database_file_is_refused_never_recreated_and_a_replaced_one_is_read(
    start_stack, fake_upstream, tmp_path
):
    path = tmp_path / "aggregator.db"
    stack = start_stack(UPSTREAM_URL=fake_upstream.url)
    assert stack.json("POST", "/fetch?mode=sync")[0] == 200
    path.rename(tmp_path / "moved-away.db")
    for method, target in [("GET", "/data"), ("GET", "/fetch/jobs"), ("POST", "/fetch?mode=sync")]:
        status, answer = stack.json(method, target)
        assert status == 503 and answer["message"].startswith("the database is unavailable: the database file is"), (
            target,
            answer,
        )
    assert not path.exists()

    replacement = SqliteStore(str(tmp_path / "replacement.db"))
    merge(replacement, [[(7, 1, "seven", "b"), (8, 1, "eight", "b")]])
    replacement.close()
    os.replace(tmp_path / "replacement.db", path)
    assert [post["title"] for post in stack.json("GET", "/data")[1]] == ["seven", "eight"]

    assert stack.stop() == 0
    path.unlink()  # gone again, with no stack running: the next start refuses it too
    restart = subprocess.run(
        [sys.executable, "-m", "local"],
        cwd=ROOT,
        env={**user_environment(), "PORT": "0", "DB_PATH": str(path), "UPSTREAM_URL": fake_upstream.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert restart.returncode == 1
    assert f"{path}: the database is unavailable: the database file is missing, though" in restart.stderr
    assert not path.exists()


def test_a_database_file_overwritten_or_emptied_under_the_stack_is_refused_in_the_error_shape(
    start_stack, fake_upstream, tmp_path
):
    path = tmp_path / "aggregator.db"
    stack = start_stack(UPSTREAM_URL=fake_upstream.url)
    assert stack.json("POST", "/fetch?mode=sync")[0] == 200
    path.write_bytes(b"garbage\n")  # `echo garbage > $DB_PATH`: the open file, overwritten
    for method, target in [("GET", "/data?limit=1"), ("GET", "/fetch/jobs"), ("POST", "/fetch?mode=sync")]:
        status, answer = stack.json(method, target)
        assert (status, answer["statusCode"]) == (503, 503), (target, answer)
        assert answer["message"].startswith("the database is unavailable: the database file is not a SQLite database")
    path.unlink()
    path.touch()  # `rm $DB_PATH; touch $DB_PATH`
    for method, target in [("GET", "/data"), ("POST", "/fetch?mode=sync")]:
        status, answer = stack.json(method, target)
        assert status == 503 and answer["message"].startswith("the database is unavailable: the database file is empty")
    assert path.stat().st_size == 0  # never made into a new database
    assert "Traceback" not in stack.output


def test_a_read_waits_while_a_merge_commits_then_answers(stack):
    assert stack.json("POST", "/fetch?mode=sync")[0] == 200
    committing = sqlite3.connect(stack.env["DB_PATH"], isolation_level=None)
    committing.execute("BEGIN EXCLUSIVE")  # the lock a merge holds while it commits, held longer
    answers = []
    read = threading.Thread(target=lambda: answers.append(stack.json("GET", "/data?limit=1")))
    try:
        read.start()
        read.join(1.0)
        assert read.is_alive()  # it waits for the commit...
    finally:
        committing.execute("COMMIT")  # the stack is the module's: the lock never outlives the test
        committing.close()
    read.join(10)
    [(status, posts)] = answers  # ...then answers with the data
    assert (status, [post["id"] for post in posts]) == (200, [1])


def test_a_full_database_fails_the_fetch_with_its_own_reason_and_keeps_its_posts(start_stack):
    with SampleUpstream(100) as upstream:
        stack = start_stack(UPSTREAM_URL=upstream.url, DB_MAX_MB="1")
        assert stack.json("POST", "/fetch?mode=sync")[0] == 200
        upstream.posts = [dict(post, body="x" * 2000) for post in make_posts(1000)]
        status, job = stack.json("POST", "/fetch?mode=sync")
        assert (status, job["status"]) == (500, "failed")
        assert job["error"] == "database error: database or disk is full (SQLITE_FULL; DB_MAX_MB is 1)"
        assert [len(post["body"]) < 2000 for post in stack.json("GET", "/data")[1]] == [True] * 100


def test_posts_gone_upstream_are_deleted_and_counted(stack, fake_upstream):
    assert stack.json("POST", "/fetch?mode=sync")[1]["status"] == "succeeded"
    fake_upstream.then_respond(200, [*fake_upstream.posts[:10], *fake_upstream.posts[13:]])
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["deleted"], job["unchanged"]) == (200, 3, 97)
    assert [post["id"] for post in stack.json("GET", "/data")[1]][9:11] == [10, 14]
    assert stack.json("POST", "/fetch?mode=sync")[1]["inserted"] == 3  # back upstream, back here
    broken = [dict(fake_upstream.posts[0], id="1"), *fake_upstream.posts[1:50]]  # an id that cannot be read
    fake_upstream.then_respond(200, broken)
    status, job = stack.json("POST", "/fetch?mode=sync")
    assert (status, job["rejected"], job["deleted"]) == (200, 1, 0)
    assert len(stack.json("GET", "/data")[1]) == 100


def test_a_running_job_shows_its_progress(stack, fake_upstream):
    fake_upstream.page_size, fake_upstream.delay = 10, 0.25
    try:
        job = stack.json("POST", "/fetch?mode=task")[1]
        seen = []
        while not seen or seen[-1]["status"] not in ("succeeded", "failed"):
            seen.append(stack.json("GET", f"/fetch/status/{job['job_id']}")[1])
            time.sleep(0.05)
    finally:
        fake_upstream.page_size, fake_upstream.delay = 0, 0.0
    during = [(j["fetched"], j["pages"]) for j in seen if j["status"] == "running"]
    assert any(0 < fetched < 100 and 0 < pages < 10 for fetched, pages in during), during
    assert during == sorted(during)
    assert (seen[-1]["fetched"], seen[-1]["pages"]) == (100, 10)
    stack.wait_for_output(f"job {job['job_id']} attempt 1/3: succeeded (fetched 100, pages 10, inserted 0,")


def test_the_history_lists_jobs_newest_first_with_a_link_to_the_next_page(stack):
    made = [stack.json("POST", "/fetch?mode=sync")[1]["job_id"] for _ in range(3)]
    status, headers, body = stack.request("GET", "/fetch/jobs?limit=2")
    assert status == 200 and [job["job_id"] for job in json.loads(body)] == made[:0:-1]
    assert headers["Link"] == f'</fetch/jobs?limit=2&before={made[1]}>; rel="next"'
    status, older = stack.json("GET", f"/fetch/jobs?limit=2&before={made[1]}")
    assert status == 200 and older[0]["job_id"] == made[0]
    assert stack.json("GET", "/fetch/jobs?before=0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10")[0] == 404
    assert stack.json("GET", "/fetch/jobs?limit=101")[0] == 422
    status, headers, _ = stack.request("DELETE", "/fetch/jobs")
    assert (status, headers["Allow"]) == (405, "GET")


def test_locally_a_queued_jobs_lease_counts_the_local_wait_between_deliveries(tmp_path):
    stack = LocalStack(
        Options(db_path=str(tmp_path / "x.db"), retry_delay=7, reload=False), Console(stream=io.StringIO())
    )
    stack.deploy()
    try:
        for name in ("FetchApiFunction", "SchedulerFunction", "WorkerFunction"):
            settings = load(stack.deployment.pools[name].sandbox.environment)
            worker_timeout = stack.template.functions["WorkerFunction"].timeout
            assert (settings.worker_timeout, settings.queue_visibility_timeout) == (worker_timeout, worker_timeout + 7)
    finally:
        stack.stop()


def run_a_task_in_process(upstream: SampleUpstream, db_path: str) -> str:
    """Start a stack in this process, send it a task, stop it; the task's status, at most 15 s after it was sent
    (a first delivery, not a redelivery after the visibility timeout)."""
    options = Options(upstream=upstream.url, db_path=db_path, port=0, reload=False)
    stack = LocalStack(options, Console(stream=io.StringIO())).start()
    try:
        api = next(part for part in stack.parts if isinstance(part, ApiServer)).url
        with urllib.request.urlopen(urllib.request.Request(f"{api}/fetch?mode=task", method="POST")) as answer:
            job_id = json.load(answer)["job_id"]
        status, deadline = "queued", time.monotonic() + 15
        while status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            with urllib.request.urlopen(f"{api}/fetch/status/{job_id}") as answer:
                status = json.load(answer)["status"]
        return status
    finally:
        stack.stop()


def test_a_stack_stopped_in_process_takes_none_of_the_next_stacks_messages(tmp_path):
    with SampleUpstream(10) as upstream:
        assert run_a_task_in_process(upstream, str(tmp_path / "first.db")) == "succeeded"
        assert run_a_task_in_process(upstream, str(tmp_path / "second.db")) == "succeeded"
