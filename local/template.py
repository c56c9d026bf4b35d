"""template.yaml, read once: functions, routes, queues, tables, event sources and schedules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
NO_VALUE = object()  # AWS::NoValue: the property or list item is left out


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML with CloudFormation's short forms (!Ref, !GetAtt, !Sub, ...) read as their long forms; with
    libyaml where PyYAML has it, six times faster. libyaml lets a few things by that SAM's parser refuses
    (a tab after a colon): `sam validate` is the judge of a template, this only reads it."""


def _short_form(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _short_form)


@dataclass(frozen=True)
class Function:
    name: str
    code_uri: Path
    handler: str
    timeout: int
    environment: dict[str, Any]  # Globals merged with the function's own; references unresolved
    events: dict[str, dict[str, Any]]
    runtime: str = "python3.13"
    memory_size: int = 128
    reserved_concurrency: int | None = None
    layers: tuple[Path, ...] = ()  # each layer's content folder, in the order Lambda stacks them


@dataclass(frozen=True)
class Route:
    method: str  # an HTTP method, or ANY
    path: str  # API Gateway's resource path, e.g. /fetch/status/{job_id}
    function: str
    api_key_required: bool = False
    timeout_ms: int = 29_000  # the integration's TimeoutInMillis: API Gateway answers 504 past it

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(part for part in self.path.split("/") if part)


@dataclass(frozen=True)
class SqsSource:
    function: str
    queue: str  # the queue's logical id
    batch_size: int
    maximum_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency


@dataclass(frozen=True)
class Schedule:
    function: str
    expression: Any  # a rate/cron string, or a reference to a parameter


@dataclass(frozen=True)
class Template:
    parameters: dict[str, Any]
    functions: dict[str, Function]
    routes: list[Route]
    queues: dict[str, dict[str, Any]]
    tables: dict[str, dict[str, Any]]  # each AWS::DynamoDB::Table resource whole, its Condition included
    sqs_sources: list[SqsSource]
    schedules: list[Schedule]
    raw: dict[str, Any]

    def conditions(self, refs: dict[str, Any]) -> Mapping[str, bool]:
        """The template's conditions, each evaluated with `refs` (the parameters) when first asked for."""
        return _Conditions(self.raw.get("Conditions", {}), refs)


class _Conditions(dict[str, bool]):
    def __init__(self, declared: dict[str, Any], refs: dict[str, Any]):
        super().__init__()
        self._declared, self._refs = declared, refs

    def __missing__(self, name: str) -> bool:
        self[name] = bool(resolve(self._declared[name], self._refs, self))
        return self[name]


def load(path: Path = TEMPLATE, root: Path | None = None) -> Template:
    """The template at `path`; code and layer folders are relative to `root` (the template's folder)."""
    root = (root or path.parent).resolve()
    try:
        raw = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a safe loader's subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a template: its top level is not a mapping")
    resources = raw.get("Resources", {})
    defaults = raw.get("Globals", {}).get("Function", {})
    layers = {
        name: root / props["Properties"]["ContentUri"]
        for name, props in resources.items()
        if props.get("Type") == "AWS::Serverless::LayerVersion"
    }
    functions = {
        name: _function(name, props["Properties"], defaults, root, layers)
        for name, props in resources.items()
        if props.get("Type") == "AWS::Serverless::Function"
    }
    events = [(fn.name, event) for fn in functions.values() for event in fn.events.values()]
    return Template(
        parameters={k: v.get("Default") for k, v in raw.get("Parameters", {}).items()},
        functions=functions,
        routes=[_route(fn, e["Properties"]) for fn, e in events if e["Type"] == "Api"],
        queues={k: v.get("Properties", {}) for k, v in resources.items() if v.get("Type") == "AWS::SQS::Queue"},
        tables={k: v for k, v in resources.items() if v.get("Type") == "AWS::DynamoDB::Table"},
        sqs_sources=[_sqs_source(fn, e["Properties"]) for fn, e in events if e["Type"] == "SQS"],
        schedules=[Schedule(fn, e["Properties"]["Schedule"]) for fn, e in events if e["Type"] == "Schedule"],
        raw=raw,
    )


