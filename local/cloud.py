"""moto's server, and the template's queues and tables created in it with the template's own settings."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from local.template import Template, resolve

QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
TABLE_PROPERTIES = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
)

STOP_POLL_SECONDS = 0.05  # how often the server looks for a stop: moto's own ThreadedMotoServer waits 0.5 s


class MotoServer:
    """moto's server in a thread of this process, as moto's ThreadedMotoServer runs it, but quick to stop."""

    def __init__(self, host: str, port: int):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # it logs every request
        app = DomainDispatcherApplication(create_backend_app)
        try:
            self._server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
        except SystemExit:  # werkzeug prints why it cannot listen, then exits
            raise OSError(f"moto's server cannot listen on {host}:{port}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, args=(STOP_POLL_SECONDS,), daemon=True)
        self._thread.start()
        self.url = "http://{}:{}".format(*self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


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


def create_tables(
    dynamodb_client: Callable[[], Any], template: Template, refs: dict[str, Any], conditions: Mapping[str, bool]
) -> dict[str, dict[str, str]]:
    """Create every AWS::DynamoDB::Table whose condition holds, named by its logical id, as the queues are;
    returns {logical id: {name, arn}}. `refs` gains each table's Ref and Arn. The client is made only if a
    table is created: making the first costs a twentieth of a second, and a SQLite stack creates none."""
    tables: dict[str, dict[str, str]] = {}
    dynamodb = None
    for name, resource in made_tables(template, conditions).items():
        dynamodb = dynamodb or dynamodb_client()
        props = resolve(resource.get("Properties", {}), refs, conditions)
        settings = {k: props[k] for k in TABLE_PROPERTIES if k in props}
        if "SSESpecification" in props:  # CloudFormation spells the API's Enabled as SSEEnabled
            encryption = dict(props["SSESpecification"])
            settings["SSESpecification"] = {"Enabled": encryption.pop("SSEEnabled", False), **encryption}
        created = dynamodb.create_table(TableName=name, **settings)
        if "PointInTimeRecoverySpecification" in props:
            dynamodb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification=props["PointInTimeRecoverySpecification"]
            )
        tables[name] = {"name": name, "arn": created["TableDescription"]["TableArn"]}
        refs[name], refs[f"{name}.Arn"] = name, tables[name]["arn"]
    return tables


def made_tables(template: Template, conditions: Mapping[str, bool]) -> dict[str, dict[str, Any]]:
    """The AWS::DynamoDB::Table resources a deployment creates: those whose condition holds."""
    return {
        name: resource
        for name, resource in template.tables.items()
        if "Condition" not in resource or conditions[resource["Condition"]]
    }


def planned_refs(template: Template, conditions: Mapping[str, bool]) -> dict[str, str]:
    """The references that create_queues and create_tables will add, before they run: each queue and table
    stands in for its own names. A reference to anything else is as undefined as it will be then."""
    refs: dict[str, str] = {}
    for name in template.queues:
        refs |= {name: name, f"{name}.Arn": name, f"{name}.QueueName": name}
    for name in made_tables(template, conditions):
        refs |= {name: name, f"{name}.Arn": name}
    return refs
