"""The API's documents (/docs, /redoc, /openapi.json) and its answer to unknown routes (404, 405)."""

import html
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, SecurityScheme
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aggregator.api import error, resolver
from aggregator.observability import logger
from aggregator.routes import fetches, reads

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
TITLE = "API aggregator"
VERSION = "1.0.0"
REDOC_SCRIPT = Path(__file__).parent / "redoc" / "redoc.standalone.js"  # ReDoc 2.5.4, MIT; served inline

# The usage plan's key, for POST /fetch.
SECURITY: dict[str, SecurityScheme] = {"apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header)}

app = resolver(reads.router, fetches.router)
app.configure_openapi(title=TITLE, version=VERSION, security_schemes=SECURITY)  # read by all that follows
app.enable_swagger(path="/docs")


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    return Response(status_code=200, content_type="application/json", body=_spec())


@app.get("/redoc", include_in_schema=False)
def redoc_page() -> Response[str]:
    return Response(status_code=200, content_type="text/html", body=_redoc_page())


@lru_cache(maxsize=1)
def _redoc_page() -> str:
    """ReDoc with its script and the spec inline, so the page needs nothing else (no CDN, no second request)."""
    spec = _spec().replace("</", "<\\/")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(TITLE)}</title></head><body>"
        f"<div id='redoc'></div><script>{REDOC_SCRIPT.read_text()}</script>"
        f"<script>Redoc.init({spec}, {{}}, document.getElementById('redoc'))</script></body></html>"
    )


@app.not_found
def unknown_route(_exc: Exception) -> Response[Any]:
    path = app.current_event.path
    allowed = sorted(m.upper() for pattern, methods in _routes() if pattern.fullmatch(path) for m in methods)
    if allowed:
        return Response(
            status_code=405,
            content_type="application/json",
            body={"statusCode": 405, "message": f"method not allowed; use {', '.join(allowed)}"},
            headers={"Allow": ", ".join(allowed)},
        )
    return error(404, f"no route {path}")


@lru_cache(maxsize=1)
def _spec() -> str:
    return app.get_openapi_json_schema()


@lru_cache(maxsize=1)
def _routes() -> list[tuple[re.Pattern[str], list[str]]]:
    """Each documented path as a pattern, with its methods: read from the one spec already built."""
    own = {"/docs": ["get"], "/redoc": ["get"], "/openapi.json": ["get"]}
    found = {path: [m for m in item if m in HTTP_METHODS] for path, item in json.loads(_spec())["paths"].items()}
    return [(re.compile(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(p))), m) for p, m in (found | own).items()]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
