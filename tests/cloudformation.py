"""template.yaml as CloudFormation receives it: translated offline by the SAM translator (no AWS
account, no network), then read under one set of parameter values the way CloudFormation reads it."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
STACK_NAME = "api-aggregator"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ARTIFACTS = "artifacts"  # the bucket `sam deploy` uploads code to; here it only has to be named
PSEUDO_PARAMETERS = {
    "AWS::AccountId": ACCOUNT,
    "AWS::NotificationARNs": [],
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK_NAME}/0",
    "AWS::StackName": STACK_NAME,
    "AWS::URLSuffix": "amazonaws.com",
}
EXISTING_NETWORK = {
    "ExistingVpcId": "vpc-0a1b2c3d4e5f60718",
    "ExistingSubnetA": "subnet-0a1b2c3d4e5f60718",
    "ExistingSubnetB": "subnet-1a2b3c4d5e6f70819",
}
ALARM_TOPIC = "arn:aws:sns:us-east-1:123456789012:aggregator-alarms"

# Every supported parameter set, one row each: a parameter that adds or removes resources gets rows
# for its values. The translation and deploy tests run on every row and assert what the row implies.
PARAMETER_SETS = {
    "own network": {},
    "existing network": EXISTING_NETWORK,
    "existing network and function security group": {
        **EXISTING_NETWORK,
        "ExistingFunctionSecurityGroupId": "sg-0a1b2c3d4e5f60718",
    },
    "alarms notify a topic": {"AlarmTopicArn": ALARM_TOPIC},
    "the account's logging role left alone": {"SetApiGatewayLoggingRole": "false"},
    "DynamoDB": {"StoreBackend": "dynamodb"},
    "DynamoDB, a network given and not needed": {"StoreBackend": "dynamodb", **EXISTING_NETWORK},
}

# Resources that hold data a delete or a replacement would destroy.
STATEFUL_TYPES = frozenset(
    {"AWS::EFS::FileSystem", "AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::S3::Bucket"}
)
NO_VALUE = object()  # AWS::NoValue: the property or list item is left out
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass(frozen=True)
class Ref:
    """A resource's Ref: known only once CloudFormation creates it."""

    resource: str


@dataclass(frozen=True)
class GetAtt:
    resource: str
    attribute: str


def code_key(logical_id: str) -> str:
    """The object that holds a function's or layer's code in the artifacts bucket."""
    return f"{logical_id}.zip"


def translate(parameters: dict[str, str]) -> dict:
    """What SAM makes of template.yaml with these parameter values: plain CloudFormation (a fresh copy)."""
    return copy.deepcopy(_translate(tuple(sorted(parameters.items()))))


class _BundledPolicies:
    """The translator's own copy of the AWS managed policies' ARNs, so translating calls no IAM API."""

    @staticmethod
    def load() -> dict[str, str]:
        from samtranslator.internal.managed_policies import get_bundled_managed_policy_map

        return get_bundled_managed_policy_map("aws") or {}


