"""One Lambda instance: a process running a runtime client against a Runtime API of its own.

The instance runs one invocation at a time. It is killed when an invocation passes the function's
timeout or its memory passes the function's MemorySize, and reports each invocation as Lambda's
platform does: `START`, the function's own output, `END`, `REPORT`.
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.runtime_api import Invocation, RuntimeApi
from local.sandbox import Sandbox

INIT_TIMEOUT_SECONDS = 10.0  # Lambda's limit on the init phase of an on-demand function
WATCH_SECONDS = 0.02  # how often a running invocation's process, clock and memory are looked at
KEPT_LINES = 200  # of an invocation's output, kept with its result for the console's summary

LogSink = Callable[[str, str | None, str], None]  # (function, request id or None, line)


@dataclass(frozen=True)
class InvokeResult:
    request_id: str
    response: bytes | None  # the function's answer, as JSON
    error: dict[str, Any] | None  # Lambda's error object: errorType, errorMessage, ...
    status: str  # "success", "error" or "timeout"
    duration_ms: float
    init_ms: float | None  # set on a cold start
    max_memory_mb: int | None
    logs: tuple[str, ...] = ()  # the first lines the function wrote during the invocation

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Instance:
    def __init__(self, sandbox: Sandbox, log: LogSink):
        self.sandbox, self._log = sandbox, log
        self.api = RuntimeApi()
        self.api.start_in_thread()
        self._spawned = time.monotonic()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and runtime client
            sandbox.command,
            cwd=sandbox.code_dir,
            env={**sandbox.environment, "AWS_LAMBDA_RUNTIME_API": self.api.address},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal goes to the stack, which stops instances itself
        )
        self._output_lock = threading.Lock()
        self._partial = b""
        self._request_id: str | None = None
        self._lines: list[str] = []
        self._peak_kib = 0
        self.cold = True
        self._stopped = False
        self.last_used = time.monotonic()
        self._reader = threading.Thread(target=self._read_output, name=f"output-{sandbox.name}", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def invoke(self, payload: bytes) -> InvokeResult:
        request_id = str(uuid.uuid4())
        function = self.sandbox.name
        init_ms = self._wait_for_init() if self.cold else None
        started = time.monotonic()
        if init_ms is not None and self.api.init_error is not None:
            self._log(function, None, f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: error")
            return self._result(request_id, started, init_ms, error=self.api.init_error, status="error")
        if init_ms is None and not self.api.initialised.is_set():
            self.kill()
            error = {"errorType": "Runtime.InitTimeout", "errorMessage": "the runtime did not start within 10 s"}
            return self._result(request_id, started, None, error=error, status="error")
        self.cold = False
        invocation = Invocation(
            request_id=request_id,
            payload=payload,
            deadline_ms=int(time.time() * 1000 + self.sandbox.timeout * 1000),
            function_arn=self.sandbox.function_arn,
            trace_id=_trace_id(),
        )
        self._request_id, self._lines = request_id, []
        self._log(function, request_id, f"START RequestId: {request_id} Version: $LATEST")
        self.api.submit(invocation)
        status = self._watch(invocation)
        self._drain_output()
        result = self._result(
            request_id, invocation.started or started, init_ms, response=invocation.response,
            error=invocation.error, status=status,
        )  # fmt: skip
        self._log(function, request_id, f"END RequestId: {request_id}")
        self._log(function, request_id, _report_line(result, self.sandbox.memory_size))
        self._request_id = None
        self.last_used = time.monotonic()
        return result

    def _wait_for_init(self) -> float | None:
        """Milliseconds from spawn to the runtime's first call, or None if it never came."""
        deadline = self._spawned + INIT_TIMEOUT_SECONDS
        while not self.api.initialised.wait(WATCH_SECONDS):
            if not self.alive or time.monotonic() > deadline:
                if not self.alive and self.api.init_error is None:
                    self.api.fail_init(_exit_error(None, self.process.returncode))
                    return (time.monotonic() - self._spawned) * 1000
                return None
        return (self.api.initialised_at - self._spawned) * 1000

    def _watch(self, invocation: Invocation) -> str:
        """Wait for the answer; enforce the timeout and the memory size; say how the invocation ended."""
        deadline = time.monotonic() + self.sandbox.timeout
        limit_kib = self.sandbox.memory_size * 1024
        while not invocation.done.wait(WATCH_SECONDS):
            if time.monotonic() >= deadline:
                self.kill()
                stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                message = f"{stamp} {invocation.request_id} Task timed out after {self.sandbox.timeout:.2f} seconds"
                invocation.finish(error={"errorType": "Sandbox.Timedout", "errorMessage": message})
                self._log(self.sandbox.name, invocation.request_id, message)
                return "timeout"
            memory = memory_kib(self.process.pid)
            self._peak_kib = max(self._peak_kib, memory[1] if memory else 0)
            if memory and memory[0] > limit_kib:
                self.kill()
                invocation.finish(error=_exit_error(invocation.request_id, -9, out_of_memory=True))
            elif not self.alive:
                invocation.finish(error=_exit_error(invocation.request_id, self.process.returncode))
        return "success" if invocation.error is None else "error"

    def _result(
        self,
        request_id: str,
        started: float,
        init_ms: float | None,
        *,
        status: str,
        response: bytes | None = None,
        error: dict[str, Any] | None = None,
    ) -> InvokeResult:
        memory = memory_kib(self.process.pid) if self.alive else None
        peak_kib = max(self._peak_kib, memory[1] if memory else 0)
        return InvokeResult(
            request_id=request_id,
            response=response,
            error=error,
            status=status,
            duration_ms=(time.monotonic() - started) * 1000,
            init_ms=init_ms,
            max_memory_mb=math.ceil(peak_kib / 1024) if peak_kib else None,
            logs=tuple(self._lines),
        )

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.kill()
        self.api.close()
        self._reader.join(timeout=2)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        try:
            while not select.select([fd], [], [], 0.5)[0] or self._pump(fd):
                pass
        except (OSError, ValueError):  # the pipe was closed by stop()
            pass

    def _drain_output(self) -> None:
        """Take what the process has written so far, so its lines come before END in the log."""
        if self.process.stdout is not None and not self.process.stdout.closed:
            self._pump(self.process.stdout.fileno(), whole_lines=False)

    def _pump(self, fd: int, *, whole_lines: bool = True) -> bool:
        """Log the lines waiting on the pipe (a partial last line too, unless `whole_lines`); False at its end."""
        with self._output_lock:
            data, open_ = self._partial, True
            try:
                while select.select([fd], [], [], 0)[0]:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        open_ = False
                        break
                    data += chunk
            except (OSError, ValueError):
                open_ = False
            lines = data.split(b"\n")
            self._partial = lines.pop() if whole_lines and open_ else b""
            for line in lines:
                if line.strip():
                    self._emit(line.decode(errors="replace").rstrip("\r"))
            return open_

    def _emit(self, text: str) -> None:
        if self._request_id is not None and len(self._lines) < KEPT_LINES:
            self._lines.append(text)
        self._log(self.sandbox.name, self._request_id, text)


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(resident, peak resident) memory of a process in KiB, where /proc tells (Linux); else None."""
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115 - a tiny read, closed by GC at once
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (KeyError, ValueError):
        return None


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _exit_error(request_id: str | None, returncode: int | None, *, out_of_memory: bool = False) -> dict[str, Any]:
    """Lambda's error for a runtime process that ended without answering."""
    how = (
        f"signal: {_signal_name(-returncode)}"
        if returncode is not None and returncode < 0
        else f"exit status {returncode}"
    )
    prefix = f"RequestId: {request_id} " if request_id else ""
    kind = "Runtime.OutOfMemory" if out_of_memory else "Runtime.ExitError"
    return {"errorType": kind, "errorMessage": f"{prefix}Error: Runtime exited with error: {how}"}


def _signal_name(number: int) -> str:
    return {9: "killed", 15: "terminated", 11: "segmentation fault", 6: "aborted"}.get(number, f"signal {number}")


def _report_line(result: InvokeResult, memory_size: int) -> str:
    fields = [
        f"REPORT RequestId: {result.request_id}",
        f"Duration: {result.duration_ms:.2f} ms",
        f"Billed Duration: {math.ceil(result.duration_ms)} ms",
        f"Memory Size: {memory_size} MB",
        f"Max Memory Used: {result.max_memory_mb if result.max_memory_mb is not None else '?'} MB",
    ]
    if result.init_ms is not None:
        fields.append(f"Init Duration: {result.init_ms:.2f} ms")
    if result.status != "success":
        fields.append(f"Status: {result.status}")
        if result.error and result.status == "error":
            fields.append(f"Error Type: {result.error.get('errorType', 'Unhandled')}")
    return "\t".join(fields)
