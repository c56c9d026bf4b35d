"""template.yaml is the single truth: every route and event the code handles is wired there."""

import json

import pytest

from local import apigw
from tests.conftest import EVENTS, TEMPLATE, invoke, load_event

RESOURCES = TEMPLATE.raw["Resources"]
GLOBAL_ENV = TEMPLATE.raw["Globals"]["Function"]["Environment"]["Variables"]
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


def test_the_worker_consumes_the_fetch_queue_with_partial_batch_failures():
    [source] = TEMPLATE.sqs_sources
    props = TEMPLATE.functions[source.function].events["FetchJobs"]["Properties"]
    assert source.queue == "FetchQueue"
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "Records" in load_event("sqs_fetch_job")


def test_the_queue_is_fifo_with_a_dead_letter_queue_and_a_long_enough_visibility_timeout():
    queue = TEMPLATE.queues["FetchQueue"]
    worker_timeout = TEMPLATE.functions["WorkerFunction"].timeout
    assert queue["FifoQueue"] is True
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["FetchDeadLetterQueue", "Arn"]}
    assert TEMPLATE.queues["FetchDeadLetterQueue"]["FifoQueue"] is True


def test_the_worker_knows_the_redrive_limit_from_the_same_parameter():
    assert TEMPLATE.queues["FetchQueue"]["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert GLOBAL_ENV["MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}


def test_the_schedule_is_a_parameter_defaulting_to_hourly():
    [schedule] = TEMPLATE.schedules
    assert schedule.expression == {"Ref": "ScheduleRate"}
    assert TEMPLATE.parameters["ScheduleRate"] == "rate(1 hour)"
    assert load_event("schedule")["detail-type"] == "Scheduled Event"


def test_configuration_is_declared_for_every_function():
    for name in ("UPSTREAM_URL", "UPSTREAM_TIMEOUT", "DB_PATH", "QUEUE_URL"):
        assert name in GLOBAL_ENV
    assert GLOBAL_ENV["AWS_ENDPOINT_URL"] == ""
    assert TEMPLATE.raw["Globals"]["Function"]["Runtime"] == "python3.13"


def test_functions_that_use_sqlite_mount_efs_where_db_path_points():
    for name in TEMPLATE.functions:
        props = RESOURCES[name]["Properties"]
        if name == "DocsFunction":
            assert "VpcConfig" not in props and "FileSystemConfigs" not in props
            continue
        [mount] = props["FileSystemConfigs"]
        assert mount["LocalMountPath"].startswith("/mnt/")
        assert GLOBAL_ENV["DB_PATH"].startswith(mount["LocalMountPath"] + "/")
        assert set(RESOURCES[name]["DependsOn"]) == {"MountTargetA", "MountTargetB"}


def test_every_handler_in_the_template_exists():
    for function in TEMPLATE.functions.values():
        module, _, _ = function.handler.rpartition(".")
        assert (function.code_uri / f"{module}.py").is_file(), function.name


def test_post_fetch_needs_the_usage_plans_api_key_and_reads_stay_open():
    keyed = {(r.method, r.path) for r in TEMPLATE.routes if r.api_key_required}
    assert keyed == {("POST", "/fetch")}
    plan = RESOURCES["Api"]["Properties"]["Auth"]["UsagePlan"]
    assert plan["CreateUsagePlan"] == "PER_API"
    assert plan["Throttle"]["RateLimit"] > 0 and plan["Quota"]["Limit"] > 0