@cache
def _translate(parameters: tuple[tuple[str, str], ...]) -> dict:
    # imported here, not at the top: a test process that translates nothing skips half a second of imports
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    sam = yaml_parse(TEMPLATE.read_text())
    for name, resource in sam["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # `sam deploy` puts its uploads' S3 locations here
            if key in properties:
                properties[key] = f"s3://{ARTIFACTS}/{code_key(name)}"
    with mock.patch.dict(os.environ, {"AWS_DEFAULT_REGION": REGION}):  # ARNs take their partition from it
        return transform(sam, dict(parameters), _BundledPolicies())


class Stack:
    """The translated template under one set of parameter values: the conditions that hold, the
    resources and outputs that exist, and values with their intrinsic functions resolved as far as
    CloudFormation can before it creates anything (a resource's Ref and GetAtt stay symbolic).

    `problems` lists every reference CloudFormation would reject: a Ref, GetAtt, Sub variable,
    DependsOn or condition naming something that does not exist under these parameters.
    """

    def __init__(self, parameters: dict[str, str], template: dict | None = None):
        self.template = template or translate(parameters)
        self.parameters = _parameter_values(self.template.get("Parameters", {}), parameters)
        self.problems: list[str] = []
        self.conditions: dict[str, bool] = {}
        for name in self.template.get("Conditions", {}):
            self.condition(name)
        self.resources = {k: v for k, v in self.template["Resources"].items() if self._exists(v)}
        self.outputs = {
            k: self.resolve(v["Value"]) for k, v in self.template.get("Outputs", {}).items() if self._exists(v)
        }
        for name, resource in self.resources.items():
            self._check(name, resource)

    def props(self, name: str) -> dict:
        """An existing resource's properties, resolved."""
        return self.resolve(self.resources[name].get("Properties", {}))

    def of_type(self, resource_type: str) -> dict[str, dict]:
        """The existing resources of one type: logical id -> resolved properties."""
        return {name: self.props(name) for name, r in self.resources.items() if r["Type"] == resource_type}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            if name not in self.template.get("Conditions", {}):
                self.problems.append(f"no condition named {name}")
                return False
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            function = _FUNCTIONS.get(key)
            if function and not (key == "Condition" and not isinstance(argument, str)):
                return function(self, argument)
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE}

    def _exists(self, item: dict) -> bool:
        return "Condition" not in item or self.condition(item["Condition"])

    def _check(self, name: str, resource: dict) -> None:
        depends_on = resource.get("DependsOn", [])
        for target in [depends_on] if isinstance(depends_on, str) else depends_on:
            if target not in self.resources:
                self.problems.append(f"{name} DependsOn {target}, {self._absent(target)}")
        self.resolve({k: v for k, v in resource.items() if k in ("Properties", "Metadata")})

    def _absent(self, name: str) -> str:
        if name in self.template["Resources"]:
            return f"whose condition {self.template['Resources'][name].get('Condition')} is false here"
        return "which the template does not declare"

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.resources:
            return Ref(name)
        self.problems.append(f"Ref {name}: no such parameter or resource, {self._absent(name)}")
        return f"<missing {name}>"

    def _get_att(self, argument: str | list) -> Any:
        resource, attribute = argument.split(".", 1) if isinstance(argument, str) else self.resolve(argument)
        if resource not in self.resources:
            self.problems.append(f"GetAtt {resource}.{attribute}: {self._absent(resource)}")
        return GetAtt(resource, attribute)

    def _sub(self, argument: str | list) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], self.resolve(argument[1]))

        def value(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                found = variables[name]
            elif "." in name:
                found = self._get_att(name)
            else:
                found = self._ref(name)
            return found if isinstance(found, str) else "${" + _symbol(found) + "}"

        return _SUB_VARIABLE.sub(value, text)

    def _if(self, argument: list) -> Any:
        name, when_true, when_false = argument
        return self.resolve(when_true if self.condition(name) else when_false)

    def _select(self, argument: list) -> Any:
        index, items = self.resolve(argument)
        return items[int(index)] if isinstance(items, list) else {"Fn::Select": [index, items]}

    def _join(self, argument: list) -> Any:
        separator, items = self.resolve(argument)
        if all(isinstance(item, str) for item in items):
            return separator.join(items)
        return {"Fn::Join": [separator, items]}


def _symbol(value: Any) -> str:
    if isinstance(value, Ref):
        return value.resource
    if isinstance(value, GetAtt):
        return f"{value.resource}.{value.attribute}"
    return str(value)


def _parameter_values(declared: dict, given: dict[str, str]) -> dict[str, str]:
    """Every parameter's value as CloudFormation passes it on (a string), checked like CloudFormation."""
    if unknown := sorted(set(given) - set(declared)):
        raise ValueError(f"the template declares no parameter {unknown}")
    values = {name: str(given.get(name, spec.get("Default", ""))) for name, spec in declared.items()}
    for name, spec in declared.items():
        allowed = [str(v) for v in spec.get("AllowedValues", [])]
        if allowed and values[name] not in allowed:
            raise ValueError(f"{name}={values[name]!r} is not one of {allowed}")
    return values


_FUNCTIONS: dict[str, Callable[[Stack, Any], Any]] = {
    "Ref": Stack._ref,
    "Fn::GetAtt": Stack._get_att,
    "Fn::Sub": Stack._sub,
    "Fn::If": Stack._if,
    "Fn::Select": Stack._select,
    "Fn::Join": Stack._join,
    "Fn::Equals": lambda stack, args: stack.resolve(args[0]) == stack.resolve(args[1]),
    "Fn::Not": lambda stack, args: not stack.resolve(args[0]),
    "Fn::And": lambda stack, args: all(stack.resolve(args)),
    "Fn::Or": lambda stack, args: any(stack.resolve(args)),
    "Condition": Stack.condition,
}
