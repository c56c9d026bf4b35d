"""The API's documents (/docs, /redoc, /openapi.json) and its answer to every other route: 404 or 405.

It mounts no route of the API: it serves the OpenAPI document committed beside it (built from the routes by
`make openapi`), so whichever path reaches it, the answer is a document, 404 or 405. It chooses by the API
Gateway resource that matched (`resource`), never by reading the path.
"""

import html
import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import aws_lambda_powertools
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from aggregator.api import ProxyResult, proxy_result, public_path, serve
from aggregator.observability import logger

HERE = Path(__file__).parent
DOCUMENT: dict[str, Any] = json.loads((HERE / "openapi.json").read_text())
TITLE = html.escape(DOCUMENT["info"]["title"])
REDOC_SCRIPT = HERE / "redoc" / "redoc.standalone.js"  # ReDoc 2.5.4, MIT; served inline
# Swagger UI's script and style, as Powertools ships them; found by path, as importing their module builds
# Powertools' OpenAPI models (a sixth of a second of cold start)
SWAGGER_UI = Path(aws_lambda_powertools.__file__).parent / "event_handler" / "openapi" / "swagger_ui"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PAGES = ("/docs", "/redoc", "/openapi.json")
# The methods each resource takes: the document's paths use API Gateway's resource syntax ({job_id}).
ALLOWED = {
    path: ", ".join(sorted(method.upper() for method in item if method in HTTP_METHODS))
    for path, item in DOCUMENT["paths"].items()
} | dict.fromkeys(PAGES, "GET")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> ProxyResult:
    return serve(answer, event, context)


def answer(event: dict[str, Any], _context: LambdaContext) -> ProxyResult:
    resource, method = event["resource"], event["httpMethod"]
    prefix = public_path(APIGatewayProxyEvent(event), "")
    if resource in PAGES and method == "GET":
        if resource == "/openapi.json":
            return proxy_result(200, _document(prefix))
        page = _swagger_page(prefix) if resource == "/docs" else _redoc_page(prefix)
        return proxy_result(200, page, content_type="text/html")
    if resource in ALLOWED:
        allowed = ALLOWED[resource]
        body = {"statusCode": 405, "message": f"method not allowed; use {allowed}"}
        return proxy_result(405, body, {"Allow": allowed})
    return proxy_result(404, {"statusCode": 404, "message": f"no route {event['path']}"})


@lru_cache(maxsize=8)
def _document(prefix: str) -> str:
    """The document, its server the stage or base path that requests come through."""
    info = {key: DOCUMENT[key] for key in ("openapi", "info")}
    return json.dumps(info | {"servers": [{"url": prefix or "/"}]} | DOCUMENT, ensure_ascii=False)


def _inline(prefix: str) -> str:
    """The document as a script literal: `</` escaped, so no string in it can close the script."""
    return _document(prefix).replace("</", "<\\/")


@lru_cache(maxsize=8)
def _swagger_page(prefix: str) -> str:
    """Swagger UI with its script, style and the document inline; its link to the document is /openapi.json."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{TITLE}</title>"
        f"<style>{_asset(SWAGGER_UI / 'swagger-ui.min.css')}</style></head><body><div id='swagger-ui'></div>"
        f"<script>{_asset(SWAGGER_UI / 'swagger-ui-bundle.min.js')}</script><script>"
        f"const ui = SwaggerUIBundle({{dom_id: '#swagger-ui', spec: {_inline(prefix)}, deepLinking: true,"
        " docExpansion: 'list', layout: 'BaseLayout', presets: [SwaggerUIBundle.presets.apis]});"
        f"ui.specActions.updateUrl({json.dumps(prefix + '/openapi.json')});</script></body></html>"
    )


@lru_cache(maxsize=8)
def _redoc_page(prefix: str) -> str:
    """ReDoc with its script and the document inline, so the page needs nothing else (no CDN, no second request)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{TITLE}</title></head><body>"
        f"<div id='redoc'></div><script>{_asset(REDOC_SCRIPT)}</script>"
        f"<script>Redoc.init({_inline(prefix)}, {{}}, document.getElementById('redoc'))</script></body></html>"
    )


@cache
def _asset(path: Path) -> str:
    return path.read_text(encoding="utf-8")
