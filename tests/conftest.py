"""Fixtures built from the project's own parts: template.yaml, events/, the sample upstream, moto."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from aggregator import config, queue
from aggregator.store import open_store
from local import template
from local.cloud import create_queues
from local.runtime import LambdaContext, load_handler
from local.sample_upstream import SampleUpstream

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
TEMPLATE = template.load()
_handlers: dict = {}


def template_refs() -> dict:
    return dict(TEMPLATE.parameters)


def reset_settings() -> None:
    config.settings.cache_clear()
    queue._sqs.cache_clear()


@pytest.fixture(autouse=True)
def environment(tmp_path, monkeypatch):
    """Each test gets its own SQLite file and settings, and no way out to AWS."""
    monkeypatch.setenv("DB_PATH", str(tmp_path / "data" / "aggregator.db"))
    monkeypatch.setenv("UPSTREAM_URL", "http://127.0.0.1:9/posts")
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "2")
    monkeypatch.setenv("UPSTREAM_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("QUEUE_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def upstream(monkeypatch):
    """The sample upstream on loopback, serving 100 posts; tests script its faults."""
    with SampleUpstream(100) as server:
        monkeypatch.setenv("UPSTREAM_URL", server.url)
        reset_settings()
        yield server


@pytest.fixture
def sqs(monkeypatch):
    """moto's SQS with the template's queues; QUEUE_URL points at the fetch queue."""
    with mock_aws():
        client = boto3.client("sqs")
        queues = create_queues(client, TEMPLATE, template_refs())
        monkeypatch.setenv("QUEUE_URL", queues["FetchQueue"]["url"])
        reset_settings()
        yield SimpleNamespace(
            client=client, url=queues["FetchQueue"]["url"], dlq_url=queues["FetchDeadLetterQueue"]["url"]
        )


@pytest.fixture
def store():
    return open_store(config.settings().db_path)


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


def invoke(function: str, event: dict):
    """Call a function's real handler, as declared in template.yaml, with a Lambda context."""
    if function not in _handlers:
        spec = TEMPLATE.functions[function]
        _handlers[function] = load_handler(spec.code_uri, spec.handler, function)
    return _handlers[function](event, LambdaContext(function))


def body(response: dict):
    return json.loads(response["body"])
