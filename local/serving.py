"""The HTTP server the local stack's parts share: threaded, and quiet when a client hangs up."""

from __future__ import annotations

import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Self


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class BackgroundLoop:
    """Daemon threads running `_run` until `stop()`; `_stopping` tells the loop when to end."""

    def __init__(self, name: str, threads: int = 1):
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True) for n in range(threads)]

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop; work under way may finish within `timeout` seconds."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _run(self) -> None:
        raise NotImplementedError