def resolve(value: Any, refs: dict[str, Any], conditions: Mapping[str, bool] | None = None) -> Any:
    """A template value with Ref, GetAtt, Sub, If and the condition functions replaced from `refs` (keys:
    `Name` or `Name.Attr`) and `conditions`; AWS::NoValue leaves its property or list item out."""
    conditions = {} if conditions is None else conditions
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return NO_VALUE if arg == "AWS::NoValue" else refs[arg]
        if key == "Fn::GetAtt":
            return refs[".".join(arg)]
        if key == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(refs[m.group(1)]), arg)
        if key == "Fn::If":
            name, when_true, when_false = arg
            return resolve(when_true if conditions[name] else when_false, refs, conditions)
        if key in _CONDITION_FUNCTIONS and isinstance(arg, list):
            return _CONDITION_FUNCTIONS[key]([resolve(item, refs, conditions) for item in arg])
        if key == "Condition" and isinstance(arg, str):
            return conditions[arg]
    if isinstance(value, dict):
        resolved = {k: resolve(v, refs, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [v for v in (resolve(item, refs, conditions) for item in value) if v is not NO_VALUE]
    return value


_CONDITION_FUNCTIONS: dict[str, Any] = {
    "Fn::Equals": lambda args: args[0] == args[1],
    "Fn::Not": lambda args: not args[0],
    "Fn::And": all,
    "Fn::Or": any,
}


def _function(
    name: str, props: dict[str, Any], defaults: dict[str, Any], root: Path, layers: dict[str, Path]
) -> Function:
    env = {
        **defaults.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    reserved = props.get("ReservedConcurrentExecutions", defaults.get("ReservedConcurrentExecutions"))
    return Function(
        name=name,
        code_uri=root / props.get("CodeUri", defaults.get("CodeUri", ".")),
        handler=str(props.get("Handler", defaults.get("Handler"))),
        timeout=int(props.get("Timeout", defaults.get("Timeout", 3))),
        environment=env,
        events=props.get("Events", {}),
        runtime=props.get("Runtime", defaults.get("Runtime", "python3.13")),
        memory_size=int(props.get("MemorySize", defaults.get("MemorySize", 128))),
        reserved_concurrency=None if reserved is None else int(reserved),
        layers=tuple(layers[ref["Ref"]] for ref in [*defaults.get("Layers", []), *props.get("Layers", [])]),
    )


def _sqs_source(function: str, props: dict[str, Any]) -> SqsSource:
    scaling = props.get("ScalingConfig", {}).get("MaximumConcurrency")
    return SqsSource(
        function=function,
        queue=props["Queue"]["Fn::GetAtt"][0],
        batch_size=int(props.get("BatchSize", 10)),
        maximum_concurrency=None if scaling is None else int(scaling),
    )


def _route(function: str, props: dict[str, Any]) -> Route:
    key = bool(props.get("Auth", {}).get("ApiKeyRequired"))
    timeout = int(props.get("TimeoutInMillis", 29_000))
    return Route(props["Method"].upper(), props["Path"], function, key, timeout)


def parameter_problem(definition: dict[str, Any], value: str) -> str | None:
    """Why CloudFormation would refuse `value` for a parameter so defined, or None if it would take it."""
    if definition.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return "must be a number"
        if "MinValue" in definition and number < float(definition["MinValue"]):
            return f"must be at least {definition['MinValue']}"
        if "MaxValue" in definition and number > float(definition["MaxValue"]):
            return f"must be at most {definition['MaxValue']}"
    allowed = definition.get("AllowedValues")
    if allowed is not None and value not in [str(a) for a in allowed]:
        return f"must be one of {', '.join(str(a) for a in allowed)}"
    pattern = definition.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        return f"must match {pattern}"
    return None
