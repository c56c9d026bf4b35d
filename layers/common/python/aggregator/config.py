"""Settings read from the environment, in one place."""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from aggregator.scrub import scrub

DEFAULT_UPSTREAM_URL = "https://jsonplaceholder.typicode.com/posts"
STORE_BACKENDS = ("sqlite", "dynamodb")
DB_MARKER_SUFFIX = ".created"  # a file beside DB_PATH: a database was created there, so it is never recreated
SYNC_FETCH_BUDGET = 25.0  # seconds for a whole sync fetch: API Gateway ends a request at 29 s
DEFAULT_MEMORY_MB = 512  # the template's MemorySize, for a process that Lambda does not run
# An upstream page may be 1/64 of the function's memory. Its records are decoded one at a time, but one
# record may fill the page, and decoding takes about 25 times its text in the worst shape (a record of
# empty lists): the largest page then peaks near half of the memory, within 3/4 (see make bench).
PAGE_SHARE_OF_MEMORY = 64
MEMORY_BUDGET_SHARE = 0.75  # of the function's memory, for a fetch's peak


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    upstream_url: str
    upstream_timeout: float
    upstream_attempts: int
    store_backend: str  # one of STORE_BACKENDS
    db_path: str  # sqlite: the file
    posts_table: str  # dynamodb: the tables
    jobs_table: str
    queue_url: str
    aws_endpoint_url: str | None
    max_receive_count: int
    min_fetch_interval: float
    memory_mb: int  # the function's memory, which Lambda sets in AWS_LAMBDA_FUNCTION_MEMORY_SIZE
    worker_timeout: float  # the worker function's timeout: the longest one delivery of a job runs
    queue_visibility_timeout: float  # the longest from one delivery of a job's message to the next
    db_max_mb: int  # the most the database file may grow to; 0: as far as the disk allows
    sync_fetch_budget: float = SYNC_FETCH_BUDGET

    @property
    def max_page_bytes(self) -> int:
        """The largest upstream page a fetch accepts."""
        return self.memory_mb * 2**20 // PAGE_SHARE_OF_MEMORY


def load(env: Mapping[str, str] = os.environ) -> Settings:
    backend = _choice(env, "STORE_BACKEND", STORE_BACKENDS)
    return Settings(
        upstream_url=_http_url(env, "UPSTREAM_URL", DEFAULT_UPSTREAM_URL),
        upstream_timeout=_number(env, "UPSTREAM_TIMEOUT", 10.0, low=0.001, high=900.0),
        upstream_attempts=int(_number(env, "UPSTREAM_ATTEMPTS", 3, low=1, high=10, whole=True)),
        store_backend=backend,
        db_path=_text(env, "DB_PATH", ".local/aggregator.db"),
        posts_table=_table(env, "POSTS_TABLE", needed=backend == "dynamodb"),
        jobs_table=_table(env, "JOBS_TABLE", needed=backend == "dynamodb"),
        queue_url=env.get("QUEUE_URL", "").strip(),
        aws_endpoint_url=env.get("AWS_ENDPOINT_URL", "").strip() or None,
        max_receive_count=int(_number(env, "MAX_RECEIVE_COUNT", 3, low=1, high=1000, whole=True)),
        min_fetch_interval=_number(env, "MIN_FETCH_INTERVAL", 0.0, low=0.0, high=86400.0 * 7),
        memory_mb=int(
            _number(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", DEFAULT_MEMORY_MB, low=128, high=10240, whole=True)
        ),
        worker_timeout=_number(env, "WORKER_TIMEOUT", 60.0, low=1.0, high=900.0),
        queue_visibility_timeout=_number(env, "QUEUE_VISIBILITY_TIMEOUT", 360.0, low=0.0, high=43200.0),
        db_max_mb=int(_number(env, "DB_MAX_MB", 1024, low=0, high=16 * 2**20, whole=True)),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read once on first use."""
    return load()


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, choices[0])
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _table(env: Mapping[str, str], name: str, *, needed: bool) -> str:
    value = _text(env, name, "")
    if needed and not value:
        raise ConfigError(f"{name} must name a DynamoDB table when STORE_BACKEND is dynamodb")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = _text(env, name, default)
    for at, char in enumerate(value, start=1):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            # Named by position only: the URL may hold a password or a token.
            raise ConfigError(
                f"{name} must be a URL without whitespace or control characters; character {at} is U+{ord(char):04X}"
            )
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # the port is not a number up to 65535
        valid = False
    if not valid:
        raise ConfigError(f"{name} must be an http(s) URL with a host, got {scrub(value)!r}")
    return value


def _number(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float, whole: bool = False
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value: float = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {raw!r}")
    return value
