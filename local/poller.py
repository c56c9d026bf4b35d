"""Lambda's SQS event source mapping: long-poll, invoke the function with a batch, delete what succeeded.

Up to `MaximumConcurrency` batches run at once. Records named in `batchItemFailures` (the whole batch
if the invocation fails or times out) stay on the queue; the queue's redrive policy moves a message
to the dead-letter queue once it has been received `maxReceiveCount` times. A failed delivery comes
back after `retry_delay` seconds instead of the queue's whole visibility timeout, so local retries
are quick while a running delivery is never handed out twice.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.instance import InvokeResult
from local.pool import FunctionPool, Throttled
from local.serving import BackgroundLoop

WAIT_SECONDS = 20  # the long poll of Lambda's pollers: a message wakes it at once, and a stop does not wait for it


@dataclass(frozen=True)
class Delivery:
    message: dict[str, Any]
    failed: bool

    @property
    def attempt(self) -> int:
        return int(self.message.get("Attributes", {}).get("ApproximateReceiveCount", 1))


Report = Callable[[list[Delivery], InvokeResult | None], None]


class QueuePoller(BackgroundLoop):
    def __init__(
        self,
        sqs: Any,
        queue: dict[str, str],
        pool: FunctionPool,
        *,
        batch_size: int,
        concurrency: int,
        retry_delay: int | None,
        report: Report,
    ):
        super().__init__(f"poll-{pool.name}", threads=concurrency)
        self.sqs, self.queue, self.pool = sqs, queue, pool
        self.batch_size = min(batch_size, 10)
        self.retry_delay, self.report = retry_delay, report
        self._batches = 0  # batches being invoked and settled
        self._batches_changed = threading.Condition()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop polling; batches being invoked may finish within `timeout` seconds. A receive still waiting is
        not waited for (botocore cannot cancel one): its thread ends when it returns, within WAIT_SECONDS, and
        what it brings stays in flight, as with a poller that died. The deployment deletes its queues as it
        stops, so such a receive can take nothing from a stack started after it in the same process."""
        with self._batches_changed:
            self._stopping.set()
            self._batches_changed.wait_for(lambda: not self._batches, timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the emulator must outlive a failed poll, as Lambda's poller does
                if not self._stopping.is_set():
                    print(f"poller: {type(exc).__name__}: {exc}", flush=True)
                    self._stopping.wait(1)

    def poll_once(self) -> None:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue["url"],
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=WAIT_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        with self._batches_changed:
            if not messages or self._stopping.is_set():
                return
            self._batches += 1
        try:
            failed, result = self._invoke(messages)
            deliveries = [Delivery(m, m["MessageId"] in failed) for m in messages]
            self._settle(deliveries)
            self.report(deliveries, result)
        finally:
            with self._batches_changed:
                self._batches -= 1
                self._batches_changed.notify_all()

    def _invoke(self, messages: list[dict[str, Any]]) -> tuple[set[str], InvokeResult | None]:
        """The ids of the messages that failed, and the invocation (None if it was throttled)."""
        every = {m["MessageId"] for m in messages}
        try:
            result = self.pool.invoke(json.dumps(self.sqs_event(messages)).encode())
        except Throttled:
            return every, None
        if not result.ok or result.response is None:
            return every, result
        answer = json.loads(result.response)
        failures = answer.get("batchItemFailures", []) if isinstance(answer, dict) else []
        named = {str(f.get("itemIdentifier")) for f in failures if isinstance(f, dict)}
        return (named if named <= every else every), result  # an unknown id fails the batch, as Lambda does

    def _settle(self, deliveries: list[Delivery]) -> None:
        done = [d.message for d in deliveries if not d.failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue["url"],
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        retry = [d.message for d in deliveries if d.failed]
        if retry and self.retry_delay is not None:
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue["url"],
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self.retry_delay}
                    for i, m in enumerate(retry)
                ],
            )

    def sqs_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        region = self.queue["arn"].split(":")[3]
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": _lambda_attributes(m.get("MessageAttributes", {})),
                    "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue["arn"],
                    "awsRegion": region,
                }
                for m in messages
            ]
        }


def _lambda_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS's MessageAttributes in the shape Lambda's SQS event uses."""
    return {
        name: {
            "stringValue": a.get("StringValue"),
            "binaryValue": a.get("BinaryValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": a["DataType"],
        }
        for name, a in attributes.items()
    }
