"""The upstream HTTP client: one wall-clock budget per fetch, bounded retries with Retry-After, Link
pagination and redirects on the first URL's origin only, and pages decoded one record at a time.

Errors carry a short reason for the job's record, which names no URL, and a scrubbed detail for the logs.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import random
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from aggregator.scrub import scrub

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MIN_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 10.0
READ_BYTES = 256 * 1024
DEADLINE_CHECK_CHARS = 1 << 20  # while decoding, the deadline is checked once per this much text
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # left as they are in a request target; the rest is percent-encoded
HEADERS = {"Accept": "application/json", "User-Agent": "api-aggregator"}

_BETWEEN_RECORDS = re.compile(r"[ \t\n\r]*(?:,[ \t\n\r]*(?=\{)|(\])[ \t\n\r]*)")  # `, {` or the final `]`
_LIST_START = re.compile(r"[ \t\n\r]*\[[ \t\n\r]*")
_SPACE = re.compile(r"[ \t\n\r]*")


class UpstreamError(Exception):
    """The upstream failed, or answered with something that is not a JSON list of objects.

    Its message is a short reason that names no URL; `detail` says more, for the logs only, scrubbed: what
    went wrong, what was being read, how far into the fetch, and the request.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.detail = scrub(detail)
        self._explained = False

    def explain(self, context: str) -> None:
        """Add `context` (already scrubbed) to the detail, once."""
        if not self._explained:
            self.detail = "; ".join(filter(None, [self.detail, context]))
            self._explained = True


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time, or the fetch ran out of its budget."""


class UnreadableRecord(NamedTuple):
    """A list element that is a JSON object this client cannot read faithfully; `reason` says why."""

    reason: str


Record = dict[str, Any] | UnreadableRecord  # one element of the upstream's list


def fetch_pages(
    url: str, *, timeout: float, attempts: int, budget: float, max_page_bytes: int
) -> Iterator[Iterator[Record]]:
    """Each page of the upstream's list, as an iterator over its records, following `Link: <...>;
    rel="next"`. Consume a page before asking for the next: one page is in memory at a time.

    The whole fetch (connecting, every byte of every page, every retry and back-off, decoding)
    ends within `budget` seconds, or raises UpstreamTimeout. `timeout` bounds each wait for bytes.
    """
    with _Connection(url, timeout=timeout, budget=budget) as connection:
        seen: set[str] = set()
        next_url: str | None = url
        while next_url:
            try:
                if next_url in seen:
                    raise UpstreamError("upstream pagination loops back to a page it already sent", next_url)
                seen.add(next_url)
                text, next_url = _page(connection, next_url, attempts, max_page_bytes)
            except UpstreamError as exc:
                exc.explain(connection.context())
                raise
            yield _records(text, connection)
            del text  # the page's records are consumed: let its text go before the next page arrives


def _page(connection: _Connection, url: str, attempts: int, max_bytes: int) -> tuple[str, str | None]:
    """The text of the page at `url` and the URL of the next page, retrying what is worth retrying."""
    for attempt in range(1, attempts + 1):
        delay = _backoff(attempt)
        try:
            response, url = connection.get(url)
            if 200 <= response.status < 300:
                return connection.read_text(response, max_bytes), connection.next_url(response, url)
            retry_after = response.getheader("Retry-After")
            failure = UpstreamError(
                f"upstream answered HTTP {response.status}",
                f"HTTP {response.status} {response.reason[:80]} on attempt {attempt} of {attempts}"
                + (f" (Retry-After: {retry_after[:40]})" if retry_after else ""),
            )
            delay = _retry_after(retry_after, delay)
            connection.close()
            if response.status not in RETRY_STATUSES:
                raise failure
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            failure = connection.failure(exc, url)
        if attempt == attempts or time.monotonic() + delay >= connection.deadline:
            raise failure
        time.sleep(delay)
    raise AssertionError("unreachable: attempts is at least 1")


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


class _Connection:
    """One fetch's keep-alive connection to the first URL's origin, shut down at the fetch's deadline.

    Shutting the socket down makes any read or write blocked on it return at once, so the deadline
    holds however slowly the upstream drips: its status line, its headers or its body.
    """

    def __init__(self, url: str, *, timeout: float, budget: float):
        self.timeout = timeout
        self.deadline = time.monotonic() + budget
        # The budget as errors name it: to the second from 10 s (25, not 24.97), else to a tenth (1.5).
        self.seconds = f"{budget:.0f}" if budget >= 10 else f"{budget:.1f}".removesuffix(".0")
        self.origin = _origin(urlsplit(url))
        self.started = time.monotonic()
        self.url = url  # the request being made
        self.doing = "connecting"  # what was being read or done, for the detail of a failure
        self._headers = HEADERS | _basic_auth(urlsplit(url))
        self._http: http.client.HTTPConnection | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._expired = False
        self._expired_while: str | None = None  # what was being read when the budget ran out
        self._watchdog = threading.Timer(max(0.0, budget), self._expire)
        self._watchdog.daemon = True

    def __enter__(self) -> _Connection:
        self._watchdog.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._watchdog.cancel()
        self.close()

    def get(self, url: str) -> tuple[http.client.HTTPResponse, str]:
        """The answer to GET `url` and the URL that gave it: redirects within the origin are followed."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url)
            self.doing = f"handling an HTTP {response.status} answer"
            location = response.getheader("Location") if response.status in REDIRECT_STATUSES else None
            if not location:
                return response, url
            self.close()
            url = self._within_origin(urljoin(url, location), "upstream redirected to another origin")
        raise UpstreamError(f"upstream redirected more than {MAX_REDIRECTS} times", url)

    def read_text(self, response: http.client.HTTPResponse, max_bytes: int) -> str:
        """The body of `response` as text, refused if it is larger than `max_bytes`."""
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise UpstreamError(f"upstream sent a {encoding[:20]}-encoded body, which was not asked for")
        if response.length is not None and response.length > max_bytes:
            raise UpstreamError(f"upstream page is larger than {max_bytes} bytes")
        body = bytearray()
        self.doing = "reading the body"
        while chunk := response.read(READ_BYTES):
            body += chunk
            self.doing = f"reading the body ({len(body):,} bytes so far)"
            if len(body) > max_bytes:
                raise UpstreamError(f"upstream page is larger than {max_bytes} bytes")
        if response.length:  # http.client ends a short body silently
            raise http.client.IncompleteRead(b"", response.length)
        self.check_deadline()  # a body cut short by the watchdog may look complete
        bom = 3 if body.startswith(b"\xef\xbb\xbf") else 0
        # Invalid UTF-8 becomes lone surrogates, which reject only the record whose text holds them.
        return str(memoryview(body)[bom:], "utf-8", "surrogateescape")

    def next_url(self, response: http.client.HTTPResponse, url: str) -> str | None:
        for value in response.headers.get_all("Link") or ():
            for link in _links(value):
                if link[1] == "next":
                    return self._within_origin(urljoin(url, link[0]), "upstream next-page link leaves its origin")
        return None

    def context(self) -> str:
        """What was being read or done, how far into the fetch, and the request: for a failure's detail."""
        elapsed = time.monotonic() - self.started
        doing = f"the budget ran out while {self._expired_while}" if self._expired_while else self.doing
        return f"{doing}, {elapsed:.2f} s into the fetch (budget {self.seconds} s): GET {scrub(self.url)}"

    def failure(self, exc: Exception, url: str) -> UpstreamError:
        detail = f"{type(exc).__name__}: {exc}"
        if self._out_of_time():
            return UpstreamTimeout(f"upstream fetch ran out of its {self.seconds} s budget", detail)
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"upstream timed out after {self.timeout:g} s", detail)
        if isinstance(exc, http.client.HTTPException) and not isinstance(exc, ConnectionError):
            return UpstreamError(f"upstream broke the HTTP protocol: {type(exc).__name__}", detail)
        return UpstreamError(f"upstream unreachable: {type(exc).__name__}", detail)

    def check_deadline(self) -> None:
        if self._out_of_time():
            raise UpstreamTimeout(f"upstream fetch ran out of its {self.seconds} s budget")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        with self._lock:
            if self._socket is not None:
                self._socket.close()
            self._http = self._socket = None

    def _request(self, url: str) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        self.url = url
        if self._http is None or self._http.sock is None or _closed_by_peer(self._http.sock):
            self.doing = "connecting"
            self._open()
        assert self._http is not None and self._socket is not None
        self._socket.settimeout(self._seconds_for_a_wait())
        target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=URL_SAFE)
        self.doing = "sending the request"
        self._http.request("GET", target, None, self._headers)
        self.doing = "waiting for the status line and headers"
        return self._http.getresponse()

    def _open(self) -> None:
        self.close()
        scheme, host, port = self.origin
        plain = _connect(host, port, self._seconds_for_a_wait)
        if scheme == "https":
            context = ssl.create_default_context()
            tls = context.wrap_socket(plain, server_hostname=host, do_handshake_on_connect=False)
            self._watch(tls)  # before the handshake, which the upstream may drip too
            tls.do_handshake()
            self._http = http.client.HTTPSConnection(host, port, context=context)
            self._http.sock = tls
        else:
            self._watch(plain)
            self._http = http.client.HTTPConnection(host, port)
            self._http.sock = plain

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._expired:
                sock.close()
                self.check_deadline()
            self._socket = sock

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            self._expired_while = self.doing
            if self._socket is not None:
                with contextlib.suppress(OSError):  # already closed
                    socket.socket.shutdown(self._socket, socket.SHUT_RDWR)  # the TCP socket, even under TLS

    def _out_of_time(self) -> bool:
        return self._expired or time.monotonic() >= self.deadline

    def _seconds_for_a_wait(self) -> float:
        """How long one wait for the upstream may last: its timeout, cut to what is left of the budget."""
        self.check_deadline()
        return min(self.timeout, self.deadline - time.monotonic())

    def _within_origin(self, url: str, reason: str) -> str:
        try:
            same = _origin(urlsplit(url)) == self.origin
        except ValueError:
            same = False
        if not same:
            raise UpstreamError(reason, url)
        return url


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL; ValueError for a URL that is not http(s) with a host."""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _basic_auth(parts: SplitResult) -> dict[str, str]:
    """The credentials written into the URL, as the Authorization header they stand for."""
    if parts.username is None:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


_AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def _connect(host: str, port: int, seconds: Callable[[], float]) -> socket.socket:
    """A TCP connection to the first address of `host` that answers, each step within `seconds()`."""
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in _resolve(host, port, seconds()):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(seconds())
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
    raise failure


def _resolve(host: str, port: int, seconds: float) -> Sequence[_AddressInfo]:
    """getaddrinfo within `seconds`: it cannot be interrupted, so it runs in a thread left behind if late."""
    answer: queue.SimpleQueue[Sequence[_AddressInfo] | OSError] = queue.SimpleQueue()

    def resolve() -> None:
        try:
            answer.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.put(exc)

    threading.Thread(target=resolve, daemon=True).start()
    try:
        result = answer.get(timeout=seconds)
    except queue.Empty:
        raise TimeoutError(f"resolving {host} took more than {seconds:.3g} s") from None
    if isinstance(result, OSError):
        raise result
    return result


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle keep-alive connection has been closed (or written to) by the other side."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r'(?:^|;)\s*rel\s*=\s*"?([^";]*)"?', re.IGNORECASE)


def _links(header: str) -> Iterator[tuple[str, str]]:
    """(URL, each rel) of a Link header: `<url>; rel="next", <url>; rel="last"`."""
    for found in _LINK.finditer(header):
        rel = _REL.search(found.group(2))
        for name in rel.group(1).lower().split() if rel else ():
            yield found.group(1).strip(), name


# Decoding. A page is decoded one record at a time, so its memory is its text plus one record.


def _records(text: str, connection: _Connection) -> Iterator[Record]:
    """Each element of the JSON list `text`, which must be an object, decoded one at a time."""
    connection.doing = "decoding the page"
    try:
        start = _LIST_START.match(text)
        if start is None:
            raise UpstreamError(f"upstream body is {_kind(text)}, expected a list")
        at = start.end()
        if text.startswith("]", at):
            at = _skip_space(text, at + 1)
        elif not text.startswith("{", at):
            raise _not_an_object(text, at)
        else:
            scan, between_records, follows = _STRICT, _BETWEEN_RECORDS.match, text.startswith
            check_at = at + DEADLINE_CHECK_CHARS
            while True:
                try:
                    record, at = scan(text, at)
                except (ValueError, StopIteration, RecursionError) as exc:
                    record, at = _unreadable(text, at, exc)
                yield record
                if at > check_at:
                    connection.doing = f"decoding the page (at char {at:,} of {len(text):,})"
                    connection.check_deadline()
                    check_at = at + DEADLINE_CHECK_CHARS
                if follows(",{", at):  # the usual separators, found without the regex
                    at += 1
                elif follows(", {", at):
                    at += 2
                else:
                    between = between_records(text, at)
                    if between is None:
                        raise _unexpected(text, at)
                    at = between.end()
                    if between.lastindex:  # the list's closing bracket
                        break
        if at < len(text):
            raise UpstreamError(f"upstream body is not JSON: more follows the list at char {at}")
    except UpstreamError as exc:
        exc.explain(connection.context())
        raise


def _skip_space(text: str, at: int) -> int:
    """Where the first character at or after `at` that is not JSON whitespace is."""
    space = _SPACE.match(text, at)
    return space.end() if space else at


def _not_an_object(text: str, at: int) -> UpstreamError:
    if at >= len(text):
        return UpstreamError("upstream body is not JSON: the list is unfinished")
    return UpstreamError("upstream list holds something that is not a JSON object")


def _unexpected(text: str, at: int) -> UpstreamError:
    """The error for what follows a record when it is neither `,` and an object nor `]`."""
    at = _skip_space(text, at)
    if text.startswith(",", at):
        return _not_an_object(text, _skip_space(text, at + 1))
    if at >= len(text):
        return _not_an_object(text, at)
    return UpstreamError(f"upstream body is not JSON: expected ',' or ']' at char {at}")


class _Refused(ValueError):
    """Valid for Python's decoder, refused by ours: NaN and Infinity, a key given twice."""


def _refuse_constant(name: str) -> float:
    raise _Refused(f"{name} is not JSON")


def _object_with_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {key[:40]!r} appears twice in one object")
            seen.add(key)
    return record


# The C scanners behind JSONDecoder.raw_decode, called directly: no Python frame a record. They raise
# StopIteration(position) where a value is missing. The lenient one only finds where an object the strict
# one refused ends, so that this record alone is rejected.
_Scanner = Callable[[str, int], tuple[Any, int]]
_STRICT: _Scanner = json.JSONDecoder(
    parse_constant=_refuse_constant, object_pairs_hook=_object_with_unique_keys
).scan_once  # type: ignore[attr-defined]
_LENIENT: _Scanner = json.JSONDecoder(parse_int=str, parse_float=str, strict=False).scan_once  # type: ignore[attr-defined]


def _unreadable(text: str, at: int, refused: BaseException) -> tuple[UnreadableRecord, int]:
    """The object at `at` that the strict decoder refused, as an UnreadableRecord, and where it ends;
    UpstreamError if even its end cannot be found."""
    if isinstance(refused, RecursionError):
        raise UpstreamError("upstream body nests too deeply to decode") from None
    reason = _refusal(refused)
    try:
        _, end = _LENIENT(text, at)
    except RecursionError:
        raise UpstreamError("upstream body nests too deeply to decode") from None
    except (ValueError, StopIteration):
        raise UpstreamError(f"upstream body is not JSON: {reason}") from None
    return UnreadableRecord(reason), end


def _refusal(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg.removesuffix(' at')} at char {exc.pos}"
    if isinstance(exc, StopIteration):
        return f"expecting a value at char {exc.value}"
    if isinstance(exc, _Refused):
        return str(exc)
    return f"an integer has more than {sys.get_int_max_str_digits()} digits"  # Python's only other refusal


def _kind(text: str) -> str:
    """What a body that is not a list holds, judged by its first character."""
    at = _skip_space(text, 0)
    first = text[at : at + 1]
    if first and first in '{"tfn-0123456789':
        return {"{": "a JSON object", '"': "a JSON string", "n": "JSON null"}.get(first, "a JSON scalar")
    return "not JSON"
