"""What every API function shares: the door each event comes in by, one resolver shape, strict input and
one JSON error shape."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseContentSchema,
    OpenAPIResponseHeader,
)
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from aggregator.models import BackendError, ErrorBody, GatewayMessage, Unavailable
from aggregator.observability import logger

ProxyResult = dict[str, Any]
POSTS_TAG, JOBS_TAG = "posts", "jobs"  # the API's resources: each operation is tagged with its own
TAGS = [
    {"name": POSTS_TAG, "description": "The posts fetched from the upstream and stored"},
    {"name": JOBS_TAG, "description": "Fetch jobs: start one, read its record, list the recent ones"},
]
STRING_MAPS = ("headers", "queryStringParameters", "pathParameters", "stageVariables")
LIST_MAPS = ("multiValueHeaders", "multiValueQueryStringParameters")


ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
GATEWAY_SCHEMA = {"$ref": "#/components/schemas/GatewayMessage"}


def error_response(description: str, example: dict[str, Any] | None = None, **named: dict[str, Any]) -> OpenAPIResponse:
    """An OpenAPI response whose body is the one error shape, with its example (or examples, by name)."""
    content: OpenAPIResponseContentModel = {"model": ErrorBody}
    found = ({"example": example} if example is not None else {}) | named
    if found:
        content["examples"] = _examples(found)
    return {"description": description, "content": {"application/json": content}}


def gateway_response(description: str, **named: dict[str, Any]) -> OpenAPIResponse:
    """An answer API Gateway gives itself, `{"message": ...}`, with its examples by name."""
    content: OpenAPIResponseContentModel = {"model": GatewayMessage, "examples": _examples(named)}
    return {"description": description, "content": {"application/json": content}}


def any_of_response(
    description: str,
    schemas: list[dict[str, Any]],
    headers: dict[str, OpenAPIResponseHeader] | None = None,
    **named: dict[str, Any],
) -> OpenAPIResponse:
    """An OpenAPI response whose body is any of `schemas` (a status that the API and API Gateway both
    answer, each in its own shape), with its examples by name."""
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    content: OpenAPIResponseContentSchema = {"schema": schema, "examples": _examples(named)}
    response: OpenAPIResponse = {"description": description, "content": {"application/json": content}}
    if headers:
        response["headers"] = headers
    return response


def _examples(named: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {"value": value} for name, value in named.items()}


def header(description: str, schema: dict[str, Any], *, required: bool = False) -> OpenAPIResponseHeader:
    """An OpenAPI response header; `required` when every answer of that status carries it."""
    declared: dict[str, Any] = {"description": description, "schema": schema}
    if required:
        declared["required"] = True
    return declared  # type: ignore[return-value]


STORE_FAILED_EXAMPLE = {
    "statusCode": 500,
    "message": "database error: database disk image is malformed (SQLITE_CORRUPT)",
}
STORE_UNAVAILABLE_EXAMPLE = {
    "statusCode": 503,
    "message": (
        "the database is unavailable: the database file is missing, though a database was created there "
        "(DB_PATH.created says so); restore the file, or delete DB_PATH.created to start with an empty database"
    ),
}
STORE_LOCKED_EXAMPLE = {
    "statusCode": 503,
    "message": (
        "the database is unavailable: database is locked (SQLITE_BUSY): another connection held its lock past the "
        "time this request had; try again"
    ),
}
# API Gateway's own answers: the function failed (an exception, a crash, its memory, its timeout), did not
# answer within the integration's 29 s, was throttled by Lambda, or the stage's throttle refused the request.
FUNCTION_FAILED_EXAMPLE = {"message": "Internal server error"}
GATEWAY_TIMEOUT_EXAMPLE = {"message": "Endpoint request timed out"}
TOO_MANY_REQUESTS_EXAMPLE = {"message": "Too Many Requests"}


def error_responses(invalid_input: dict[str, Any]) -> dict[int, OpenAPIResponse]:
    """The error answers every operation may give: its invalid input (`invalid_input`, an answer of its own),
    the store's failures, and API Gateway's own answers."""
    return {
        422: error_response(
            "Invalid input: a malformed value, an unknown or repeated query parameter; `detail` has one item per fault",
            invalid_input,
        ),
        429: gateway_response(
            "API Gateway's own: the stage's throttle (or the usage plan's) refused the request",
            throttled=TOO_MANY_REQUESTS_EXAMPLE,
        ),
        500: any_of_response(
            "The store failed: the message is the database's own reason. Or API Gateway's own, when Lambda "
            "throttles the function",
            [ERROR_SCHEMA, GATEWAY_SCHEMA],
            store_failed=STORE_FAILED_EXAMPLE,
            throttled=FUNCTION_FAILED_EXAMPLE,
        ),
        502: gateway_response(
            "API Gateway's own: the function failed (an exception, a crash, its memory or its timeout)",
            function_failed=FUNCTION_FAILED_EXAMPLE,
        ),
        503: error_response(
            "The database is unavailable, and may be later: its file is missing or is not the database created "
            "there (it is never recreated empty), a lock on it was held past the request's time, a table is "
            "missing, or its requests are throttled",
            missing=STORE_UNAVAILABLE_EXAMPLE,
            locked=STORE_LOCKED_EXAMPLE,
        ),
        504: gateway_response(
            "API Gateway's own: the function did not answer within the integration's timeout (29 s)",
            timed_out=GATEWAY_TIMEOUT_EXAMPLE,
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


class GatewayResolver(APIGatewayRestResolver):
    """Powertools' REST resolver, except that a route's path parameters are the values API Gateway decoded
    (`pathParameters`), validated as given, never parsed again from the path."""

    def _convert_matches_into_route_keys(self, match: re.Match[str]) -> dict[str, str]:
        given = self.current_event.path_parameters or {}
        return {name: given.get(name, value) for name, value in match.groupdict().items()}


def resolver(*routers: Router) -> APIGatewayRestResolver:
    """A validating resolver serving `routers`, strict about its query, with every error in one shape."""
    app = GatewayResolver(enable_validation=True)
    for router in routers:
        app.include_router(router)
    app.use([_strict_query])
    app.exception_handler(RequestValidationError)(lambda exc: _invalid_request(app, exc))
    app.exception_handler(BackendError)(_backend_failed)
    return app


def router() -> Router:
    """A new router; Powertools leaves its constructor unannotated."""
    return Router()  # type: ignore[no-untyped-call]


def serve(
    answer: Callable[[dict[str, Any], LambdaContext], ProxyResult], event: object, context: LambdaContext
) -> ProxyResult:
    """The door of every API function. `answer` sees a well-formed REST proxy event whose path is the resource
    API Gateway matched, filled with its path parameters, each percent-encoded into the segments it held: the
    function serves the route the gateway chose, however the client spelled the path, and a resolver made
    by `resolver` hands each route the parameters as the gateway decoded them. Anything else gets a clean JSON
    error, never an exception."""
    fault = proxy_event_fault(event)
    if fault is not None:
        logger.error("not an API Gateway REST proxy event", extra={"reason": fault})
        return proxy_result(400, {"statusCode": 400, "message": f"not an API Gateway REST proxy event: {fault}"})
    assert isinstance(event, dict)
    params: dict[str, str] = event.get("pathParameters") or {}
    path = resource_path(event["resource"], params)
    if path is None:
        return proxy_result(
            404, {"statusCode": 404, "message": "no route: a path parameter of the resource is missing"}
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in event["path"] + "".join(params.values())):
        return proxy_result(404, {"statusCode": 404, "message": "no route: the path holds a control character"})
    return answer({**event, "path": path}, context)


def resource_path(resource: str, params: dict[str, str]) -> str | None:
    """`resource` (e.g. /fetch/status/{job_id}) with each parameter's value percent-encoded, so that a value
    stays in the segments it fills (a greedy `{proxy+}` keeps its slashes); None if one is missing."""
    parts = []
    for part in resource.split("/"):
        if part.startswith("{"):
            value = params.get(part.strip("{+}"))
            if value is None:
                return None
            part = quote(value, safe="/" if part.endswith("+}") else "")
        parts.append(part)
    return "/".join(parts)


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


def _backend_failed(exc: BackendError) -> Response[dict[str, Any]]:
    """A part the request needs failed: 503 if it may work later (Unavailable), else 500; with its reason."""
    unavailable = isinstance(exc, Unavailable)
    logger.error("unavailable" if unavailable else "backend failed", extra={"reason": str(exc)})
    return error(503 if unavailable else 500, str(exc))


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
    "JOBS_TAG",
    "POSTS_TAG",
    "TAGS",
    "DecimalInt",
    "NotFoundError",
    "any_of_response",
    "error",
    "error_response",
    "error_responses",
    "gateway_response",
    "header",
    "proxy_event_fault",
    "proxy_result",
    "public_path",
    "resolver",
    "resource_path",
    "router",
    "serve",
]
