"""The API on loopback: each HTTP request becomes an API Gateway proxy event for the real handler."""

from __future__ import annotations

import hmac
import json
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from local import apigw
from local.runtime import FunctionRuntime
from local.serving import QuietHTTPServer
from local.template import Route

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


class ApiServer(QuietHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        routes: list[Route],
        runtimes: dict[str, FunctionRuntime],
        report: Callable[[str, str, int, float, str], None],
        api_key: str = "",
    ):
        super().__init__(address, _RequestHandler)
        self.routes, self.runtimes, self.report, self.api_key = routes, runtimes, report, api_key

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client_ip: str):
        """Status, headers and body for one request, and the function that served it."""
        matched = apigw.match(self.routes, method, target.partition("?")[0])
        if matched is None:
            message = json.dumps({"message": "Missing Authentication Token"}).encode()
            return 403, [("Content-Type", "application/json")], message, "-"
        route, params = matched
        if route.api_key_required and self.api_key and not _has_key(headers, self.api_key):
            return 403, [("Content-Type", "application/json")], b'{"message": "Forbidden"}', route.function
        event = apigw.request_event(route, params, method, target, headers, body, client_ip)
        try:
            result = self.runtimes[route.function].invoke(event)
        except Exception:
            traceback.print_exc()
            return (*apigw.bad_gateway(), route.function)
        return (*apigw.http_response(result), route.function)


def _has_key(headers: list[tuple[str, str]], key: str) -> bool:
    given = [value for name, value in headers if name.lower() == "x-api-key"]
    return len(given) == 1 and hmac.compare_digest(given[0].encode(), key.encode())


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            status, headers, body, function = (
                413,
                [("Content-Type", "application/json")],
                b'{"message":"Request too long"}',
                "-",
            )
        else:
            request_body = self.rfile.read(length) if length > 0 else b""
            status, headers, body, function = self.server.answer(
                self.command, self.path, list(self.headers.items()), request_body, self.client_address[0]
            )
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.report(self.command, self.path, status, time.perf_counter() - started, function)

    def __getattr__(self, name: str):
        """Every method, even one HTTP does not define, goes to the routes (ANY catches it), as in API Gateway."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, *_args) -> None:
        pass
