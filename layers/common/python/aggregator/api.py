"""What every API function shares: the door each event comes in by, one resolver shape, strict input and
one JSON error shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseHeader,
)
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from aggregator.models import ErrorBody, Unavailable
from aggregator.observability import logger

ProxyResult = dict[str, Any]
POSTS_TAG, JOBS_TAG = "posts", "jobs"  # the API's resources: each operation is tagged with its own
TAGS = [
    {"name": POSTS_TAG, "description": "The posts fetched from the upstream and stored"},
    {"name": JOBS_TAG, "description": "Fetch jobs: start one, read its record, list the recent ones"},
]
STRING_MAPS = ("headers", "queryStringParameters", "pathParameters", "stageVariables")
LIST_MAPS = ("multiValueHeaders", "multiValueQueryStringParameters")


def error_response(description: str, example: dict[str, Any] | None = None) -> OpenAPIResponse:
    """An OpenAPI response whose body is the one error shape."""
    content: OpenAPIResponseContentModel = {"model": ErrorBody}
    if example is not None:
        content["examples"] = {"example": {"value": example}}
    return {"description": description, "content": {"application/json": content}}


def header(description: str, schema: dict[str, Any], *, required: bool = False) -> OpenAPIResponseHeader:
    """An OpenAPI response header; `required` when every answer of that status carries it."""
    declared: dict[str, Any] = {"description": description, "schema": schema}
    if required:
        declared["required"] = True
    return declared  # type: ignore[return-value]


INVALID_INPUT_EXAMPLE = {
    "statusCode": 422,
    "message": "invalid request: user_id",
    "detail": [
        {"loc": ["query", "user_id"], "type": "int_parsing", "msg": "Input should be plain decimal digits"},
    ],
}
STORE_UNAVAILABLE_EXAMPLE = {
    "statusCode": 503,
    "message": (
        "the database is unavailable: the database file is missing, though a database was created there "
        "(DB_PATH.created says so); restore the file, or delete DB_PATH.created to start with an empty database"
    ),
}
ERROR_RESPONSES: dict[int, OpenAPIResponse] = {
    422: error_response(
        "Invalid input: a malformed value, an unknown or repeated query parameter; `detail` has one item per fault",
        INVALID_INPUT_EXAMPLE,
    ),
    503: error_response(
        "The database is unavailable: its file is missing, and is never recreated empty", STORE_UNAVAILABLE_EXAMPLE
    ),
}


@dataclass(frozen=True, slots=True)
class DecimalInt:
    """A whole number from `ge` to `le` written in plain decimal digits: no sign, space, `_`, `.` or exponent."""

    ge: int
    le: int

    def __get_pydantic_core_schema__(self, _source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            _plain_digits, core_schema.int_schema(ge=self.ge, le=self.le)
        )


def _plain_digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("int_parsing", "Input should be plain decimal digits")
    return value


def resolver(*routers: Router) -> APIGatewayRestResolver:
    """A validating resolver serving `routers`, strict about its query, with every error in one shape."""
    app = APIGatewayRestResolver(enable_validation=True)
    for router in routers:
        app.include_router(router)
    app.use([_strict_query])
    app.exception_handler(RequestValidationError)(lambda exc: _invalid_request(app, exc))
    app.exception_handler(Unavailable)(_unavailable)
    return app


def router() -> Router:
    """A new router; Powertools leaves its constructor unannotated."""
    return Router()  # type: ignore[no-untyped-call]


def serve(
    answer: Callable[[dict[str, Any], LambdaContext], ProxyResult], event: object, context: LambdaContext
) -> ProxyResult:
    """The door of every API function. `answer` sees a well-formed REST proxy event whose path is the resource
    API Gateway matched, filled with its path parameters: the function serves the route the gateway chose,
    however the client spelled the path. Anything else gets a clean JSON error, never an exception."""
    fault = proxy_event_fault(event)
    if fault is not None:
        logger.error("not an API Gateway REST proxy event", extra={"reason": fault})
        return proxy_result(400, {"statusCode": 400, "message": f"not an API Gateway REST proxy event: {fault}"})
    assert isinstance(event, dict)
    path = resource_path(event["resource"], event.get("pathParameters") or {})
    if path is None:
        return proxy_result(
            404, {"statusCode": 404, "message": "no route: a path parameter of the resource is missing"}
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in event["path"] + path):
        # No route has one; and a route pattern's `$` would accept a trailing newline.
        return proxy_result(404, {"statusCode": 404, "message": "no route: the path holds a control character"})
    return answer({**event, "path": path}, context)


def resource_path(resource: str, params: dict[str, str]) -> str | None:
    """`resource` (e.g. /fetch/status/{job_id}) with each parameter's value; None if one is missing."""
    parts = [params.get(p.strip("{+}")) if p.startswith("{") else p for p in resource.split("/")]
    return None if None in parts else "/".join(p for p in parts if p is not None)


