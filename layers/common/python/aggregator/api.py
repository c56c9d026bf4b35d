"""What every API function shares: one resolver shape and one JSON error shape."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from aggregator.models import ErrorBody


def error_response(description: str) -> OpenAPIResponse:
    """An OpenAPI response whose body is the one error shape."""
    return {"description": description, "content": {"application/json": {"model": ErrorBody}}}


ERROR_RESPONSES: dict[int, OpenAPIResponse] = {
    404: error_response("Not found"),
    422: error_response("Invalid input; `detail` names each field: `[{loc, type, msg}]`"),
}


def resolver(*routers: Router) -> APIGatewayRestResolver:
    """A validating resolver serving `routers`, with every error in the shape `{statusCode, message}`."""
    app = APIGatewayRestResolver(enable_validation=True)
    for router in routers:
        app.include_router(router)
    app.exception_handler(RequestValidationError)(_invalid_request)
    return app


def router() -> Router:
    """A new router; Powertools leaves its constructor unannotated."""
    return Router()  # type: ignore[no-untyped-call]


def public_path(event: BaseProxyEvent, path: str) -> str:
    """`path` as a client must ask for it: under the stage or base path the request came through."""
    full = (event.request_context.path if isinstance(event, APIGatewayProxyEvent) else None) or event.path
    prefix = full[: -len(event.path)] if full.endswith(event.path) else ""
    return prefix + path


def error(status: int, message: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"statusCode": status, "message": message, **extra},
    )


def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
    detail = [{"loc": list(e.get("loc", ())), "type": e.get("type", ""), "msg": e.get("msg", "")} for e in exc.errors()]
    fields = ", ".join(".".join(str(p) for p in d["loc"][1:]) or d["loc"][0] for d in detail if d["loc"])
    return error(422, f"invalid request: {fields or 'body'}", detail=detail)


__all__ = ["ERROR_RESPONSES", "NotFoundError", "error", "error_response", "public_path", "resolver", "router"]
