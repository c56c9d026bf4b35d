"""Helpers the tests share, built from the project's own parts: template.yaml, events/, the real handlers."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from aggregator import config, queue
from aggregator.models import FetchMode, Job
from aggregator.store import FetchEnd, Lease, Store, close_stores
from local import template
from local.cloud import create_tables
from local.runtime import LambdaContext, load_handler
from local.template import ROOT

EVENTS = ROOT / "events"
LEASE_SECONDS = 60.0
TEMPLATE = template.load()
BACKENDS = ("sqlite", "dynamodb")
# For a test the store plays no part in (input refused before any read; the docs), one backend is enough.
STORE_FREE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
_handlers: dict[str, Any] = {}


def template_refs() -> dict:
    return dict(TEMPLATE.parameters)


def create_template_tables(dynamodb) -> dict[str, dict[str, str]]:
    """The template's DynamoDB tables (StoreBackend=dynamodb), created with `dynamodb` as the local stack does."""
    refs = template_refs() | {"StoreBackend": "dynamodb"}
    return create_tables(lambda: dynamodb, TEMPLATE, refs, TEMPLATE.conditions(refs))


@functools.cache
def cloud_client(service: str) -> Any:
    """One boto3 client a service for the fixtures of a process, made once with the tests' fixed region and
    credentials and never hooked: moto answers it in whichever cloud is current, and making one costs a test
    milliseconds."""
    return boto3.client(service)


def moto_cloud() -> Any:
    """moto's AWS in this process, a new and empty cloud each time. boto3's default session is kept from one
    cloud to the next (the tests' credentials and region do not change): making it again costs every test
    a tenth of a second of loading service models."""
    from moto import mock_aws

    return mock_aws(config={"core": {"reset_boto3_session": False}})


def reset_settings() -> None:
    """Forget the settings and stores opened so far, so the next use reads the environment again."""
    config.settings.cache_clear()
    queue._sqs.cache_clear()
    close_stores()


def template_variant(folder: Path, *edits: tuple[str, str]) -> Path:
    """template.yaml with each edit's first text replaced by its second, written in `folder` beside links to
    the code it names."""
    text = (ROOT / "template.yaml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    variant = folder / "template.yaml"
    variant.write_text(text)
    for code in ("functions", "layers"):
        (folder / code).symlink_to(ROOT / code)
    return variant


def load_event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def api_event(name: str, *, query: dict | None = None, path_params: dict | None = None, headers=None) -> dict:
    """An event from events/, with its query string or path parameters replaced."""
    event = copy.deepcopy(load_event(name))
    if query is not None:
        event["queryStringParameters"] = {k: v[-1] if isinstance(v, list) else v for k, v in query.items()} or None
        event["multiValueQueryStringParameters"] = {
            k: v if isinstance(v, list) else [v] for k, v in query.items()
        } or None
    if path_params is not None:
        event["pathParameters"] = path_params
        path = event["resource"]
        for key, value in path_params.items():
            path = path.replace("{" + key + "}", value)
        event["path"] = path
    if headers:
        event["headers"] = {**(event["headers"] or {}), **headers}
        event["multiValueHeaders"] = {**(event["multiValueHeaders"] or {}), **{k: [v] for k, v in headers.items()}}
    return event


def handler(function: str):
    """A function's real handler, as declared in template.yaml, imported once."""
    if function not in _handlers:
        spec = TEMPLATE.functions[function]
        _handlers[function] = load_handler(spec.code_uri, spec.handler, function)
    return _handlers[function]


def invoke(function: str, event: dict, *, timeout: int | None = None):
    """Call a function's real handler with a Lambda context whose timeout is the template's (or `timeout`).
    The handler is imported first: as in Lambda, the time its init takes does not count against the timeout."""
    function_handler = handler(function)
    context = LambdaContext(function, timeout=timeout or TEMPLATE.functions[function].timeout)
    return function_handler(event, context)


def body(response: dict):
    return json.loads(response["body"])


# Paths as a client might spell them, hoping a gateway or an app reads one as another.
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FETCH")
JOB = "0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10"  # the job id of events/get_job_status.json
BASES = (
    "/", "/data", "/fetch", f"/fetch/status/{JOB}", "/fetch/jobs", "/docs", "/redoc", "/openapi.json",
    "/nowhere/at/all",
)  # fmt: skip


def spellings(base: str) -> list[str]:
    """Ways to write a path that a client might hope a gateway or an app reads as another."""
    first, rest = base[1:2], base[2:]
    variants = [
        base,
        base + "/",
        base.upper(),
        f"/%{ord(first):02x}{rest}" if first else "/%2e",
        f"/%{ord(first):02X}{rest}" if first else "/%2E",
        base.replace("/", "%2F").replace("%2F", "/", 1),
        base + "%2F",
        "/" + base,
        base + "/.",
        base + "/..",
        base + ";x",
        base + "%00",
        base + "%0a",
        base + "%0d%0a",
        base + "%20",
        "/fetch/status/..%2F.." + base,
    ]
    return [v + query for v in variants for query in ("", "?mode=sync")]


def queued_job(store: Store, mode: FetchMode = FetchMode.TASK, lease_seconds: float = LEASE_SECONDS) -> Job:
    return store.create_job(mode, lease_seconds=lease_seconds)


def running_job(store: Store, mode: FetchMode = FetchMode.TASK) -> Lease:
    lease = store.start_job(queued_job(store, mode).job_id, lease_seconds=LEASE_SECONDS)
    assert lease is not None
    return lease


def fetch_end(pages: list, *, complete: bool = True, rejected: int = 0) -> FetchEnd:
    fetched = sum(len(page) for page in pages)
    return FetchEnd(fetched=fetched, pages=len(pages), rejected=rejected, error=None, complete=complete)


def merge(store: Store, pages: list, *, complete: bool = True, lease: Lease | None = None) -> Job:
    """Posts written the one way a fetch writes them: under a running job's lease, which the merge finishes."""
    lease = lease or running_job(store)
    return store.merge_fetch(lease, pages, lambda: fetch_end(pages, complete=complete))
