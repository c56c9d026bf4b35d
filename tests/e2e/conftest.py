"""Fixtures that start the local stack in a subprocess and stop it after the test, and hold its answers to the
OpenAPI document."""

import pytest

from local.sample_upstream import SampleUpstream
from tests.running_stack import RunningStack


@pytest.fixture(scope="session", autouse=True)
def answers_match_the_document():
    """Every answer the suite gets from the project's stack (status, headers, body) is one the document describes."""
    yield
    problems = RunningStack.problems
    assert not problems, f"{len(problems)} answers not as documented:\n" + "\n".join(problems[:50])


@pytest.fixture(scope="module")
def store_backend(request) -> str:
    """The store backend of the stacks a module starts: SQLite, unless the module parametrizes this fixture
    to run each backend (test_local_stack does)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def start_stack(tmp_path, store_backend):
    """Start local stacks with extra environment; every one is stopped after the test."""
    stacks: list[RunningStack] = []

    def start(**env: str) -> RunningStack:
        env.setdefault("DB_PATH", str(tmp_path / "aggregator.db"))
        env.setdefault("STORE_BACKEND", store_backend)
        stack = RunningStack(env)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def fake_upstream():
    with SampleUpstream(100) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def stack(fake_upstream, tmp_path_factory, store_backend):
    """One stack shared by a module's tests, on the test's fake upstream."""
    db_path = str(tmp_path_factory.mktemp("db") / "aggregator.db")
    running = RunningStack({"UPSTREAM_URL": fake_upstream.url, "DB_PATH": db_path, "STORE_BACKEND": store_backend})
    yield running
    running.stop()
