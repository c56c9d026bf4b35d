"""The API's documents (/docs, /redoc, /openapi.json) and its answer to unknown routes (404, 405)."""

import html
import re
from functools import lru_cache

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from aggregator.api import error, resolver
from aggregator.observability import logger
from aggregator.routes import fetches, reads

TITLE = "API aggregator"
VERSION = "1.0.0"
REDOC_SCRIPT = "https://cdn.redoc.ly/redoc/v2.5.1/bundles/redoc.standalone.js"

app = resolver(reads.router, fetches.router)
app.configure_openapi(title=TITLE, version=VERSION)
app.enable_swagger(path="/docs", title=TITLE, version=VERSION)


@app.get("/openapi.json", include_in_schema=False)
def openapi_document():
    return Response(status_code=200, content_type="application/json", body=_spec())


@app.get("/redoc", include_in_schema=False)
def redoc_page():
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(TITLE)}</title></head>"
        # A relative spec URL keeps working under a stage prefix such as /Prod.
        "<body><redoc spec-url='openapi.json'></redoc>"
        f"<script src='{REDOC_SCRIPT}'></script></body></html>"
    )
    return Response(status_code=200, content_type="text/html", body=page)


@app.not_found
def unknown_route(_exc):
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
    return app.get_openapi_json_schema(title=TITLE, version=VERSION)


@lru_cache(maxsize=1)
def _routes() -> list[tuple[re.Pattern, list[str]]]:
    paths = app.get_openapi_schema(title=TITLE, version=VERSION).paths or {}
    own = {"/docs": ["get"], "/redoc": ["get"], "/openapi.json": ["get"]}
    found = {
        path: [m for m in ("get", "put", "post", "delete", "patch") if getattr(item, m)] for path, item in paths.items()
    }
    return [(re.compile(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(p))), m) for p, m in (found | own).items()]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event, context):
    return app.resolve(event, context)
