"""The template's queues, created on an SQS endpoint (moto here) with the template's own settings."""

from __future__ import annotations

import json
from typing import Any

from local.template import Template, resolve

QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")


def create_queues(
    sqs: Any, template: Template, refs: dict[str, Any], visibility_timeout: int | None = None
) -> dict[str, dict[str, str]]:
    """Create every AWS::SQS::Queue, dead-letter queues first; returns {logical id: {url, arn}}.

    `refs` resolves the template's references (parameters); it gains each queue's Ref and Arn.
    """
    queues: dict[str, dict[str, str]] = {}
    pending = dict(template.queues)
    while pending:
        for name, props in list(pending.items()):
            target = props.get("RedrivePolicy", {}).get("deadLetterTargetArn", {}).get("Fn::GetAtt", [None])[0]
            if target in pending:
                continue
            queues[name] = _create(sqs, name, resolve(props, refs), visibility_timeout)
            refs[name] = queues[name]["url"]
            refs[f"{name}.Arn"] = queues[name]["arn"]
            refs[f"{name}.QueueName"] = queues[name]["url"].rsplit("/", 1)[-1]
            del pending[name]
    return queues


def _create(sqs: Any, name: str, props: dict[str, Any], visibility_timeout: int | None) -> dict[str, str]:
    fifo = bool(props.get("FifoQueue"))
    attributes = {k: str(props[k]) for k in QUEUE_ATTRIBUTES if k in props}
    if visibility_timeout is not None:
        attributes["VisibilityTimeout"] = str(visibility_timeout)
    if fifo:
        attributes["FifoQueue"] = "true"
        attributes["ContentBasedDeduplication"] = str(bool(props.get("ContentBasedDeduplication"))).lower()
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    url = sqs.create_queue(QueueName=f"{name}.fifo" if fifo else name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"url": url, "arn": arn}
