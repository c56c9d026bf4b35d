"""`make bench`: ingest, cold start, warm reads, memory and round trip, each against its baseline in one run.

Absolute times drift on a shared machine; the ratios, measured side by side, hold.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from bench import dynamodb
from local.console import Console
from local.deployment import CREDENTIALS
from local.instance import Instance
from local.runtime import LambdaContext, load_handler
from local.sample_upstream import SampleUpstream, tiny_posts_page, wide_record_page
from local.sandbox import Sandbox, sandbox
from local.stack import LocalStack, Options
from local.template import ROOT, Function, load
from tests.helpers import merge
from tests.running_stack import RunningStack, user_environment

EVENTS = ROOT / "events"
TEMPLATE = load()
SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, title TEXT NOT NULL,
                                  body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id, id);
"""
FLOOR_UPSERT = """
INSERT INTO posts (id, user_id, title, body) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, title = excluded.title, body = excluded.body
"""
rows: list[tuple[str, str, str, str]] = []


def report(name: str, ours: str, baseline: str, ratio: float | None, goal: str) -> None:
    verdict = "" if ratio is None else f"{ratio:.2f}x"
    rows.append((name, ours, baseline, verdict, goal))
    print(f"  {name:<44} {ours:>12} {baseline:>16} {verdict:>8}   goal {goal}", flush=True)


@contextmanager
def sample_upstream(count: int, page_size: int, delay: float = 0.0):
    """The sample upstream in its own process, so serving it does not share this one's interpreter lock."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.sample_upstream",
            "--port",
            "0",
            "--count",
            str(count),
            "--page-size",
            str(page_size),
            "--delay",
            str(delay),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = process.stdout.readline().split()[2]
    try:
        yield url
    finally:
        process.terminate()
        process.wait()


def handler(function: str):
    """The function's handler, called in this process with its logs and metric lines kept off the table."""
    spec = TEMPLATE.functions[function]
    loaded = load_handler(spec.code_uri, spec.handler, function)
    from aggregator.observability import logger

    logger.setLevel(logging.ERROR)  # once: a level set per call clears logging's caches, a cost Lambda never pays

    def quiet(event: dict, context: LambdaContext):
        with contextlib.redirect_stdout(io.StringIO()):
            return loaded(event, context)

    return quiet


def event(name: str, **query) -> dict:
    body = json.loads((EVENTS / f"{name}.json").read_text())
    if query:
        body["queryStringParameters"] = {k: str(v) for k, v in query.items()}
        body["multiValueQueryStringParameters"] = {k: [str(v)] for k, v in query.items()}
    return body


def use_settings(**env: str) -> None:
    from aggregator import config

    os.environ.update(env)
    config.settings.cache_clear()


def floor_load(url: str, path: str) -> None:
    """The simplest correct loader: a GET per page, json.loads, one executemany, one transaction, no checks."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(SCHEMA)
    session = requests.Session()
    db.execute("BEGIN")
    while url:
        response = session.get(url, timeout=30)
        db.executemany(
            FLOOR_UPSERT, [(p["id"], p["userId"], p["title"], p["body"]) for p in json.loads(response.content)]
        )
        url = response.links.get("next", {}).get("url")
    db.execute("COMMIT")
    db.close()


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_ingest(workdir: Path) -> str:
    fetch = handler("FetchApiFunction")
    with sample_upstream(100_000, 1_000) as url:
        floors, firsts, seconds = [], [], []
        for run in range(3):
            floors.append(timed(lambda r=run: floor_load(url, str(workdir / f"floor{r}.db"))))
            use_settings(UPSTREAM_URL=url, DB_PATH=str(workdir / f"ours{run}.db"), UPSTREAM_TIMEOUT="25")
            answers = []
            firsts.append(timed(lambda a=answers: a.append(fetch(event("post_fetch_sync"), LambdaContext("fetch")))))
            seconds.append(timed(lambda a=answers: a.append(fetch(event("post_fetch_sync"), LambdaContext("fetch")))))
            first, second = (json.loads(a["body"]) for a in answers)
            assert (first["inserted"], second["unchanged"]) == (100_000, 100_000), (first, second)
    floor = statistics.median(floors)
    report(
        "ingest 100k posts, 100 pages",
        f"{statistics.median(firsts):.3f} s",
        f"{floor:.3f} s",
        statistics.median(firsts) / floor,
        "<= 1.5x floor",
    )
    report(
        "  again, unchanged (no writes)",
        f"{statistics.median(seconds):.3f} s",
        f"{floor:.3f} s",
        statistics.median(seconds) / floor,
        "< first",
    )
    return str(workdir / "ours0.db")


COLD_START_EVENTS = {
    "ReadApiFunction": "get_data",
    "FetchApiFunction": "post_fetch_sync",
    "DocsFunction": "get_openapi",
    "WorkerFunction": "sqs_fetch_job",
    "SchedulerFunction": "schedule",
}


def cold_start_seconds(box: Sandbox, payload: bytes) -> float:
    """Seconds from spawning an instance to its first answer, as Lambda's cold start (init and first call)."""
    started = time.perf_counter()
    instance = Instance(box, lambda *_: None)
    try:
        result = instance.invoke(payload)
        assert result.response is not None or result.error, result
        return time.perf_counter() - started
    finally:
        instance.stop()


