"""The docs function serves documents, 404 and 405 only; the OpenAPI document it serves is complete and true."""

import json
import subprocess
import sys
import threading
import time

import pytest

from aggregator import openapi
from aggregator.config import settings
from aggregator.models import FetchMode, JobStatus
from aggregator.store import Progress, open_store
from aggregator.store.sqlite import ABANDONED_SYNC
from local import apigw
from local.template import ROOT
from tests.api_document import DOCUMENT, ROUTES, examples, resolve, schema_errors
from tests.helpers import BASES, JOB, METHODS, api_event, body, invoke, load_event, reset_settings, spellings

DOCS = ROOT / "functions" / "docs"


def docs_events():
    """Every request API Gateway would hand the docs function, for every method and spelling."""
    for base in BASES:
        for target in spellings(base):
            for method in METHODS:
                matched = apigw.match(ROUTES, method, target.partition("?")[0])
                if matched and matched[0].function == "DocsFunction":
                    yield apigw.request_event(matched[0], matched[1], method, target, [], b"")


def test_whatever_reaches_the_docs_function_gets_a_document_404_or_405_and_nothing_runs(upstream, tmp_path):
    answered = {200: 0, 404: 0, 405: 0}
    for event in docs_events():
        response = invoke("DocsFunction", event)
        status = response["statusCode"]
        assert status in answered, (event["httpMethod"], event["path"], response)
        answered[status] += 1
        if status == 200:
            assert (event["httpMethod"], event["resource"]) in {
                ("GET", p) for p in ("/docs", "/redoc", "/openapi.json")
            }
        if status == 405:
            assert response["multiValueHeaders"]["Allow"] == [allowed(event["resource"])]
    assert min(answered.values()) > 0, answered
    assert sum(answered.values()) > 1000
    assert upstream.requests == 0  # nothing fetched
    assert not (tmp_path / "data").exists()  # the store was never opened: nothing read, nothing written


@pytest.mark.parametrize("resource", ["/", "/{proxy+}", "/data", "/fetch", "/fetch/status/{job_id}", "/docs"])
@pytest.mark.parametrize("method", METHODS)
def test_the_docs_function_chooses_by_resource_never_by_path(upstream, tmp_path, resource, method):
    event = load_event("get_unknown_route") | {"resource": resource, "httpMethod": method}
    event["pathParameters"] = {"job_id": JOB, "proxy": "somewhere"}
    for path in ("/fetch", "/data", f"/fetch/status/{JOB}", "/openapi.json", "/docs", "/nowhere"):
        response = invoke("DocsFunction", event | {"path": path})
        expected = 200 if (resource, method) == ("/docs", "GET") else 404 if resource in ("/", "/{proxy+}") else 405
        assert response["statusCode"] == expected, (path, response)
    assert upstream.requests == 0 and not (tmp_path / "data").exists()


def allowed(resource: str) -> str:
    item = DOCUMENT["paths"].get(resource)
    return ", ".join(sorted(m.upper() for m in item)) if item else "GET"


def test_the_405_table_lists_the_methods_of_each_path():
    for resource, methods in {"/data": "GET", "/fetch": "POST", "/fetch/status/{job_id}": "GET"}.items():
        event = load_event("delete_data") | {"resource": resource, "pathParameters": {"job_id": JOB}}
        response = invoke("DocsFunction", event)
        assert (response["statusCode"], response["multiValueHeaders"]["Allow"]) == (405, [methods])
        assert body(response) == {"statusCode": 405, "message": f"method not allowed; use {methods}"}
        assert allowed(resource) == methods


def test_the_docs_function_imports_no_route_store_or_fetch_code():
    probe = "import sys, app; print(sorted(m for m in sys.modules if m.startswith('aggregator')))"
    env = {"PYTHONPATH": str(ROOT / "layers" / "common" / "python"), "POWERTOOLS_LOG_LEVEL": "ERROR"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=DOCS, env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.replace("'", '"')) == ["aggregator", "aggregator.api", "aggregator.models",
                                                         "aggregator.observability"]  # fmt: skip


def test_the_committed_document_is_what_the_routes_declare():
    assert (DOCS / "openapi.json").read_text() == openapi.render(openapi.document()), "run `make openapi`"


def test_the_document_is_valid_openapi():
    from openapi_spec_validator import validate  # a third of a second to import, for this test alone

    validate(DOCUMENT)


def test_every_example_fits_its_schema():
    found = examples()
    assert len(found) >= 12
    for where, schema, value in found:
        assert schema_errors(schema, value) == [], where


