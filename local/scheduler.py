"""EventBridge's scheduled rule: invoke the function with a Scheduled Event at the rule's rate."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from local.instance import InvokeResult
from local.pool import FunctionPool, Throttled
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
    def __init__(
        self,
        pool: FunctionPool,
        expression: str,
        report: Callable[[InvokeResult | None, datetime], None],
    ):
        super().__init__(f"schedule-{pool.name}")
        self.pool, self.expression, self.report = pool, expression, report
        self.interval = rate_seconds(expression)

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval
            event = json.dumps(scheduled_event(self.pool.name)).encode()
            try:
                result: InvokeResult | None = self.pool.invoke(event)
            except Throttled:  # the rule keeps firing, as EventBridge's does
                result = None
            self.report(result, datetime.now(UTC) + timedelta(seconds=max(0.0, next_at - time.monotonic())))


def scheduled_event(rule: str) -> dict[str, object]:
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