def anchor_sandbox(client: str) -> Sandbox:
    code = ROOT / "bench" / "anchor"
    anchor = Function("HelloWorldFunction", code, "app.lambda_handler", 3, {}, {}, memory_size=128)
    return sandbox(anchor, {"POWERTOOLS_SERVICE_NAME": "hello"}, client, CREDENTIALS)


def hello_event() -> bytes:
    hello = event("get_data")
    hello |= {"path": "/hello", "resource": "/hello"}
    hello["requestContext"] |= {"path": "/hello", "resourcePath": "/hello"}
    return json.dumps(hello).encode()


def bench_cold_starts(workdir: Path) -> None:
    with sample_upstream(100, 0) as url:
        anchor = 0.0
        for backend in ("sqlite", "dynamodb"):
            options = Options(
                upstream=url, db_path=str(workdir / "cold.db"), reload=False, overrides={"STORE_BACKEND": backend}
            )
            stack = LocalStack(options, Console(stream=io.StringIO()))
            deployment = stack.deploy()
            try:
                if not anchor:
                    anchor_box = anchor_sandbox(deployment.client)
                    anchor = statistics.median(cold_start_seconds(anchor_box, hello_event()) for _ in range(7))
                for name, event_name in COLD_START_EVENTS.items():
                    if backend == "dynamodb" and name != "ReadApiFunction":
                        continue
                    payload = (EVENTS / f"{event_name}.json").read_bytes()
                    box = deployment.sandbox(name)
                    seconds = statistics.median(cold_start_seconds(box, payload) for _ in range(7))
                    goal = "<= 0.5x anchor" if name == "ReadApiFunction" else "<= 1.0x anchor"
                    label = f"cold start {name}" + (", DynamoDB" if backend == "dynamodb" else "")
                    goal = "report (imports botocore)" if backend == "dynamodb" else goal
                    report(label, f"{seconds * 1000:.0f} ms", f"{anchor * 1000:.0f} ms", seconds / anchor, goal)
            finally:
                stack.stop()


def per_call(action, calls: int) -> float:
    action()
    return statistics.median(timed(action) for _ in range(calls))


def bench_warm_reads(big_db: str, workdir: Path) -> None:
    read = handler("ReadApiFunction")
    small_db = str(workdir / "small.db")
    with sample_upstream(100, 0) as url:
        floor_load(url, small_db)
    for label, path in (("100k posts, first page", big_db), ("100 posts, all", small_db)):
        use_settings(DB_PATH=path)
        bare = sqlite3.connect(path)
        for query, where, args in (({}, "", ()), ({"user_id": 3}, "AND user_id = ?", (3,))):

            def baseline(where=where, args=args, bare=bare):
                cursor = bare.execute(
                    f"SELECT id, user_id, title, body FROM posts WHERE id > 0 {where} ORDER BY id LIMIT 100", args
                )
                json.dumps([dict(zip(("id", "user_id", "title", "body"), r, strict=True)) for r in cursor])

            ours = per_call(lambda q=query: read(event("get_data", **q), LambdaContext("read")), 300)
            floor = per_call(baseline, 300)
            name = f"GET /data{'?user_id=3' if query else ''}, {label}"
            report(name, f"{ours * 1e6:.0f} us", f"{floor * 1e6:.0f} us", ours / floor, "<= 1.5x bare")


