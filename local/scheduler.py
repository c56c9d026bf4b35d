"""EventBridge's scheduled rule: invoke the function with a Scheduled Event at the rule's rate."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime

from local.runtime import FunctionRuntime
from local.serving import BackgroundLoop

UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


class ScheduleError(ValueError):
    """A schedule expression the local stack cannot run."""


def rate_seconds(expression: str) -> float:
    """Seconds between firings of `rate(N unit)`; the local stack also takes `rate(N seconds)`."""
    match = re.fullmatch(r"\s*rate\(\s*(\d+)\s+(\w+)\s*\)\s*", expression)
    units = {**UNITS, "second": 1, "seconds": 1}
    if not match or match.group(2) not in units or int(match.group(1)) < 1:
        raise ScheduleError(
            f"cannot run the schedule {expression!r} locally: use rate(N minute[s]|hour[s]|day[s]|second[s])"
        )
    return int(match.group(1)) * units[match.group(2)]


class Scheduler(BackgroundLoop):
    def __init__(self, runtime: FunctionRuntime, expression: str, report):
        super().__init__(f"schedule-{runtime.function.name}")
        self.runtime, self.expression, self.report = runtime, expression, report
        self.interval = rate_seconds(expression)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            started = time.perf_counter()
            try:
                result, error = self.runtime.invoke(scheduled_event(self.runtime.function.name)), None
            except Exception as exc:  # a failed run is reported; the rule keeps firing, as EventBridge's does
                result, error = None, exc
            self.report(result, error, time.perf_counter() - started)


def scheduled_event(rule: str) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{rule}"],
        "detail": {},
    }
