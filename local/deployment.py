"""template.yaml deployed on this machine: moto as the cloud, the template's queues and tables in it, and a
pool of instances per function, each function with its own environment.

Variables override the template the way `sam local --env-vars` does, for the variables a function
declares. Where the template sets a variable from a parameter (`!Ref MaxReceiveCount`), the override
sets the parameter, so everything else built from it (the queue's redrive) follows.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from local import template as tpl
from local.cloud import MotoServer, create_queues, create_tables, planned_refs
from local.instance import LogSink
from local.pool import FunctionPool
from local.sandbox import REGION, Sandbox, runtime_client, sandbox

STACK_NAME = "local"
DEFAULT_CONCURRENCY = 4  # instances per function on a laptop, where the template reserves none
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local"}
OVERRIDABLE = (
    "UPSTREAM_URL",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_ATTEMPTS",
    "STORE_BACKEND",
    "DB_PATH",
    "DB_MAX_MB",
    "MAX_RECEIVE_COUNT",
    "MIN_FETCH_INTERVAL",
    "POWERTOOLS_LOG_LEVEL",
)


class DeploymentError(ValueError):
    """The template cannot be deployed locally as configured; the message says why."""


@dataclass
class DeployOptions:
    overrides: dict[str, str] = field(default_factory=dict)  # for every function that declares the variable
    function_overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # {function: {variable: value}}
    # an --env-vars file: {"Parameters": {variable: value}} for all functions, {Function: {...}} for one
    visibility_timeout: int | None = None  # replaces the template's, so retries come sooner locally
    runtime_client: str = ""  # "", "awslambdaric" or "python"
    host: str = "127.0.0.1"
    cloud_port: int = 0
    concurrency: int = DEFAULT_CONCURRENCY


class Deployment:
    def __init__(self, template: tpl.Template, options: DeployOptions, log: LogSink):
        self.template, self.options, self._log = template, options, log
        self.parameters = self._parameters()
        self.refs: dict[str, Any] = {**self.parameters, "AWS::Region": REGION, "AWS::StackName": STACK_NAME}
        self.conditions = template.conditions(self.refs)
        self.client = runtime_client(options.runtime_client)
        self.queues: dict[str, dict[str, str]] = {}
        self.tables: dict[str, dict[str, str]] = {}
        self.pools: dict[str, FunctionPool] = {}
        self._moto: MotoServer | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()  # boto3's default session makes one client at a time

    def start(self) -> Deployment:
        _check_port_free(self.options.host, self.options.cloud_port)
        try:
            self._moto = MotoServer(self.options.host, self.options.cloud_port)
        except OSError as exc:  # taken since it was checked
            raise DeploymentError(f"MOTO_PORT {self.options.cloud_port} cannot be used: {exc}") from None
        self.cloud_url = self._moto.url
        self.sqs = self.aws("sqs")
        self.queues = create_queues(self.sqs, self.template, self.refs, self.options.visibility_timeout)
        self.tables = create_tables(functools.partial(self.aws, "dynamodb"), self.template, self.refs, self.conditions)
        for name, function in self.template.functions.items():
            box = sandbox(function, self.variables(function), self.client, CREDENTIALS)
            limit = function.reserved_concurrency or self.options.concurrency
            throttle = function.reserved_concurrency is not None
            self.pools[name] = FunctionPool(box, self._log, limit=limit, throttle=throttle)
        return self

    def stop(self) -> None:
        for pool in self.pools.values():
            pool.stop()
        if self._moto is not None:
            self._empty_the_cloud()
            self._moto.stop()
            self._moto = None

    def _empty_the_cloud(self) -> None:
        """Delete what this deployment created: moto's state outlives its server in this process, so a queue
        left behind would hand the next deployment's messages to a receive still waiting from this one."""
        with contextlib.suppress(Exception):  # a cloud that cannot be reached holds nothing to take
            for queue in self.queues.values():
                self.sqs.delete_queue(QueueUrl=queue["url"])
            for table in self.tables.values():
                self.aws("dynamodb").delete_table(TableName=table["name"])

    def aws(self, service: str) -> Any:
        """The deployment's client for `service` in its cloud, made at the first call."""
        import boto3  # type: ignore[import-untyped]

        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = boto3.client(
                    service, endpoint_url=self.cloud_url, region_name=REGION, **_boto_credentials()
                )
            return self._clients[service]

    def sandbox(self, function: str) -> Sandbox:
        return self.pools[function].sandbox

    def variables(self, function: tpl.Function) -> dict[str, str]:
        """The function's own variables: the template's, resolved, with the overrides it declares.

        AWS_ENDPOINT_URL points at the emulated cloud unless overridden, declared or not: a local
        function never reaches real AWS.
        """
        return self._variables(function, self.refs, self.cloud_url)

    def planned_sandbox(self, function: tpl.Function) -> Sandbox:
        """The function's sandbox before anything is created, enough to check it and its settings: each queue
        or table it refers to stands in for its own names, and the cloud has no URL yet."""
        refs = self.refs | planned_refs(self.template, self.conditions)
        return sandbox(function, self._variables(function, refs, ""), self.client, CREDENTIALS)

    def _variables(self, function: tpl.Function, refs: dict[str, Any], cloud_url: str) -> dict[str, str]:
        try:
            resolved = tpl.resolve(function.environment, refs, self.conditions)  # AWS::NoValue drops one
            declared = {name: _text(value) for name, value in resolved.items()}
        except KeyError as exc:
            raise DeploymentError(f"{function.name}: the template refers to {exc}, which it does not define") from None
        wanted = {"AWS_ENDPOINT_URL": cloud_url} | self._overrides(function.name)
        return {"AWS_ENDPOINT_URL": cloud_url} | declared | {k: v for k, v in wanted.items() if k in declared}

    def _overrides(self, function: str | None = None) -> dict[str, str]:
        every = self.options.overrides | self.options.function_overrides.get("Parameters", {})
        return every | self.options.function_overrides.get(function, {}) if function else every

    def _parameters(self) -> dict[str, Any]:
        """The template's parameter defaults; an override of a variable set by `!Ref Parameter` sets it,
        if CloudFormation would take the value for that parameter."""
        parameters = dict(self.template.parameters)
        definitions = self.template.raw.get("Parameters", {})
        overrides = self._overrides()
        for function in self.template.functions.values():
            for name, value in function.environment.items():
                if name in overrides and isinstance(value, dict) and value.get("Ref") in parameters:
                    parameter = value["Ref"]
                    problem = tpl.parameter_problem(definitions[parameter], overrides[name])
                    if problem:
                        raise DeploymentError(f"{name} sets the template parameter {parameter}, which {problem}; "
                                              f"got {overrides[name]!r}")  # fmt: skip
                    parameters[parameter] = overrides[name]
        return parameters


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def overrides_from(env: Mapping[str, str]) -> dict[str, str]:
    """The overridable variables set (non-empty) in `env`."""
    return {name: env[name] for name in OVERRIDABLE if env.get(name)}


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port in use with a message: moto's server, given one, prints its own and exits."""
    if not port:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself will
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DeploymentError(f"MOTO_PORT {port} cannot be used: {exc.strerror}") from None
