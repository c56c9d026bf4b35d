"""Helpers the tests share, built from the project's own parts: template.yaml, events/, the real handlers."""

from __future__ import annotations

import copy
import json
from typing import Any

from aggregator import config, queue
from local import template
from local.runtime import LambdaContext, load_handler
from local.template import ROOT

EVENTS = ROOT / "events"
TEMPLATE = template.load()
_handlers: dict[str, Any] = {}


def template_refs() -> dict:
    return dict(TEMPLATE.parameters)


def reset_settings() -> None:
    """Forget the settings read so far, so the next use reads the environment again."""
    config.settings.cache_clear()
    queue._sqs.cache_clear()


def load_event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def api_event(name: str, *, query: dict | None = None, path_params: dict | None = None, headers=None) -> dict:
    """An event from events/, with its query string or path parameters replaced."""
    event = copy.deepcopy(load_event(name))
    if query is not None:
        event["queryStringParameters"] = {k: v[-1] if isinstance(v, list) else v for k, v in query.items()} or None
        event["multiValueQueryStringParameters"] = {
            k: v if isinstance(v, list) else [v] for k, v in query.items()
        } or None
    if path_params is not None:
        event["pathParameters"] = path_params
        path = event["resource"]
        for key, value in path_params.items():
            path = path.replace("{" + key + "}", value)
        event["path"] = path
    if headers:
        event["headers"] = {**(event["headers"] or {}), **headers}
        event["multiValueHeaders"] = {**(event["multiValueHeaders"] or {}), **{k: [v] for k, v in headers.items()}}
    return event


def handler(function: str):
    """A function's real handler, as declared in template.yaml, imported once."""
    if function not in _handlers:
        spec = TEMPLATE.functions[function]
        _handlers[function] = load_handler(spec.code_uri, spec.handler, function)
    return _handlers[function]


def invoke(function: str, event: dict):
    """Call a function's real handler with a Lambda context."""
    return handler(function)(event, LambdaContext(function))


def body(response: dict):
    return json.loads(response["body"])
