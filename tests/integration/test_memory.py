"""An upstream page's memory follows the budget, whatever the shape of its records: measured as the
peak resident memory (VmHWM) of a fresh process that makes one sync fetch through the real handler."""

import json
import subprocess
import sys

from aggregator.config import DEFAULT_MEMORY_MB, load
from local.sample_upstream import tiny_posts_page
from local.template import ROOT
from tests.helpers import TEMPLATE, body, invoke, load_event

# A fresh interpreter, as a Lambda instance: one sync fetch, then its peak memory written to argv[3].
CHILD = """
import json, os, sys
sys.path[:0] = ["layers/common/python", "."]
os.environ.update(UPSTREAM_URL=sys.argv[1], DB_PATH=sys.argv[2])
from local.runtime import LambdaContext, load_handler
from local.template import load
spec = load().functions["FetchApiFunction"]
handler = load_handler(spec.code_uri, spec.handler, "FetchApiFunction")
event = json.load(open("events/post_fetch_sync.json"))
answer = handler(event, LambdaContext("FetchApiFunction", timeout=spec.timeout))
status = open("/proc/self/status").read()
peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
report = {"status": answer["statusCode"], "job": json.loads(answer["body"]), "peak": peak}
open(sys.argv[3], "w").write(json.dumps(report))
"""


def peak_of_one_fetch(upstream_url: str, tmp_path) -> dict:
    report = tmp_path / "report.json"
    command = [sys.executable, "-c", CHILD, upstream_url, str(tmp_path / "child.db"), str(report)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={"POWERTOOLS_LOG_LEVEL": "ERROR"})
    return json.loads(report.read_text())


def test_the_largest_page_of_tiny_records_stays_within_half_the_functions_memory(upstream, tmp_path):
    assert TEMPLATE.raw["Globals"]["Function"]["MemorySize"] == DEFAULT_MEMORY_MB
    largest = load({}).max_page_bytes
    page = tiny_posts_page(largest)
    upstream.then_respond(200, page)
    measured = peak_of_one_fetch(upstream.url, tmp_path)
    assert measured["status"] == 200 and measured["job"]["inserted"] > 700_000
    assert measured["peak"] < DEFAULT_MEMORY_MB * 2**20 // 2


def test_a_page_one_byte_larger_fails_the_fetch_cleanly(upstream, store):
    upstream.then_respond(200, b" " * (load({}).max_page_bytes + 1))
    response = invoke("FetchApiFunction", load_event("post_fetch_sync"))
    assert response["statusCode"] == 502
    assert body(response)["error"] == f"upstream page is larger than {load({}).max_page_bytes} bytes"
