"""The OpenAPI document, built from the routes' own declarations.

The docs function serves the copy committed beside it (functions/docs/openapi.json) and mounts no route;
`python -m aggregator.openapi` prints the document, `make openapi` rewrites the copy, and a test keeps the
two equal. Nothing imports this module at run time.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, SecurityScheme, Tag

from aggregator.api import TAGS, resolver

TITLE = "API aggregator"
VERSION = "1.0.0"
DESCRIPTION = (
    "Posts pulled from an upstream REST API, stored and served. Errors of the API's own have one shape, "
    "`ErrorBody`; API Gateway's own answers are `GatewayMessage` (a function that failed, timed out or was "
    "throttled, a request past the stage's throttle), declared with each operation where they can occur. "
    "A path below answers any method it does not list with 405 and `Allow` (`MethodNotAllowed`); "
    "any other path answers 404 (`NotFound`), or API Gateway answers 403 itself (`MissingAuthenticationToken`). "
    "Query parameters are strict: one not listed, or one given twice, is a 422 that names it, and integers are "
    "plain decimal digits."
)
SECURITY: dict[str, SecurityScheme] = {"apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header)}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
SHARED_RESPONSES = {
    "NotFound": {
        "description": "No route has this path",
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    },
    "MethodNotAllowed": {
        "description": "The path does not take this method; `Allow` lists those it takes",
        "headers": {
            "Allow": {
                "description": "The methods this path takes, e.g. `GET`",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Z]+(, [A-Z]+)*$"},
            }
        },
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    },
    "MissingAuthenticationToken": {
        "description": "API Gateway's own 403 for a path that no resource takes (e.g. one with an empty segment)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayMessage"}}},
    },
}
REF = re.compile(r'"\$ref": "#/components/schemas/([^"]+)"')


def document() -> dict[str, Any]:
    """The OpenAPI document of every route the API functions serve."""
    from aggregator.routes import fetches, reads  # here: only the build of the document needs the routes

    app = resolver(reads.router, fetches.router)  # declarations only: this resolver never serves an event
    text = app.get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        tags=[Tag(name=tag["name"], description=tag["description"]) for tag in TAGS],
        security_schemes=SECURITY,
    )
    spec: dict[str, Any] = json.loads(text, parse_float=_number)
    spec.pop("servers", None)  # the docs function names the stage path each request came through
    spec["components"]["responses"] = SHARED_RESPONSES
    spec["components"]["schemas"] = _used_schemas(spec)
    return spec


def _used_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """The schemas that the paths and shared responses refer to, directly or through other schemas."""
    schemas = spec["components"]["schemas"]
    wanted = set(REF.findall(json.dumps([spec["paths"], spec["components"]["responses"]])))
    while more := set(REF.findall(json.dumps([schemas[name] for name in wanted]))) - wanted:
        wanted |= more
    return {name: schema for name, schema in schemas.items() if name in wanted}


def _number(text: str) -> float | int:
    """A JSON number as written by a schema: 1.0 (how Powertools writes an integer's bound) is 1."""
    value = float(text)
    return int(value) if value.is_integer() else value


def render(spec: dict[str, Any]) -> str:
    """The document as the committed file holds it."""
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(document()), end="")
