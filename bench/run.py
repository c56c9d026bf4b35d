"""`make bench`: ingest, cold start, warm reads, memory and round trip, each against its baseline in one run.

Absolute times drift on a shared machine; the ratios, measured side by side, hold.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.running_stack import RunningStack, user_environment
from local.runtime import LambdaContext, load_handler
from local.template import ROOT, load

LAYER = ROOT / "layers" / "common" / "python"
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
    print(f"  {name:<34} {ours:>16} {baseline:>16} {verdict:>7}   goal {goal}", flush=True)


@contextmanager
def sample_upstream(count: int, page_size: int):
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
    spec = TEMPLATE.functions[function]
    return load_handler(spec.code_uri, spec.handler, function)


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


def import_seconds(module: Path) -> float:
    """Seconds to import `module` in a fresh interpreter, as Lambda's init phase does."""
    return float(run_child("--import", str(module), AWS_LAMBDA_FUNCTION_NAME="bench", POWERTOOLS_SERVICE_NAME="bench"))


def child_import(module: str) -> None:
    sys.path.insert(0, str(LAYER))
    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location("app", module)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    print(time.perf_counter() - started)


def bench_cold_starts() -> None:
    modules = {"anchor (hello world)": ROOT / "bench" / "anchor" / "app.py"}
    modules |= {name: f.code_uri / "app.py" for name, f in TEMPLATE.functions.items()}
    medians = {name: statistics.median(import_seconds(path) for _ in range(7)) for name, path in modules.items()}
    anchor = medians.pop("anchor (hello world)")
    for name, seconds in medians.items():
        goal = "<= 0.5x anchor" if name == "ReadApiFunction" else "<= 1.0x anchor"
        report(f"cold import {name}", f"{seconds * 1000:.0f} ms", f"{anchor * 1000:.0f} ms", seconds / anchor, goal)


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


def peak_rss_kib(url: str, path: str) -> int:
    """Peak RSS of a fresh process that makes one sync fetch through the real handler."""
    return int(run_child("--fetch-once", url, path))


def run_child(*args: str, **env: str) -> str:
    """What `python -m bench.run ARGS` prints, in a fresh interpreter."""
    command = [sys.executable, "-m", "bench.run", *args]
    environment = {**user_environment(), **env}
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, check=True).stdout


def child_fetch_once(url: str, path: str) -> None:
    use_settings(UPSTREAM_URL=url, DB_PATH=path, UPSTREAM_TIMEOUT="25")
    answer = handler("FetchApiFunction")(event("post_fetch_sync"), LambdaContext("fetch"))
    assert answer["statusCode"] == 200, answer
    # VmHWM, not ru_maxrss: the latter keeps the peak of the parent this process was forked from.
    status = Path("/proc/self/status").read_text()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


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
    print(f"  {'benchmark':<34} {'ours':>16} {'baseline':>16} {'ratio':>7}")
    os.environ.update(POWERTOOLS_LOG_LEVEL="ERROR", AWS_DEFAULT_REGION="us-east-1", UPSTREAM_ATTEMPTS="3")
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        big_db = bench_ingest(workdir)
        bench_cold_starts()
        bench_warm_reads(big_db, workdir)
        bench_memory(workdir)
        bench_round_trip(workdir)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--import"]:
        child_import(sys.argv[2])
    elif sys.argv[1:2] == ["--fetch-once"]:
        child_fetch_once(*sys.argv[2:4])
    else:
        main()
