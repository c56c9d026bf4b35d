"""template.yaml is the single truth: every route and event the code handles is wired there.
What the template deploys is tested on its translation (test_translated_template, test_stack_in_moto)."""

import json

import pytest

from local import apigw
from tests.helpers import EVENTS, TEMPLATE, invoke, load_event

RESOURCES = TEMPLATE.raw["Resources"]
API_EVENTS = sorted(p.stem for p in EVENTS.glob("*.json") if "httpMethod" in json.loads(p.read_text()))


def openapi_operations():
    spec = json.loads(invoke("DocsFunction", load_event("get_openapi"))["body"])
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def route_for(method, path):
    return next((r for r in TEMPLATE.routes if (r.method, r.path) == (method, path)), None)


def test_every_documented_operation_has_its_own_route_in_the_template():
    operations = openapi_operations()
    assert operations
    for method, path in operations:
        assert route_for(method, path), f"{method} {path} is not wired in template.yaml"


def test_every_route_in_the_template_is_served_by_its_function():
    for route in TEMPLATE.routes:
        if route.method == "ANY":
            continue
        concrete = route.path.replace("{job_id}", "0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10")
        event = apigw.request_event(route, {"job_id": concrete.rsplit("/", 1)[-1]}, route.method, concrete, [], b"")
        status = invoke(route.function, event)["statusCode"]
        assert status not in (404, 405) or route.path.startswith("/fetch/status"), f"{route} answered {status}"


@pytest.mark.parametrize("name", API_EVENTS)
def test_every_api_event_routes_to_a_function_that_answers_it(name, upstream, sqs):
    event = load_event(name)
    route, _ = apigw.match(TEMPLATE.routes, event["httpMethod"], event["path"])
    assert route.path == event["resource"]
    assert invoke(route.function, event)["statusCode"] < 500


def test_every_handler_in_the_template_exists():
    for function in TEMPLATE.functions.values():
        module, _, _ = function.handler.rpartition(".")
        assert (function.code_uri / f"{module}.py").is_file(), function.name


def test_every_checkov_skip_says_why():
    for name, resource in RESOURCES.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV_") and len(skip["comment"]) > 40, name


def test_every_route_gives_up_at_api_gateways_29_s_and_the_fetch_function_may_run_that_long():
    """The template sets no TimeoutInMillis: API Gateway's default, 29 s, which the local stack applies too.
    The fetch function's Timeout reaches it, so a sync fetch (25 s budget) answers before the gateway gives up."""
    assert {route.timeout_ms for route in TEMPLATE.routes} == {29_000}
    assert TEMPLATE.functions["FetchApiFunction"].timeout == 29
