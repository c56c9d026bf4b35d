"""An upstream page's memory follows the budget, whatever the shape of its records: measured as the
peak resident memory (VmHWM) of a fresh process that makes one sync fetch through the real handler."""

import itertools
import json
import subprocess
import sys

import pytest

from aggregator.config import DEFAULT_MEMORY_MB, MEMORY_BUDGET_SHARE, load
from local.sample_upstream import tiny_posts_page, wide_record_page
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


def many_keys_page(size: int) -> bytes:
    head, keys, used = b'[{"id":1,"userId":1,"title":"t","body":"b"', [], 45
    for number in itertools.count():
        key = b',"k%d":0' % number
        if used + len(key) > size:
            return head + b"".join(keys) + b"}]"
        keys.append(key)
        used += len(key)
    raise AssertionError("unreachable")


def empty_objects_page(size: int) -> bytes:
    return b"[{}" + b",{}" * ((size - 4) // 3) + b"]"


@pytest.mark.parametrize(
    "page_of", [tiny_posts_page, empty_objects_page, wide_record_page, many_keys_page], ids=lambda f: f.__name__
)
def test_the_largest_page_stays_within_the_memory_budget_whatever_its_shape(upstream, tmp_path, page_of):
    assert TEMPLATE.raw["Globals"]["Function"]["MemorySize"] == DEFAULT_MEMORY_MB
    page = page_of(load({}).max_page_bytes)
    assert load({}).max_page_bytes - 64 < len(page) <= load({}).max_page_bytes
    upstream.then_respond(200, page)
    measured = peak_of_one_fetch(upstream.url, tmp_path)
    assert measured["status"] == 200 and measured["job"]["fetched"] > 0
    assert measured["peak"] < DEFAULT_MEMORY_MB * 2**20 * MEMORY_BUDGET_SHARE


def test_a_page_one_byte_larger_fails_the_fetch_cleanly(upstream, store):
    upstream.then_respond(200, b" " * (load({}).max_page_bytes + 1))
    response = invoke("FetchApiFunction", load_event("post_fetch_sync"))
    assert response["statusCode"] == 502
    assert body(response)["error"] == f"upstream page is larger than {load({}).max_page_bytes} bytes"
