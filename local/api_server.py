"""The API on loopback, as API Gateway serves it: each HTTP request becomes a proxy event for the route's
function, invoked on an instance of its own, many at once.

As API Gateway does, it answers 403 for an unknown route or a missing API key, 502 when the
function fails, 500 when the function is throttled, and 504 when the function has not answered
within the route's integration timeout (`TimeoutInMillis`, 29 s by default), whatever the function
itself is still doing.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

from local import apigw
from local.instance import InvokeResult
from local.pool import FunctionPool, Throttled
from local.serving import QuietHTTPServer
from local.template import Route

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
CLIENT_TIMEOUT_SECONDS = 30.0
OUTCOME_HEADER = "X-Fetch-Outcome"
Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes
    function: str = "-"
    result: InvokeResult | None = None

    @classmethod
    def message(cls, status: int, message: str, function: str = "-", **extra: object) -> Answer:
        body = json.dumps({"message": message}).encode()
        return cls(status, [("Content-Type", "application/json")], body, function, **extra)  # type: ignore[arg-type]


class ApiServer(QuietHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        routes: list[Route],
        pools: dict[str, FunctionPool],
        report: Callable[[str, str, Answer, float], None],
        *,
        api_key: str = "",
    ):
        super().__init__(address, _RequestHandler)
        self.routes, self.pools, self.report, self.api_key = routes, pools, report, api_key
        self._invocations = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="integration")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        super().stop()
        self._invocations.shutdown(wait=False, cancel_futures=True)

    def answer(self, method: str, target: str, headers: Headers, body: bytes, client_ip: str) -> Answer:
        matched = apigw.match(self.routes, method, target.partition("?")[0])
        if matched is None:
            return Answer.message(403, "Missing Authentication Token")
        route, params = matched
        if route.api_key_required and self.api_key and not _has_key(headers, self.api_key):
            return Answer.message(403, "Forbidden", route.function)
        event = apigw.request_event(route, params, method, target, headers, body, client_ip)
        pool = self.pools[route.function]
        future = self._invocations.submit(pool.invoke, json.dumps(event).encode())
        try:
            result = future.result(timeout=route.timeout_ms / 1000)
        except concurrent.futures.TimeoutError:
            return Answer.message(504, "Endpoint request timed out", route.function)
        except Throttled:
            return Answer.message(500, "Internal server error", route.function)
        if not result.ok or result.response is None:
            return Answer.message(502, "Internal server error", route.function, result=result)
        status, answer_headers, answer_body = apigw.http_response(json.loads(result.response))
        return Answer(status, answer_headers, answer_body, route.function, result)


def _has_key(headers: Headers, key: str) -> bool:
    given = [value for name, value in headers if name.lower() == "x-api-key"]
    return len(given) == 1 and hmac.compare_digest(given[0].encode(), key.encode())


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = CLIENT_TIMEOUT_SECONDS  # a client that stalls mid-request is let go, as API Gateway does

    def _serve(self) -> None:
        started = time.perf_counter()
        body, refusal = self._request_body()
        if refusal is not None:
            answer = refusal
            self.close_connection = True
        else:
            answer = self.server.answer(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        try:
            self._send(answer)
        finally:  # a client that hung up still gets its line: the work was done
            self.server.report(self.command, self.path, answer, time.perf_counter() - started)

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def parse_request(self) -> bool:
        """HTTP/1.0 and 1.1 only; API Gateway speaks no HTTP/0.9."""
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "Bad Request")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own refusals (a line too long, a bad request line) in the API's JSON shape."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # an HTTP/0.9 client gets a status line too
        self._send(Answer.message(code, message or HTTPStatus(code).phrase))

    def _request_body(self) -> tuple[bytes, Answer | None]:
        """The body, or the answer that refuses it: a bad length (400), too long (413)."""
        length_header = self.headers.get_all("Content-Length") or []
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if len(length_header) > 1 or (length_header and chunked):
            return b"", Answer.message(400, "Bad Request")
        if chunked:
            return self._chunked_body()
        raw = length_header[0].strip() if length_header else "0"
        if not raw.isdigit() or not raw.isascii():
            return b"", Answer.message(400, "Bad Request")
        if int(raw) > MAX_BODY_BYTES:
            return b"", Answer.message(413, "Request Entity Too Large")
        body = self.rfile.read(int(raw))
        return (body, None) if len(body) == int(raw) else (b"", Answer.message(400, "Bad Request"))

    def _chunked_body(self) -> tuple[bytes, Answer | None]:
        chunks, total = [], 0
        while True:
            size_line = self.rfile.readline(100).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                return b"", Answer.message(400, "Bad Request")
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                return b"", Answer.message(413, "Request Entity Too Large")
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks), None

    def __getattr__(self, name: str) -> object:
        """Every method, even one HTTP does not define, goes to the routes (ANY catches it), as in API Gateway."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, *_args: object) -> None:
        pass
