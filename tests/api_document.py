"""The committed OpenAPI document, and a check of one HTTP answer against it: status, headers and body.

The route an answer belongs to is found as API Gateway finds it (local.apigw over template.yaml's routes),
so a request that reached the docs function's catch-all is held to the document's shared responses.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from local import apigw
from local.template import ROOT, load

DOCUMENT: dict[str, Any] = json.loads((ROOT / "functions" / "docs" / "openapi.json").read_text())
ROUTES = load().routes
PAGES = {"/docs": "text/html", "/redoc": "text/html", "/openapi.json": "application/json"}
CATCH_ALL = {"/", "/{proxy+}"}
API_HEADERS = ("Link", "Location", "X-Fetch-Outcome", "Allow")  # each must be declared where it is sent


def served_path(target: str) -> str:
    """The path of a request target as the local stack's HTTP server reads it: leading slashes collapse to one."""
    path = target.partition("?")[0]
    return "/" + path.lstrip("/") if path.startswith("//") else path


def answer_problems(method: str, target: str, status: int, headers: dict[str, str], body: bytes) -> list[str]:
    """What in this answer the document does not describe; empty when it does."""
    response = expected_response(method, served_path(target), status)
    if isinstance(response, str):
        return [response]
    if response is None:
        return []  # a docs page: its bytes are not in the document
    problems = header_problems(response, headers)
    return problems if method == "HEAD" else problems + body_problems(response, headers, body)  # HEAD: no body


def expected_response(method: str, path: str, status: int) -> dict[str, Any] | str | None:
    """The document's response for this answer, None for a docs page, or why there is none."""
    matched = apigw.match(ROUTES, method, path)
    if matched is None:
        return shared("MissingAuthenticationToken") if status == 403 else f"{status} for a path no route takes"
    route, params = matched
    if any(ord(c) < 0x20 or ord(c) == 0x7F for value in params.values() for c in value):
        return shared("NotFound") if status == 404 else f"{status} for a path with a control character, not 404"
    if route.path in PAGES and route.method == method:
        return None if status == 200 else f"{status} from a docs page"
    if route.path in CATCH_ALL:
        return shared("NotFound") if status == 404 else f"{status} for an unknown path, not 404"
    operation = DOCUMENT["paths"].get(route.path, {}).get(method.lower())
    if operation is None:
        return shared("MethodNotAllowed") if status == 405 else f"{status} for an undocumented method, not 405"
    declared = operation["responses"].get(str(status))
    return resolve(declared) if declared else f"{status} is not documented for {method} {route.path}"


def shared(name: str) -> dict[str, Any]:
    return DOCUMENT["components"]["responses"][name]


def resolve(item: dict[str, Any]) -> dict[str, Any]:
    """An item, or the one its `$ref` names."""
    ref = item.get("$ref")
    if not ref:
        return item
    found: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return resolve(found)


def header_problems(response: dict[str, Any], headers: dict[str, str]) -> list[str]:
    declared = {name.lower(): resolve(item) for name, item in response.get("headers", {}).items()}
    given = {name.lower(): value for name, value in headers.items()}
    problems = [f"header {name} is not declared" for name in API_HEADERS if name.lower() in given and
                name.lower() not in declared]  # fmt: skip
    for name, item in declared.items():
        if name not in given:
            problems += [f"required header {name} is missing"] if item.get("required") else []
        else:
            problems += [f"header {name}: {e}" for e in schema_errors(item["schema"], given[name])]
    return problems


def body_problems(response: dict[str, Any], headers: dict[str, str], body: bytes) -> list[str]:
    content = response.get("content", {})
    media = next((v for k, v in headers.items() if k.lower() == "content-type"), "").split(";")[0].strip()
    if media not in content:
        return [f"content type {media!r} is not one of {sorted(content)}"]
    try:
        value = json.loads(body)
    except ValueError:
        return ["the body is not JSON"]
    return [f"body: {error}" for error in schema_errors(content[media]["schema"], value)]


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Each way `value` fails `schema`, whose `#/components/...` references name the document's components."""
    rooted = {"allOf": [schema], "components": DOCUMENT["components"]}
    return [f"{'/'.join(map(str, e.absolute_path))} {e.message}"[:300] for e in validator(rooted).iter_errors(value)]


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def examples() -> list[tuple[str, dict[str, Any], Any]]:
    """Every example the document shows: (where, the schema it illustrates, the example's value)."""
    found = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for media, content in resolve(response).get("content", {}).items():
                    for name, example in content.get("examples", {}).items():
                        where = f"{method.upper()} {path} {status} {media} {name}"
                        found.append((where, content["schema"], example["value"]))
    return found
