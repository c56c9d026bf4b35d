"""Lambda's SQS event source mapping: long-poll, invoke the function with a batch, delete what succeeded.

Records named in `batchItemFailures` (or the whole batch, if the function raises) stay on the
queue and come back after the visibility timeout; the queue's redrive policy moves a message to
the dead-letter queue once it has been received `maxReceiveCount` times.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from local.runtime import FunctionRuntime
from local.serving import BackgroundLoop

WAIT_SECONDS = 1  # long-poll window; also how soon the poller notices it should stop


class QueuePoller(BackgroundLoop):
    def __init__(
        self,
        sqs,
        queue: dict,
        runtime: FunctionRuntime,
        batch_size: int,
        report: Callable[[list[dict], set[str], float], None],
    ):
        super().__init__(f"poll-{runtime.function.name}")
        self.sqs, self.queue, self.runtime = sqs, queue, runtime
        self.batch_size = min(batch_size, 10)
        self.report = report

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
        if not messages:
            return
        started = time.perf_counter()
        failed = self._invoke(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue["url"],
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        self.report(messages, failed, time.perf_counter() - started)

    def _invoke(self, messages: list[dict]) -> set[str]:
        """The ids of the messages that failed."""
        try:
            result = self.runtime.invoke(self.sqs_event(messages))
            return {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        except Exception as exc:
            print(f"{self.runtime.function.name} raised {type(exc).__name__}: {exc}", flush=True)
            return {m["MessageId"] for m in messages}

    def sqs_event(self, messages: list[dict]) -> dict:
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


def _lambda_attributes(attributes: dict) -> dict:
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