def proxy_event_fault(event: object) -> str | None:
    """What keeps `event` from being an API Gateway REST (v1) proxy event, or None."""
    if not isinstance(event, dict):
        return f"the event is {_json_type(event)}, not an object"
    for key in ("httpMethod", "path", "resource"):
        if not isinstance(event.get(key), str) or not event[key]:
            return f"'{key}' is not a non-empty string"
    if not isinstance(event.get("requestContext"), dict):
        return "'requestContext' is not an object"
    for key in STRING_MAPS:
        if not _map_of(event.get(key), str):
            return f"'{key}' is neither null nor an object of strings"
    for key in LIST_MAPS:
        if not _map_of(event.get(key), list) or not all(
            isinstance(v, str) for values in (event.get(key) or {}).values() for v in values
        ):
            return f"'{key}' is neither null nor an object of lists of strings"
    if not isinstance(event.get("body"), str | None) or not isinstance(event.get("isBase64Encoded"), bool | None):
        return "'body' is not a string or null, or 'isBase64Encoded' not a boolean"
    return None


def proxy_result(
    status: int,
    body: dict[str, Any] | str,
    headers: dict[str, str] | None = None,
    content_type: str = content_types.APPLICATION_JSON,
) -> ProxyResult:
    """A REST proxy integration's answer, shaped as Powertools shapes its own; a dict body is sent as JSON."""
    text = json.dumps(body, separators=(",", ":")) if isinstance(body, dict) else body
    merged = {"Content-Type": content_type, **(headers or {})}
    return {
        "statusCode": status,
        "multiValueHeaders": {name: [value] for name, value in merged.items()},
        "body": text,
        "isBase64Encoded": False,
    }


def _map_of(value: object, kind: type) -> bool:
    return value is None or (
        isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, kind) for k, v in value.items())
    )


def _json_type(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def public_path(event: BaseProxyEvent, path: str) -> str:
    """`path` as a client must ask for it: under the stage or base path the request came through."""
    full = (event.request_context.path if isinstance(event, APIGatewayProxyEvent) else None) or event.path
    full = unquote(full.rstrip("/") if full != "/" else full)  # as API Gateway matched it: decoded, no trailing /
    prefix = full[: -len(event.path)] if full.endswith(event.path) else ""
    return prefix + path


def error(status: int, message: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"statusCode": status, "message": message, **extra},
    )


def _unavailable(exc: Unavailable) -> Response[dict[str, Any]]:
    logger.error("unavailable", extra={"reason": str(exc)})
    return error(503, str(exc))


def _strict_query(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    faults = _query_faults(app)
    return _invalid(faults) if faults else next_middleware(app)


def _query_faults(app: APIGatewayRestResolver) -> list[dict[str, Any]]:
    """Each query parameter that the route does not take, or that is given more than once."""
    route = app.context.get("_route")  # set by Powertools for the route being served
    takes = [field.alias for field in route.dependant.query_params] if route is not None else []
    event = app.current_event
    given = event.multi_value_query_string_parameters or {
        name: [value] for name, value in (event.query_string_parameters or {}).items()
    }
    faults = []
    for name, values in given.items():
        if name not in takes:
            known = ", ".join(takes) or "no parameters"
            faults.append(_fault(name, "extra_forbidden", f"Unknown query parameter; this operation takes {known}"))
        elif len(values) > 1:
            faults.append(_fault(name, "repeated", f"Given {len(values)} times; give it once"))
    return faults


def _fault(name: str, kind: str, message: str) -> dict[str, Any]:
    return {"loc": ["query", name], "type": kind, "msg": message}


def _invalid_request(app: APIGatewayRestResolver, exc: RequestValidationError) -> Response[dict[str, Any]]:
    faults = _query_faults(app)
    seen = {tuple(f["loc"]) for f in faults}
    for e in exc.errors():
        loc = [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())]
        if tuple(loc) not in seen:
            faults.append({"loc": loc, "type": e.get("type", ""), "msg": e.get("msg", "")})
    return _invalid(faults)


def _invalid(faults: list[dict[str, Any]]) -> Response[dict[str, Any]]:
    fields = ", ".join(".".join(str(p) for p in f["loc"][1:]) or str(f["loc"][0]) for f in faults if f["loc"])
    return error(422, f"invalid request: {fields or 'body'}", detail=faults)


__all__ = [
    "ERROR_RESPONSES",
    "JOBS_TAG",
    "POSTS_TAG",
    "TAGS",
    "DecimalInt",
    "NotFoundError",
    "error",
    "error_response",
    "header",
    "proxy_event_fault",
    "proxy_result",
    "public_path",
    "resolver",
    "resource_path",
    "router",
    "serve",
]
