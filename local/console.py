"""What the local stack prints: a line per request, per queue delivery and per schedule firing.

Functions' own output (Powertools' JSON logs, EMF metric lines, the platform's START/END/REPORT) is
folded into that view: warnings and errors show as short lines under the request that logged them,
anything that is not a JSON log (a traceback, a print, a timeout) shows as it is. `--verbose` shows
every line raw, prefixed with its function, as CloudWatch keeps them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

QUIET_LEVELS = ("DEBUG", "INFO")
PLATFORM_LINES = ("START RequestId:", "END RequestId:", "REPORT RequestId:")
CONTEXT_KEYS = {
    "level", "location", "message", "timestamp", "service", "xray_trace_id", "cold_start", "function_name",
    "function_memory_size", "function_arn", "function_request_id", "correlation_id", "sampling_rate",
}  # fmt: skip


class Console:
    def __init__(self, *, verbose: bool = False, stream: TextIO | None = None):
        self.verbose = verbose
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def line(self, source: str, message: str) -> None:
        with self._lock:
            self._stream.write(f"{time.strftime('%H:%M:%S')} {source:<9} {message}\n")
            self._stream.flush()

    def raw(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def function_output(self, function: str, _request_id: str | None, text: str) -> None:
        """A line a function's process wrote, or the platform wrote for it."""
        if self.verbose:
            self.raw(f"  {function}  {text}")
            return
        folded = fold(text)
        if folded is not None:
            self.raw(f"  {function}  {folded}")


def fold(text: str) -> str | None:
    """The short form of one log line, or None for a line the default view leaves out."""
    if text.startswith(PLATFORM_LINES):
        return None
    record = json_record(text)
    if record is None:
        return text
    if "_aws" in record:  # an EMF metrics line
        return None
    level = str(record.get("level", ""))
    if not level or level in QUIET_LEVELS:
        return None if level else text
    return f"{level} {record.get('message', '')}{_extras(record)}"


def json_record(text: str) -> dict[str, Any] | None:
    """A log line as a JSON object, or None for a line that is not one."""
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _extras(record: dict[str, Any]) -> str:
    extras = {k: v for k, v in record.items() if k not in CONTEXT_KEYS}
    return "".join(f" {k}={json.dumps(v, default=str)}" for k, v in extras.items())
