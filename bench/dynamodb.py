"""make bench, the DynamoDB backend. Two kinds of figures:

- times against moto's DynamoDB in this process, beside SQLite's: moto is a Python emulator, far slower than
  DynamoDB and unlike it, so these are relative figures only, and say so;
- what DynamoDB would bill: the requests each operation sends and the capacity units they consume, worked
  out from the items' sizes by DynamoDB's published rules (moto does not account capacity), priced at
  on-demand list prices.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto import mock_aws

from local.runtime import LambdaContext
from local.sample_upstream import SampleUpstream

WRITE_UNIT_PRICE = 0.625 / 1e6  # on-demand, us-east-1: dollars per write request unit
READ_UNIT_PRICE = 0.125 / 1e6  # and per read request unit
INDEX_KEYS = {"PostsTable": "user_id"}  # a posts item with this attribute is written to the by_user index too
POSTS, BIG = 100_000, 100_000
CHANGED_POSTS, CHANGED = 10_000, 100


@dataclass
class Usage:
    requests: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0

    @property
    def cost(self) -> float:
        return self.read_units * READ_UNIT_PRICE + self.write_units * WRITE_UNIT_PRICE


class Meter:
    """The requests a DynamoDB client sends, and the read and write units DynamoDB would charge for them:
    reads by the 4 KB (half for an eventually consistent read), writes by the 1 KB, per item and per index
    entry, transactions twice. A delete, and an update whose new item is not returned, count as 1 KB."""

    def __init__(self, client: Any):
        self.usage = Usage()
        client.meta.events.register("before-parameter-build.dynamodb.*", self._keep_request)
        client.meta.events.register("after-call.dynamodb.*", self._count)

    @contextmanager
    def measuring(self) -> Iterator[Usage]:
        """The usage of the requests sent inside the block, and of none after it."""
        self.usage = measured = Usage()
        try:
            yield measured
        finally:
            self.usage = Usage()

    def _keep_request(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["metered"] = dict(params)

    def _count(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        params, usage = context.get("metered", {}), self.usage
        usage.requests[model.name] += 1
        share = 1.0 if params.get("ConsistentRead") else 0.5
        if model.name in ("Query", "Scan"):
            usage.read_units += share * max(1, math.ceil(sum(map(item_size, parsed.get("Items", []))) / 4096))
        elif model.name == "GetItem":
            usage.read_units += share * max(1, math.ceil(item_size(parsed.get("Item", {})) / 4096))
        elif model.name == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item")
                    usage.write_units += written_units(table, item) if item else 1
        elif model.name == "PutItem":
            usage.write_units += written_units(params["TableName"], params["Item"])
        elif model.name == "UpdateItem":
            usage.write_units += written_units(params["TableName"], parsed.get("Attributes"))
        elif model.name == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((_, request),) = entry.items()
                usage.write_units += 2 * written_units(request["TableName"], request.get("Item"))


def written_units(table: str, item: dict[str, Any] | None) -> int:
    if item is None:
        return 1
    units = math.ceil(item_size(item) / 1024)
    return units * 2 if INDEX_KEYS.get(table) in item else units


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: each attribute's name and value."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(data)
    return 1


def use(**env: str) -> None:
    from aggregator import config
    from aggregator.store import close_stores

    os.environ.update(env)
    config.settings.cache_clear()
    close_stores()


def meter() -> Meter:
    """A meter on the client of the store the handlers in this thread use."""
    from aggregator import config
    from aggregator.store import open_store

    return Meter(open_store(config.settings())._db)  # type: ignore[attr-defined]


def tables() -> dict[str, str]:
    from tests.helpers import create_template_tables

    made = create_template_tables(boto3.client("dynamodb"))
    return {"POSTS_TABLE": made["PostsTable"]["name"], "JOBS_TABLE": made["JobsTable"]["name"]}


def timed(action: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = action()
    return time.perf_counter() - started, answer


def fetch(handler: Any, event: dict[str, Any]) -> dict[str, Any]:
    answer = handler(event, LambdaContext("fetch"))
    assert answer["statusCode"] == 200, answer
    return dict(json.loads(answer["body"]))


def ingest_and_reads(backend: str, url: str, workdir: Any, handlers: dict[str, Any], events: dict[str, Any]) -> dict:
    """Fetch 100k posts, again unchanged, then read a page and a user's page: times, and DynamoDB's usage."""
    figures: dict[str, Any] = {}
    use(STORE_BACKEND=backend, UPSTREAM_URL=url, DB_PATH=str(workdir / f"dynamodb-bench-{backend}.db"))
    watch = meter() if backend == "dynamodb" else None
    for name in ("first", "unchanged"):
        with watch.measuring() if watch else nullcontext() as usage:
            figures[name], job = timed(lambda: fetch(handlers["fetch"], events["fetch"]))
        figures[f"{name} usage"] = usage
        assert (job["inserted"] if name == "first" else job["unchanged"]) == BIG, job
    for name, event in (("page", events["page"]), ("user page", events["user page"])):

        def read(event: dict[str, Any] = event) -> Any:
            return handlers["read"](event, LambdaContext("read"))

        read()
        with watch.measuring() if watch else nullcontext() as usage:
            read()
        figures[f"{name} usage"] = usage
        figures[name] = statistics.median(timed(read)[0] for _ in range(3))
    return figures


def changed_refetch(handlers: dict[str, Any], events: dict[str, Any], workdir: Any) -> Usage:
    """A re-fetch of 10k posts of which 100 changed: every stored post is read to compare."""
    with SampleUpstream(CHANGED_POSTS, page_size=1000) as upstream:
        use(STORE_BACKEND="dynamodb", UPSTREAM_URL=upstream.url, DB_PATH=str(workdir / "unused.db"), **tables())
        fetch(handlers["fetch"], events["fetch"])
        for post in upstream.posts[:CHANGED]:
            post["title"] = "changed"
        with meter().measuring() as usage:
            job = fetch(handlers["fetch"], events["fetch"])
        assert (job["updated"], job["unchanged"]) == (CHANGED, CHANGED_POSTS - CHANGED), job
        return usage


def run(url: str, workdir: Any, handlers: dict[str, Any], events: dict[str, Any], report: Any) -> None:
    sqlite = ingest_and_reads("sqlite", url, workdir, handlers, events)
    with mock_aws():
        use(**tables())
        dynamodb = ingest_and_reads("dynamodb", url, workdir, handlers, events)
    with mock_aws():
        changed = changed_refetch(handlers, events, workdir)
    use(STORE_BACKEND="sqlite")
    print("  DynamoDB timed on moto in this process: moto's speed, not DynamoDB's; relative figures only")
    for name, label in (
        ("first", "ingest 100k posts, DynamoDB (moto)"),
        ("unchanged", "  again, unchanged"),
        ("page", "GET /data, 100k posts, DynamoDB (moto)"),
        ("user page", "GET /data?user_id=3, DynamoDB (moto)"),
    ):
        ours, base = dynamodb[name], sqlite[name]
        report(label, seconds(ours), seconds(base) + " SQLite", ours / base, "report")
    print(
        "  DynamoDB requests and capacity units, priced on demand (us-east-1: $0.625 a million write units,"
        " $0.125 a million read units)"
    )
    print(
        f"  {'operation':<34} {'requests':>9} {'read units':>11} {'write units':>12} {'cost':>11} {'a million':>11}"
        "   requests by kind"
    )
    for label, usage in (
        ("fetch of 100k posts, first", dynamodb["first usage"]),
        ("fetch of 100k posts, unchanged", dynamodb["unchanged usage"]),
        (f"fetch of 10k posts, {CHANGED} changed", changed),
        ("GET /data, first page of 100", dynamodb["page usage"]),
        ("GET /data?user_id=3, first page", dynamodb["user page usage"]),
    ):
        total = sum(usage.requests.values())
        kinds = ", ".join(f"{count:,} {name}" for name, count in usage.requests.most_common())
        each, million = f"${usage.cost:.7f}", f"${usage.cost * 1e6:,.2f}"
        print(
            f"  {label:<34} {total:>9,} {usage.read_units:>11,.1f} {usage.write_units:>12,.0f} {each:>11} {million:>11}"
            f"   {kinds}"
        )


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1000:.1f} ms"
