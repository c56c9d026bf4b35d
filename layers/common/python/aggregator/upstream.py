"""The upstream HTTP client: timeouts, bounded retries, Retry-After and Link pagination."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import HTTPError, ReadTimeoutError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BUDGET_SECONDS = 25.0  # a sync fetch must answer within API Gateway's 29 s
MIN_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 10.0
MAX_UPSTREAM_PAGE_BYTES = 64 * 1024 * 1024

Record = dict[str, Any]  # one JSON object of the upstream's list, as it was sent

_session: requests.Session | None = None


class UpstreamError(Exception):
    """The upstream failed or answered with something that is not a JSON list of objects."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""


def fetch_pages(url: str, *, timeout: float, attempts: int, budget: float = BUDGET_SECONDS) -> Iterator[list[Record]]:
    """Yield each page of records, following `Link: <...>; rel="next"` on the same origin."""
    deadline = time.monotonic() + budget
    origin = urlsplit(url)[:2]
    seen: set[str] = set()
    while url:
        if url in seen:
            raise UpstreamError(f"upstream pagination loops back to {url}")
        seen.add(url)
        response = _get(url, timeout, attempts, deadline)
        yield _records(response)
        url = _next_url(response, origin) or ""


def _http() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers.update({"Accept": "application/json", "User-Agent": "api-aggregator"})
    return _session


def _get(url: str, timeout: float, attempts: int, deadline: float) -> requests.Response:
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        delay = _backoff(attempt)
        try:
            response = _http().get(url, timeout=min(timeout, remaining), stream=True)
        except requests.Timeout:
            failure: UpstreamError = UpstreamTimeout(f"upstream timed out after {timeout:g} s")
        except requests.RequestException as exc:
            failure = UpstreamError(f"upstream unreachable: {type(exc).__name__}")
        else:
            if response.ok:
                return response
            failure = UpstreamError(f"upstream answered HTTP {response.status_code}")
            if response.status_code not in RETRY_STATUSES:
                raise failure
            delay = _retry_after(response.headers.get("Retry-After"), delay)
        if attempt == attempts or time.monotonic() + delay >= deadline:
            raise failure
        time.sleep(delay)
    raise UpstreamTimeout(f"upstream gave no answer within the {BUDGET_SECONDS:g} s budget")


def _backoff(attempt: int) -> float:
    """Exponential back-off with full jitter."""
    return random.uniform(MIN_DELAY_SECONDS, min(MAX_DELAY_SECONDS, 0.25 * 2**attempt))


def _retry_after(header: str | None, default: float) -> float:
    if not header:
        return default
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    if seconds != seconds:  # NaN
        return default
    return min(MAX_DELAY_SECONDS, max(MIN_DELAY_SECONDS, seconds))


def _records(response: requests.Response) -> list[Record]:
    try:
        body = response.raw.read(MAX_UPSTREAM_PAGE_BYTES + 1, decode_content=True)
    except ReadTimeoutError:
        raise UpstreamTimeout("upstream timed out while sending the body") from None
    except (HTTPError, OSError) as exc:
        raise UpstreamError(f"upstream body could not be read: {type(exc).__name__}") from None
    if len(body) > MAX_UPSTREAM_PAGE_BYTES:
        raise UpstreamError(f"upstream page is larger than {MAX_UPSTREAM_PAGE_BYTES} bytes")
    try:
        records = json.loads(body)
    except ValueError as exc:
        raise UpstreamError(f"upstream body is not JSON: {exc}") from None
    if not isinstance(records, list):
        raise UpstreamError(f"upstream body is a JSON {type(records).__name__}, expected a list")
    if not all(type(record) is dict for record in records):
        raise UpstreamError("upstream list holds something that is not a JSON object")
    return records


def _next_url(response: requests.Response, origin: tuple[str, str]) -> str | None:
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    url = urljoin(response.url, link)
    if urlsplit(url)[:2] != origin:
        raise UpstreamError(f"upstream next-page link leaves its origin: {url}")
    return url