def test_every_operation_is_tagged_by_its_resource():
    tags = {(path, method): op["tags"] for path, item in DOCUMENT["paths"].items() for method, op in item.items()}
    assert tags == {
        ("/data", "get"): ["posts"],
        ("/fetch", "post"): ["jobs"],
        ("/fetch/status/{job_id}", "get"): ["jobs"],
        ("/fetch/jobs", "get"): ["jobs"],
    }
    assert [tag["name"] for tag in DOCUMENT["tags"]] == ["posts", "jobs"]


def test_the_response_headers_are_declared():
    def headers(path, method, status):
        return {name: item.get("required", False) for name, item in response(path, method, status)["headers"].items()}

    assert headers("/data", "get", "200") == {"Link": False}
    assert headers("/fetch", "post", "202") == {"X-Fetch-Outcome": True, "Location": True}
    for status in ("200", "409"):
        assert headers("/fetch", "post", status) == {"X-Fetch-Outcome": True}
    for status in ("500", "502", "504"):  # not required: API Gateway's own answers of these statuses lack it
        assert headers("/fetch", "post", status) == {"X-Fetch-Outcome": False}
    assert DOCUMENT["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]["required"]


def response(path, method, status):
    return resolve(DOCUMENT["paths"][path][method]["responses"][status])


def test_errors_have_typed_detail_items_and_the_403_is_api_gateways_message():
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["ErrorDetail"]["required"] == ["loc", "type", "msg"]
    assert schemas["ErrorBody"]["properties"]["detail"]["items"] == {"$ref": "#/components/schemas/ErrorDetail"}
    forbidden = response("/fetch", "post", "403")["content"]["application/json"]["schema"]
    assert forbidden == {"$ref": "#/components/schemas/GatewayMessage"}
    assert schemas["GatewayMessage"]["required"] == ["message"]
    assert schema_errors(forbidden, {"message": "Forbidden"}) == []


def test_only_schemas_in_use_are_declared():
    text = json.dumps([DOCUMENT["paths"], DOCUMENT["components"]])
    for name in DOCUMENT["components"]["schemas"]:
        assert f'"#/components/schemas/{name}"' in text, name
    assert not {"HTTPValidationError", "ValidationError", "ResponseValidationError"} & set(
        DOCUMENT["components"]["schemas"]
    )


def test_integer_parameters_render_as_integers():
    for parameter in DOCUMENT["paths"]["/data"]["get"]["parameters"]:
        schema = parameter["schema"]
        assert schema["type"] == "integer" and isinstance(schema["minimum"], int), parameter


def test_a_failed_job_is_never_shown_as_a_success_or_the_reverse():
    for status, states in {
        "200": ["succeeded"],
        "202": ["queued", "running"],
        "409": ["failed"],
        "500": ["failed"],
        "502": ["failed"],
        "504": ["failed"],
    }.items():
        schema = response("/fetch", "post", status)["content"]["application/json"]["schema"]
        job_schema = schema["anyOf"][0] if "anyOf" in schema else schema  # the others: API Gateway's, the error
        assert job_schema["allOf"][1]["properties"]["status"]["enum"] == states
        for state in {"queued", "running", "succeeded", "failed"} - set(states):
            assert schema_errors(schema, load_example_job() | {"status": state}) != [], (status, state)


def load_example_job():
    return resolve(DOCUMENT["paths"]["/fetch/status/{job_id}"]["get"]["responses"]["200"])["content"][
        "application/json"
    ]["examples"]["succeeded"]["value"]


VOLATILE = ("job_id", "created_at", "started_at", "finished_at")


def example(path, method, status, name):
    return response(path, method, status)["content"]["application/json"]["examples"][name]["value"]


def same_but_volatile(answer: dict, shown: dict) -> bool:
    return {k: v for k, v in answer.items() if k not in VOLATILE} == {
        k: v for k, v in shown.items() if k not in VOLATILE
    }


def test_the_examples_are_what_the_api_answers(upstream, sqs):
    succeeded = invoke("FetchApiFunction", load_event("post_fetch_sync"))
    assert same_but_volatile(body(succeeded), example("/fetch", "post", "200", "succeeded"))
    upstream.then_respond(500, "oops")
    failed = invoke("FetchApiFunction", load_event("post_fetch_sync"))
    assert failed["statusCode"] == 502
    assert same_but_volatile(body(failed), example("/fetch", "post", "502", "failed"))
    queued = invoke("FetchApiFunction", load_event("post_fetch_task"))
    assert same_but_volatile(body(queued), example("/fetch", "post", "202", "queued"))
    invalid = invoke("ReadApiFunction", api_event("get_data", query={"user_id": "1_0"}))
    assert body(invalid) == example("/data", "get", "422", "example")
    unknown = invoke("ReadApiFunction", load_event("get_job_status"))
    assert body(unknown) == example("/fetch/status/{job_id}", "get", "404", "example")


# The request that answers each operation's 422 example.
INVALID_REQUESTS = {
    ("/data", "get"): ("ReadApiFunction", "get_data", {"query": {"user_id": "1_0"}}),
    ("/fetch/status/{job_id}", "get"): ("ReadApiFunction", "get_job_status", {"path_params": {"job_id": "not-a-uuid"}}),
    ("/fetch/jobs", "get"): ("ReadApiFunction", "get_job_history", {"query": {"limit": "0"}}),
    ("/fetch", "post"): ("FetchApiFunction", "post_fetch_sync", {"query": {"mode": "later"}}),
}


def test_every_422_example_is_what_its_operation_answers_and_names_its_own_parameter(upstream):
    operations = {(path, method): op for path, item in DOCUMENT["paths"].items() for method, op in item.items()}
    assert set(operations) == set(INVALID_REQUESTS)
    for (path, method), (function, event, changes) in INVALID_REQUESTS.items():
        shown = resolve(operations[path, method]["responses"]["422"])["content"]["application/json"]["examples"]
        answer = invoke(function, api_event(event, **changes))
        assert answer["statusCode"] == 422
        assert [example["value"] for example in shown.values()] == [body(answer)], (path, method)
        taken = {(parameter["in"], parameter["name"]) for parameter in operations[path, method]["parameters"]}
        assert {tuple(fault["loc"]) for fault in body(answer)["detail"]} <= taken, (path, method)
    assert upstream.requests == 0


def test_the_example_of_a_job_that_could_not_be_queued_is_what_the_api_answers(upstream):
    answer = invoke("FetchApiFunction", load_event("post_fetch_task"))  # no queue configured
    assert (answer["statusCode"], body(answer)) == (503, example("/fetch", "post", "503", "not_queued"))


def under(path_prefix: str, name: str) -> dict:
    """An event from events/ as it comes through `path_prefix` (a stage: deployed; none: the local stack)."""
    event = load_event(name)
    event["requestContext"]["path"] = path_prefix + event["path"]
    return event


def test_the_swagger_page_links_the_document_under_the_stage_path():
    local = invoke("DocsFunction", under("", "get_docs"))["body"]
    assert 'ui.specActions.updateUrl("/openapi.json")' in local and '"servers": [{"url": "/"}]' in local
    deployed = invoke("DocsFunction", under("/Prod", "get_docs"))["body"]
    assert 'ui.specActions.updateUrl("/Prod/openapi.json")' in deployed and '"servers": [{"url": "/Prod"}]' in deployed


def test_the_document_names_the_stage_path_as_its_server():
    assert body(invoke("DocsFunction", under("", "get_openapi")))["servers"] == [{"url": "/"}]
    assert body(invoke("DocsFunction", under("/Prod", "get_openapi")))["servers"] == [{"url": "/Prod"}]


def test_the_examples_of_a_job_given_up_a_full_store_and_the_history_are_what_the_api_answers(upstream, monkeypatch):
    monkeypatch.setenv("DB_MAX_MB", "1")  # before the store is first opened, as a function's settings are
    reset_settings()
    store = open_store(settings())
    upstream.then_respond(200, upstream.posts, delay=1.0)
    answers = []
    fetch = threading.Thread(target=lambda: answers.append(invoke("FetchApiFunction", load_event("post_fetch_sync"))))
    fetch.start()
    while not store.list_jobs() or store.list_jobs()[0].status != JobStatus.RUNNING:  # its fetch has begun
        time.sleep(0.01)
    store.fail_job(store.list_jobs()[0].job_id, ABANDONED_SYNC)  # as a claim after its lease gives it up
    fetch.join()
    assert answers[0]["statusCode"] == 409
    assert same_but_volatile(body(answers[0]), example("/fetch", "post", "409", "given_up"))

    upstream.posts = [{"userId": 1, "id": i, "title": "t", "body": "x" * 2000} for i in range(1, 1001)]
    full = invoke("FetchApiFunction", load_event("post_fetch_sync"))
    assert full["statusCode"] == 500
    assert same_but_volatile(body(full), example("/fetch", "post", "500", "store_failed"))

    upstream.posts = upstream.posts[:100]
    for post in upstream.posts:
        post["title"], post["body"] = f"post {post['id']} title", "b"
    assert invoke("FetchApiFunction", load_event("post_fetch_sync"))["statusCode"] == 200
    scheduled = store.create_job(FetchMode.SCHEDULED, lease_seconds=60)
    store.record_progress(store.start_job(scheduled.job_id, lease_seconds=60), Progress(fetched=30, pages=3))
    newest = body(invoke("ReadApiFunction", load_event("get_job_history")))
    shown = example("/fetch/jobs", "get", "200", "page")
    assert len(newest) == len(shown) and all(map(same_but_volatile, newest, shown))