class Client:
    """A keep-alive HTTP client of the local stack, as a load generator would be."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)

    def call(self, method: str, path: str) -> tuple[int, bytes]:
        self.connection.request(method, path)
        response = self.connection.getresponse()
        return response.status, response.read()


def stack_on(url: str, db_path: Path) -> RunningStack:
    env = {"UPSTREAM_URL": url, "DB_PATH": str(db_path), "UPSTREAM_TIMEOUT": "25", "POWERTOOLS_LOG_LEVEL": "ERROR"}
    return RunningStack(env, args=("--no-reload",))


def bench_stack_ingest_and_reads(workdir: Path) -> None:
    """The same ingest and read through `make run` over HTTP: each function in its own instance process."""
    with sample_upstream(100_000, 1_000) as url:
        floors, ours = [], []
        for run in range(3):
            floors.append(timed(lambda r=run: floor_load(url, str(workdir / f"stack-floor{r}.db"))))
            stack = stack_on(url, workdir / f"stack{run}.db")
            try:
                client = Client(stack.url)
                client.call("GET", "/data?limit=1")
                assert client.call("POST", "/fetch?mode=warm")[0] == 422  # both instances warm, nothing fetched
                answer: list[tuple[int, bytes]] = []
                ours.append(timed(lambda c=client, a=answer: a.append(c.call("POST", "/fetch?mode=sync"))))
                assert answer[0][0] == 200 and json.loads(answer[0][1])["inserted"] == 100_000, answer
                if run == 0:
                    bench_reads_over_http(client, str(workdir / "stack0.db"))
            finally:
                stack.stop()
    floor = statistics.median(floors)
    ingest = statistics.median(ours)
    report("ingest 100k posts via make run", f"{ingest:.3f} s", f"{floor:.3f} s", ingest / floor, "<= 1.25x floor")


def bench_reads_over_http(client: Client, db_path: str) -> None:
    read = handler("ReadApiFunction")
    use_settings(DB_PATH=db_path)
    over_http = per_call(lambda: client.call("GET", "/data"), 300)
    in_process = per_call(lambda: read(event("get_data"), LambdaContext("read")), 300)
    overhead = f"+{(over_http - in_process) * 1e6:.0f} us"
    report(
        "GET /data via make run, warm",
        f"{over_http * 1e6:.0f} us",
        f"{in_process * 1e6:.0f} us",
        over_http / in_process,
        f"report ({overhead} for HTTP + runtime)",
    )


def bench_reads_during_a_fetch(workdir: Path) -> None:
    """GET /data while an 8 s sync fetch runs (8 pages, 1 s each): reads must not wait for it."""
    with sample_upstream(8_000, 1_000, delay=1.0) as url:
        stack = stack_on(url, workdir / "during.db")
        try:
            reader, fetcher = Client(stack.url), Client(stack.url)
            reader.call("GET", "/data?limit=1")
            fetch = threading.Thread(target=fetcher.call, args=("POST", "/fetch?mode=sync"))
            fetch.start()
            times = []
            while fetch.is_alive():
                times.append(timed(lambda: reader.call("GET", "/data")))
                time.sleep(0.02)
            fetch.join()
        finally:
            stack.stop()
    report(
        f"GET /data during an 8 s fetch, {len(times)}",
        f"max {max(times) * 1000:.1f} ms",
        f"p50 {statistics.median(times) * 1000:.1f} ms",
        None,
        "every read < 50 ms",
    )


def peak_rss_kib(url: str, path: str) -> int:
    """Peak RSS of a fresh process that makes one sync fetch through the real handler."""
    return int(run_child("--fetch-once", url, path))


def run_child(*args: str, **env: str) -> str:
    """The figure `python -m bench.run ARGS REPORT` writes to the file REPORT, in a fresh interpreter.

    A file of its own, not stdout: what the child runs may print too (the fetch handler's metrics line).
    """
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "figure"
        command = [sys.executable, "-m", "bench.run", *args, str(report)]
        subprocess.run(command, cwd=ROOT, env={**user_environment(), **env}, capture_output=True, check=True)
        return report.read_text()


def child_fetch_once(url: str, path: str, report: str) -> None:
    use_settings(UPSTREAM_URL=url, DB_PATH=path, UPSTREAM_TIMEOUT="25")
    answer = handler("FetchApiFunction")(event("post_fetch_sync"), LambdaContext("fetch", timeout=29))
    assert answer["statusCode"] == 200, answer
    # VmHWM, not ru_maxrss: the latter keeps the peak of the parent this process was forked from.
    status = Path("/proc/self/status").read_text()
    Path(report).write_text(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def bench_memory(workdir: Path) -> None:
    peaks = {}
    for count in (10_000, 100_000):
        with sample_upstream(count, 1_000) as url:
            peaks[count] = peak_rss_kib(url, str(workdir / f"memory{count}.db"))
    report(
        "peak RSS, fetch of 100k vs 10k",
        f"{peaks[100_000] / 1024:.1f} MiB",
        f"{peaks[10_000] / 1024:.1f} MiB",
        peaks[100_000] / peaks[10_000],
        "<= 1.2x",
    )


def bench_largest_read_memory(workdir: Path) -> None:
    """Peak memory of the largest read, GET /data?limit=1000 over 1,000 posts of the largest size, in a fresh
    process, beside the bytes of its answer as Lambda counts them and that answer's budget."""
    from aggregator.ingest import MAX_POST_CHARS
    from aggregator.routes.reads import LAMBDA_RESPONSE_LIMIT
    from aggregator.store.sqlite import SqliteStore

    path = str(workdir / "largest.db")
    store = SqliteStore(path)
    body = "x" * MAX_POST_CHARS
    merge(store, [[(i, 1, "", body) for i in range(n, n + 50)] for n in range(1, 1001, 50)])
    store.close()
    read = json.loads(run_child("--read-largest", path))
    memory = TEMPLATE.functions["ReadApiFunction"].memory_size
    report(
        "peak RSS, GET /data?limit=1000",
        f"{read['peak_kib'] / 1024:.1f} MiB",
        f"{read['answer_bytes']:,} B",
        None,
        f"{read['posts']} posts; answer <= {LAMBDA_RESPONSE_LIMIT:,} B, RSS < {memory} MB",
    )


def child_read_largest(path: str, figures: str) -> None:
    use_settings(DB_PATH=path)
    answer = handler("ReadApiFunction")(event("get_data", limit=1000), LambdaContext("read"))
    assert answer["statusCode"] == 200, answer["statusCode"]
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    answer_bytes = len(json.dumps(answer, ensure_ascii=False).encode())  # as Lambda's runtime sends it
    result = {"peak_kib": peak, "answer_bytes": answer_bytes, "posts": len(json.loads(answer["body"]))}
    Path(figures).write_text(json.dumps(result))


def bench_page_memory(workdir: Path) -> None:
    """Peak RSS of one fetch whose single page is the largest allowed: of tiny posts (the most records),
    then of one record of empty lists (the most memory to decode for its bytes)."""
    from aggregator import config

    settings = config.load()
    budget_kib = settings.memory_mb * 1024 * config.MEMORY_BUDGET_SHARE
    size = f"{settings.max_page_bytes / 2**20:.0f} MiB"
    for shape, page_of in (("tiny posts", tiny_posts_page), ("wide record", wide_record_page)):
        with SampleUpstream(1) as upstream:
            upstream.then_respond(200, page_of(settings.max_page_bytes))
            peak = peak_rss_kib(upstream.url, str(workdir / "largest_page.db"))
        report(
            f"peak RSS, {size} page, {shape}",
            f"{peak / 1024:.1f} MiB",
            f"budget {budget_kib / 1024:.0f} MiB",
            peak / budget_kib,
            f"<= 1.0x budget, 3/4 of {settings.memory_mb} MB",
        )


def bench_dynamodb(workdir: Path) -> None:
    """The DynamoDB backend: times on moto beside SQLite's, and what DynamoDB would bill (see bench/dynamodb.py)."""
    handlers = {"fetch": handler("FetchApiFunction"), "read": handler("ReadApiFunction")}
    events = {"fetch": event("post_fetch_sync"), "page": event("get_data"), "user page": event("get_data", user_id=3)}
    with sample_upstream(dynamodb.POSTS, 1_000) as url:
        dynamodb.run(url, workdir, handlers, events, report)


def bench_round_trip(workdir: Path) -> None:
    stack = RunningStack({"UPSTREAM": "sample", "DB_PATH": str(workdir / "stack.db"), "POWERTOOLS_LOG_LEVEL": "ERROR"})
    try:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            job = stack.json("POST", "/fetch?mode=task")[1]
            stack.wait_for_job(job["job_id"], poll=0.002)
            times.append(time.perf_counter() - started)
    finally:
        stack.stop()
    p95 = sorted(times)[int(len(times) * 0.95) - 1]
    report(
        "task fetch round trip, median",
        f"{statistics.median(times) * 1000:.0f} ms",
        f"p95 {p95 * 1000:.0f} ms",
        None,
        "median < 500 ms",
    )


def main() -> None:
    python, sqlite = platform.python_version(), sqlite3.sqlite_version
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {python}, SQLite {sqlite}")
    print(f"  {'benchmark':<44} {'ours':>12} {'baseline':>16} {'ratio':>8}")
    os.environ.update(POWERTOOLS_LOG_LEVEL="ERROR", AWS_DEFAULT_REGION="us-east-1", UPSTREAM_ATTEMPTS="3")
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        big_db = bench_ingest(workdir)
        bench_stack_ingest_and_reads(workdir)
        bench_cold_starts(workdir)
        bench_warm_reads(big_db, workdir)
        bench_dynamodb(workdir)
        bench_reads_during_a_fetch(workdir)
        bench_memory(workdir)
        bench_largest_read_memory(workdir)
        bench_page_memory(workdir)
        bench_round_trip(workdir)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fetch-once"]:
        child_fetch_once(*sys.argv[2:5])
    elif sys.argv[1:2] == ["--read-largest"]:
        child_read_largest(*sys.argv[2:4])
    else:
        main()
