"""Fixtures, and the hook that keeps tests sharing a stack together; the helpers they and the tests share are in
tests/helpers.py."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sqlite3
from types import SimpleNamespace
from unittest import mock

import pytest
from moto.kms import models as moto_kms

from aggregator import config
from aggregator.observability import logger
from aggregator.store import open_store
from aggregator.store.dynamodb import DynamoDbStore, dynamodb_client
from aggregator.store.sqlite import SqliteStore
from local.cloud import create_queues
from local.sample_upstream import SampleUpstream
from tests.helpers import (
    BACKENDS,
    TEMPLATE,
    cloud_client,
    create_template_tables,
    moto_cloud,
    reset_settings,
    template_refs,
)

SHARED = {"stack", "keyed_stack", "keyed", "probes", "deployed"}  # module-scoped: a local stack each
SHARED_PARAMETERS = ("store_backend",)  # the parameter that makes another instance of one
# Translating the template and creating it in moto's CloudFormation costs a process seconds of imports and
# one translation a parameter set: one worker runs both modules.
CLOUDFORMATION = ("tests/integration/test_translated_template.py", "tests/integration/test_stack_in_moto.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """Keep tests that share costly setup on one worker (`--dist loadgroup`): each module's stack then starts
    once a module and parameter, and the translator and moto's CloudFormation load in one worker, not in each."""
    for item in items:
        group = _group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def _group(item) -> str | None:
    module = item.nodeid.split("::")[0]
    if module in CLOUDFORMATION:
        return "cloudformation"
    fixtures = item._fixtureinfo.name2fixturedefs  # the only way to a fixture's scope
    if any(fixtures[name][-1].scope == "module" for name in SHARED & fixtures.keys()):
        params = item.callspec.params if hasattr(item, "callspec") else {}
        return "-".join([module, *(str(params[name]) for name in SHARED_PARAMETERS if name in params)])
    return None


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
    for name in ("STORE_BACKEND", "POSTS_TABLE", "JOBS_TABLE"):
        monkeypatch.delenv(name, raising=False)
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
def aws():
    """moto's AWS, in this process, for the test."""
    with moto_cloud():
        yield


@pytest.fixture(scope="session", autouse=True)
def one_rsa_key_for_moto_kms():
    """moto makes an RSA key for the KMS key that encrypts a table (the template's SSESpecification): 50 ms
    a test. The tests never use the key; every such KMS key gets the same one."""
    with mock.patch.object(moto_kms, "generate_private_key", functools.cache(moto_kms.generate_private_key)):
        yield


@pytest.fixture
def sqs(aws, monkeypatch):
    """moto's SQS with the template's queues; QUEUE_URL points at the fetch queue."""
    client = cloud_client("sqs")
    queues = create_queues(client, TEMPLATE, template_refs())
    monkeypatch.setenv("QUEUE_URL", queues["FetchQueue"]["url"])
    reset_settings()
    url, dlq_url = queues["FetchQueue"]["url"], queues["FetchDeadLetterQueue"]["url"]
    return SimpleNamespace(client=client, url=url, dlq_url=dlq_url)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Run the test once per store backend, configured as the functions read it: SQLite on the test's own
    file, or DynamoDB on the template's tables in moto."""
    monkeypatch.setenv("STORE_BACKEND", request.param)
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
        tables = create_template_tables(cloud_client("dynamodb"))
        monkeypatch.setenv("POSTS_TABLE", tables["PostsTable"]["name"])
        monkeypatch.setenv("JOBS_TABLE", tables["JobsTable"]["name"])
    reset_settings()
    return request.param


@pytest.fixture
def log_lines(capsys):
    """What the functions log (and print: metrics) from here on, as parsed JSON lines."""
    stream = io.StringIO()
    previous = logger.registered_handler.setStream(stream)
    logger.setLevel("INFO")

    def read():
        text = stream.getvalue() + capsys.readouterr().out
        stream.seek(0)
        stream.truncate()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    yield read
    logger.setLevel("WARNING")
    logger.registered_handler.setStream(previous)


@pytest.fixture
def store():
    """The store the functions use, as configured by the environment."""
    return open_store(config.settings())


@pytest.fixture
def db_path(tmp_path):
    """The path of a SQLite file of the test's own, in a folder not created yet."""
    return str(tmp_path / "nested" / "posts.db")


@pytest.fixture
def db(backend, db_path):
    """A store of the test's own, of each backend in turn (a SQLite file; moto's DynamoDB), closed after."""
    store = _open_db(backend, db_path)
    yield store
    store.close()


@pytest.fixture
def sqlite_db(db_path):
    """A store on a SQLite file of the test's own, for what only SQLite has (a file), closed after."""
    store = SqliteStore(db_path)
    yield store
    store.close()


@pytest.fixture
def other_db(open_db):
    """A second store on the same data as `db`, as another process would open it."""
    return open_db()


@pytest.fixture
def open_db(backend, db_path):
    """Opens more stores on the same data as `db` (in any thread); each is closed after the test."""
    opened = []

    def open_one():
        opened.append(_open_db(backend, db_path))
        return opened[-1]

    yield open_one
    for store in opened:
        with contextlib.suppress(sqlite3.ProgrammingError):  # a SQLite store made in another thread stays open
            store.close()


def _open_db(backend: str, db_path: str):
    if backend == "sqlite":
        return SqliteStore(db_path)
    settings = config.settings()
    return DynamoDbStore(settings.posts_table, settings.jobs_table, dynamodb_client(None))
