"""Lambda's Runtime API for one instance: hands the runtime its next invocation and takes back the answer.

Each instance gets a server of its own on a loopback port, as each Lambda sandbox has its own
endpoint: `AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`. The routes are Lambda's:
`GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`,
`POST .../invocation/{id}/error` and `POST /2018-06-01/runtime/init/error`.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from local.serving import QuietHTTPServer

PREFIX = "/2018-06-01/runtime"
MAX_RESPONSE_BYTES = 6_291_556  # Lambda's limit on a synchronous response, in bytes as serialized
INVOCATION = re.compile(rf"{PREFIX}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)")


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int  # epoch milliseconds
    function_arn: str
    trace_id: str
    started: float = 0.0  # monotonic time the runtime took it
    done: threading.Event = field(default_factory=threading.Event)
    response: bytes | None = None
    error: dict[str, Any] | None = None

    def finish(self, *, response: bytes | None = None, error: dict[str, Any] | None = None) -> bool:
        """Record the outcome once; a later one (a late answer after a timeout) is ignored."""
        if self.done.is_set():
            return False
        self.response, self.error = response, error
        self.done.set()
        return True


class RuntimeApi(QuietHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._next: queue.Queue[Invocation | None] = queue.Queue()
        self.current: Invocation | None = None
        self.init_error: dict[str, Any] | None = None
        self.initialised = threading.Event()  # set at the runtime's first /next, or at its init error
        self.initialised_at = 0.0

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def submit(self, invocation: Invocation) -> None:
        self._next.put(invocation)

    def close(self) -> None:
        self._next.put(None)  # releases a runtime waiting on /next
        self.stop()

    def next_invocation(self) -> Invocation | None:
        if not self.initialised.is_set():
            self.initialised_at = time.monotonic()
            self.initialised.set()
        invocation = self._next.get()
        if invocation is not None:
            invocation.started = time.monotonic()
            self.current = invocation
        return invocation

    def fail_init(self, error: dict[str, Any]) -> None:
        self.init_error = error
        if not self.initialised.is_set():
            self.initialised_at = time.monotonic()
            self.initialised.set()


class _Handler(BaseHTTPRequestHandler):
    server: RuntimeApi
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or every answer waits for the runtime's delayed ACK (40 ms)

    def do_GET(self) -> None:
        if self.path != f"{PREFIX}/invocation/next":
            return self._reply(404, {"errorType": "InvalidRoute", "errorMessage": self.path})
        invocation = self.server.next_invocation()
        if invocation is None:
            return self._reply(410, {"errorType": "Shutdown", "errorMessage": "the instance is stopping"})
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,  # awslambdaric crashes without it
        }
        self._send(200, invocation.payload, headers)

    def do_POST(self) -> None:
        body = self._body()
        if self.path == f"{PREFIX}/init/error":
            self.server.fail_init(_error_object(body))
            return self._reply(202, {"status": "OK"})
        match = INVOCATION.fullmatch(self.path)
        current = self.server.current
        if not match:
            return self._reply(404, {"errorType": "InvalidRoute", "errorMessage": self.path})
        if current is None or match["id"] != current.request_id:
            return self._reply(400, {"errorType": "InvalidRequestID", "errorMessage": "no such invocation"})
        if match["kind"] == "error":
            current.finish(error=_error_object(body))
        elif len(body) > MAX_RESPONSE_BYTES:
            message = (
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({MAX_RESPONSE_BYTES} bytes)."
            )
            current.finish(error={"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message})
            return self._reply(413, {"errorType": "RequestEntityTooLarge", "errorMessage": message})
        else:
            current.finish(response=body)
        self._reply(202, {"status": "OK"})

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _error_object(body: bytes) -> dict[str, Any]:
    """The runtime's error report; an unreadable one still counts as an error."""
    try:
        error = json.loads(body)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        return {"errorType": "Runtime.InvalidError", "errorMessage": body.decode(errors="replace")[:1000]}
    return error
