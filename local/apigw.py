"""API Gateway's REST proxy integration: an HTTP request in, a Lambda proxy event out, and back."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, unquote

from local.template import Route

STAGE = "local"


def match(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route API Gateway picks for a raw (percent-encoded) path, and its path parameters, decoded.

    Segments are compared decoded, so `/fetc%68` is `/fetch`, while an encoded slash stays inside its
    segment. A trailing slash names the same resource. Literal segments win over `{param}`, which
    wins over `{greedy+}`; on the resource found, the route of the method wins over ANY.
    """
    segments = [unquote(part) for part in path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()
    fits = [(route, params) for route in routes if (params := _fit(route.segments, segments)) is not None]
    if not fits:
        return None
    resource = min(fits, key=lambda fit: _specificity(fit[0]))[0].path
    on_resource = [fit for fit in fits if fit[0].path == resource]
    chosen = [f for f in on_resource if f[0].method == method] or [f for f in on_resource if f[0].method == "ANY"]
    return chosen[0] if chosen else None


def _fit(resource: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for i, part in enumerate(resource):
        if part.startswith("{") and part.endswith("+}"):
            rest = segments[i:]
            if not rest or "" in rest:
                return None
            params[part[1:-2]] = "/".join(rest)
            return params
        if i >= len(segments) or not segments[i]:
            return None
        if part.startswith("{"):
            params[part[1:-1]] = segments[i]
        elif part != segments[i]:
            return None
    return params if len(segments) == len(resource) else None


def _specificity(route: Route) -> tuple[int, ...]:
    """Sorts first the resource API Gateway prefers, segment by segment: literal, then {param}, then {greedy+}."""
    return tuple(2 if p.endswith("+}") else 1 if p.startswith("{") else 0 for p in route.segments)


def request_event(
    route: Route,
    path_params: dict[str, str],
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    path, _, query = target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    text, encoded = _body(body)
    now = time.time()
    return {
        "resource": route.path,
        "path": path,  # as the client sent it, percent-encoded, as a REST API delivers it
        "httpMethod": method,
        "headers": _last(headers) or None,
        "multiValueHeaders": _grouped(headers) or None,
        "queryStringParameters": _last(pairs) or None,
        "multiValueQueryStringParameters": _grouped(pairs) or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "body": text,
        "isBase64Encoded": encoded,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": path,
            "stage": STAGE,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(now * 1000),
            "protocol": "HTTP/1.1",
            "accountId": "123456789012",
            "apiId": "local",
            "identity": {"sourceIp": source_ip, "userAgent": _last(headers).get("User-Agent")},
        },
    }


def http_response(result: object) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body from a proxy response; 502 where API Gateway would give one."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return bad_gateway()
    headers = {k: [str(v)] for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name] = [str(v) for v in values]
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return result["statusCode"], [(k, v) for k, values in headers.items() for v in values], payload


def bad_gateway() -> tuple[int, list[tuple[str, str]], bytes]:
    return 502, [("Content-Type", "application/json")], json.dumps({"message": "Internal server error"}).encode()


def _body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), True


def _last(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped
