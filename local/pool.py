"""A function's instances, as Lambda scales them: warm ones reused, new ones started on demand up to a
limit, idle ones reaped, all of them recycled when the code changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from local.instance import Instance, InvokeResult, LogSink
from local.sandbox import Sandbox


class Throttled(Exception):
    """Every instance the function may have is busy (its reserved concurrency is reached)."""


class FunctionPool:
    """Instances of one function. At `limit` busy instances, a new invocation is throttled when `throttle`
    is set (a reserved concurrency, as Lambda does), else it waits for one to free (a local budget)."""

    def __init__(self, sandbox: Sandbox, log: LogSink, *, limit: int, throttle: bool):
        self.sandbox, self._log = sandbox, log
        self.limit, self.throttle = limit, throttle
        self._idle: list[Instance] = []
        self._busy: set[Instance] = set()
        self._starting = 0
        self._retired: set[Instance] = set()  # busy when the code changed: stopped once they finish
        self._changed = threading.Condition()

    @property
    def name(self) -> str:
        return self.sandbox.name

    def invoke(self, payload: bytes) -> InvokeResult:
        instance = self._acquire()
        try:
            return instance.invoke(payload)
        finally:
            self._release(instance)

    def busy(self) -> int:
        with self._changed:
            return len(self._busy) + self._starting

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation is running; False if some still are after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._busy or self._starting:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def reap(self, idle_seconds: float) -> None:
        """Stop instances idle for longer than `idle_seconds`."""
        now = time.monotonic()
        with self._changed:
            stale = [i for i in self._idle if now - i.last_used > idle_seconds or not i.alive]
            self._idle = [i for i in self._idle if i not in stale]
        _stop_all(stale)

    def recycle(self) -> None:
        """New code: idle instances stop now, busy ones when they finish; the next invocation starts fresh."""
        with self._changed:
            idle, self._idle = self._idle, []
            self._retired |= self._busy
        _stop_all(idle)

    def kill(self) -> None:
        """Kill every instance's process at once, as a last resort."""
        with self._changed:
            every = [*self._idle, *self._busy]
        for instance in every:
            instance.kill()

    def stop(self) -> None:
        with self._changed:
            every = [*self._idle, *self._busy]
            self._idle, self._retired = [], set(self._busy)
        _stop_all(every)

    def _acquire(self) -> Instance:
        """A warm instance, else a new one; waits or throttles at the limit."""
        warm = self._reserve()
        if warm is not None:
            return warm
        started: Instance | None = None
        try:
            started = Instance(self.sandbox, self._log)
            return started
        finally:
            with self._changed:
                self._starting -= 1
                if started is not None:
                    self._busy.add(started)
                self._changed.notify_all()

    def _reserve(self) -> Instance | None:
        """A warm instance, or None with a place reserved for a new one."""
        with self._changed:
            while True:
                while self._idle:
                    instance = self._idle.pop()
                    if instance.alive:
                        self._busy.add(instance)
                        return instance
                    instance.stop()
                if len(self._busy) + self._starting < self.limit:
                    self._starting += 1
                    return None
                if self.throttle:
                    raise Throttled(f"{self.name} is at its reserved concurrency ({self.limit})")
                self._changed.wait()

    def _release(self, instance: Instance) -> None:
        with self._changed:
            self._busy.discard(instance)
            keep = instance.alive and instance not in self._retired
            self._retired.discard(instance)
            if keep:
                self._idle.append(instance)
            self._changed.notify_all()
        if not keep:
            instance.stop()


def _stop_all(instances: Iterable[Instance]) -> None:
    for instance in instances:
        instance.stop()
