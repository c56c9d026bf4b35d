"""A sample upstream in JSONPlaceholder's shape, on loopback, for demos, tests and benchmarks.

GET /posts serves generated posts. Like json-server (which JSONPlaceholder runs on) it pages with
`_page` and `_limit` and links pages with `Link: <...>; rel="next"`; with `page_size` set it pages
even when the client asks for no page. Tests script faults with `then_respond`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.serving import QuietHTTPServer

USERS = 10


def make_posts(count: int, start: int = 1) -> list[dict[str, Any]]:
    """Posts shaped like JSONPlaceholder's: ten users, each with a run of consecutive ids."""
    per_user = max(1, count // USERS)
    return [
        {
            "userId": min(USERS, (i - start) // per_user + 1),
            "id": i,
            "title": f"post {i} title",
            "body": f"body of post {i}\nwritten by the sample upstream",
        }
        for i in range(start, start + count)
    ]


def tiny_posts_page(size: int) -> bytes:
    """A JSON list of as many tiny posts as fit in `size` bytes: the most records a page of that size holds."""
    records, used = [], 2
    for post_id in itertools.count(1):
        record = b'{"id":%d,"userId":1,"title":"t","body":"b"}' % post_id
        if used + len(record) + 1 > size:
            break
        records.append(record)
        used += len(record) + 1
    return b"[" + b",".join(records) + b"]"


def wide_record_page(size: int) -> bytes:
    """A JSON list of one post, `size` bytes long, whose extra field is a list of empty lists: the shape
    that costs the most memory to decode for its bytes."""
    head, tail = b'[{"id":1,"userId":1,"title":"t","body":"b","wide":[[]', b"]}]"
    return head + b",[]" * ((size - len(head) - len(tail)) // 3) + tail


@dataclass
class Scripted:
    status: int = 200
    body: bytes | str | list[Any] | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class SampleUpstream:
    def __init__(self, count: int = 100, *, page_size: int = 0, host: str = "127.0.0.1", port: int = 0):
        self.posts = make_posts(count)
        self.page_size = page_size
        self.delay = 0.0  # seconds before each answer
        self.requests = 0
        self._script: deque[Scripted] = deque()
        self._server = QuietHTTPServer((host, port), _handler_for(self))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/posts"

    def then_respond(
        self,
        status: int = 200,
        body: bytes | str | list[Any] | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request with this instead of posts (calls queue up in order)."""
        self._script.append(Scripted(status, body, headers or {}, delay))

    def start(self) -> SampleUpstream:
        self._server.start_in_thread()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SampleUpstream:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def answer(self, path: str) -> Scripted:
        self.requests += 1
        if self._script:
            return self._script.popleft()
        parts = urlsplit(path)
        if parts.path.rstrip("/") != "/posts":
            return Scripted(404, {})
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            limit = int(query.get("_limit", self.page_size or 0))
            page = int(query.get("_page", 1 if limit else 0))
        except ValueError:
            return Scripted(400, {"error": "bad _page or _limit"})
        if not limit:
            return Scripted(200, self.posts)
        chunk = self.posts[(page - 1) * limit : page * limit]
        headers = {}
        if page * limit < len(self.posts):
            headers["Link"] = f'<{self.url}?_page={page + 1}&_limit={limit}>; rel="next"'
        return Scripted(200, chunk, headers)


def _handler_for(upstream: SampleUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            reply = upstream.answer(self.path)
            if reply.delay or upstream.delay:
                time.sleep(reply.delay or upstream.delay)
            body = reply.body
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            payload = body.encode() if isinstance(body, str) else body
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except ConnectionError:
                pass

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--count", type=int, default=100, help="how many posts to serve")
    parser.add_argument("--page-size", type=int, default=0, help="page even unasked, this many a page")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    args = parser.parse_args()
    upstream = SampleUpstream(args.count, page_size=args.page_size, port=args.port)
    upstream.delay = args.delay
    print(f"sample upstream: {upstream.url} ({args.count} posts)", flush=True)
    try:
        upstream._server.serve_forever()
    except KeyboardInterrupt:
        upstream.stop()


if __name__ == "__main__":
    main()
