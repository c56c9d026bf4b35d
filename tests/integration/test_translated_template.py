"""What CloudFormation receives: template.yaml translated by the SAM translator, offline, for every
supported parameter set. cfn-lint and `sam validate` read the template before translation and accept
a Ref to a name that merely looks like one SAM generates; these tests read what SAM generates."""

import json

import pytest

from aggregator.metrics import NAMESPACE
from tests.cloudformation import (
    EXISTING_NETWORK,
    NO_VALUE,
    PARAMETER_SETS,
    STACK_NAME,
    STATEFUL_TYPES,
    GetAtt,
    Ref,
    Stack,
    translate,
)
from tests.helpers import TEMPLATE, api_event, body, invoke, load_event


@pytest.fixture(params=list(PARAMETER_SETS))
def stack(request) -> Stack:
    return Stack(PARAMETER_SETS[request.param])


def single(stack: Stack, resource_type: str) -> tuple[str, dict]:
    [(name, props)] = stack.of_type(resource_type).items()
    return name, props


def functions(stack: Stack) -> dict[str, dict]:
    return stack.of_type("AWS::Lambda::Function")


def test_every_reference_resolves(stack):
    assert stack.problems == []


def test_a_reference_to_a_name_sam_does_not_generate_is_caught():
    template = translate(EXISTING_NETWORK)
    template["Outputs"]["ApiKeyId"]["Value"] = {"Ref": "ApiKey"}  # SAM generates ApiApiKey
    template["Resources"]["Api"]["DependsOn"] = "Vpc"
    problems = Stack(EXISTING_NETWORK, template).problems
    assert any(p.startswith("Ref ApiKey") for p in problems)
    assert any("DependsOn Vpc, whose condition CreateNetwork is false" in p for p in problems)


def test_the_api_has_one_stage_prod_throttled_traced_and_logged(stack):
    (api, _) = single(stack, "AWS::ApiGateway::RestApi")
    stages = stack.of_type("AWS::ApiGateway::Stage")
    deployments = stack.of_type("AWS::ApiGateway::Deployment")
    named = [p["StageName"] for p in stages.values()] + [
        p["StageName"] for p in deployments.values() if "StageName" in p
    ]
    assert named == ["Prod"], "a deployment's StageName creates a stage with none of Prod's settings"
    [prod] = stages.values()
    assert prod["RestApiId"] == Ref(api) and prod["DeploymentId"] == Ref(next(iter(deployments)))
    [setting] = prod["MethodSettings"]
    assert setting["ThrottlingRateLimit"] > 0 and setting["ThrottlingBurstLimit"] > 0
    assert prod["TracingEnabled"] is True
    log_group = prod["AccessLogSetting"]["DestinationArn"]
    assert stack.resources[log_group.resource]["Type"] == "AWS::Logs::LogGroup"
    assert json.loads(prod["AccessLogSetting"]["Format"])["requestId"] == "$context.requestId"
    assert stack.outputs["ApiUrl"] == f"https://${{{api}}}.execute-api.us-east-1.amazonaws.com/Prod"


def test_only_post_fetch_needs_the_usage_plans_key(stack):
    (api, rest_api) = single(stack, "AWS::ApiGateway::RestApi")
    operations = {(m.upper(), path): op for path, item in rest_api["Body"]["paths"].items() for m, op in item.items()}
    keyed = {operation for operation, spec in operations.items() if spec.get("security")}
    assert keyed == {("POST", "/fetch")}
    [(stage, _)] = stack.of_type("AWS::ApiGateway::Stage").items()
    (plan, plan_props) = single(stack, "AWS::ApiGateway::UsagePlan")
    assert plan_props["ApiStages"] == [{"ApiId": Ref(api), "Stage": Ref(stage)}]
    assert plan_props["Throttle"]["RateLimit"] > 0 and plan_props["Quota"]["Limit"] > 0
    (key, _) = single(stack, "AWS::ApiGateway::ApiKey")
    (_, link) = single(stack, "AWS::ApiGateway::UsagePlanKey")
    assert (link["KeyId"], link["UsagePlanId"]) == (Ref(key), Ref(plan))
    assert stack.outputs["ApiKeyId"] == Ref(key)


def test_every_route_invokes_its_function_with_permission_from_the_api(stack):
    (api, rest_api) = single(stack, "AWS::ApiGateway::RestApi")
    invoked = {
        op["x-amazon-apigateway-integration"]["uri"].split("${")[-1].split(".Arn}")[0]
        for item in rest_api["Body"]["paths"].values()
        for op in item.values()
    }
    permitted = {
        p["FunctionName"].resource
        for p in stack.of_type("AWS::Lambda::Permission").values()
        if p["Principal"] == "apigateway.amazonaws.com" and f"${{{api}}}" in p["SourceArn"]
    }
    assert invoked == permitted == {"ReadApiFunction", "FetchApiFunction", "DocsFunction"}


def test_what_holds_data_or_serves_the_account_outlives_the_stack_and_nothing_else_does(stack):
    stateful = {n for n, r in stack.resources.items() if r["Type"] in STATEFUL_TYPES}
    assert stateful, "the data lives somewhere"
    account_wide = set(stack.of_type("AWS::ApiGateway::Account"))
    account_wide |= {p["CloudWatchRoleArn"].resource for p in stack.of_type("AWS::ApiGateway::Account").values()}
    retained = {
        n for n, r in stack.resources.items() if "Retain" in (r.get("DeletionPolicy"), r.get("UpdateReplacePolicy"))
    }
    assert retained == stateful | account_wide
    for name in retained:
        resource = stack.resources[name]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain"), name
    for file_system in stack.of_type("AWS::EFS::FileSystem").values():
        assert file_system["Encrypted"] is True and file_system["BackupPolicy"] == {"Status": "ENABLED"}
    for table in stack.of_type("AWS::DynamoDB::Table").values():
        assert table["BillingMode"] == "PAY_PER_REQUEST", "nothing billed while idle"
        assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert table["SSESpecification"] == {"SSEEnabled": True}
    for log_group in stack.of_type("AWS::Logs::LogGroup").values():
        assert STACK_NAME in log_group["LogGroupName"], "kept, it would block a new stack of the same name"


def test_every_function_is_traced_and_logs_to_its_own_group_for_the_days_asked(stack):
    groups = [function["LoggingConfig"]["LogGroup"] for function in functions(stack).values()]
    assert len(set(groups)) == len(groups)
    for group in groups:
        assert stack.props(group.resource)["RetentionInDays"] == stack.parameters["LogRetentionDays"]
    assert {f["TracingConfig"]["Mode"] for f in functions(stack).values()} == {"Active"}


def test_the_layer_is_the_stacks_own_and_old_versions_are_deleted(stack):
    (layer, props) = single(stack, "AWS::Lambda::LayerVersion")
    assert props["LayerName"] == f"{STACK_NAME}-common"
    assert stack.resources[layer]["DeletionPolicy"] == "Delete"
    for function in functions(stack).values():
        assert function["Layers"] == [Ref(layer)]


def test_the_account_wide_logging_role_is_set_only_when_asked_and_outlives_the_stack(stack):
    accounts = stack.of_type("AWS::ApiGateway::Account")
    asked = stack.parameters["SetApiGatewayLoggingRole"] == "true"
    assert bool(accounts) == asked
    for name, account in accounts.items():
        role = account["CloudWatchRoleArn"].resource
        assert "Retain" == stack.resources[name]["DeletionPolicy"] == stack.resources[role]["DeletionPolicy"]
        # the stage is created after the setting, or API Gateway refuses its access logs
        api = stack.resources["Api"]
        handle = stack.resolve(stack.resources[api["DependsOn"]]["Metadata"])
        assert Ref(name) in handle.values()


def test_by_default_the_stack_sets_the_accounts_logging_role_which_a_new_account_needs():
    assert Stack({}).of_type("AWS::ApiGateway::Account")


def test_fetch_jobs_flow_from_the_queue_to_the_worker_and_failures_to_the_dead_letter_queue(stack):
    (_, source) = single(stack, "AWS::Lambda::EventSourceMapping")
    worker = source["FunctionName"].resource
    queue = source["EventSourceArn"].resource
    assert (worker, queue) == ("WorkerFunction", "FetchQueue")
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= source["BatchSize"] <= 10, "a FIFO queue hands Lambda at most 10 messages"
    assert 2 <= source["ScalingConfig"]["MaximumConcurrency"] <= 1000, "the range SQS accepts"
    queue_props = stack.props(queue)
    dead_letter = queue_props["RedrivePolicy"]["deadLetterTargetArn"]
    assert dead_letter == GetAtt("FetchDeadLetterQueue", "Arn")
    dlq_props = stack.props(dead_letter.resource)
    assert queue_props["FifoQueue"] is dlq_props["FifoQueue"] is True
    assert queue_props["SqsManagedSseEnabled"] is dlq_props["SqsManagedSseEnabled"] is True
    assert dlq_props["MessageRetentionPeriod"] == 14 * 24 * 3600
    worker_props = functions(stack)[worker]
    assert queue_props["VisibilityTimeout"] >= 6 * worker_props["Timeout"], "AWS's advice for Lambda consumers"
    assert dlq_props["MessageRetentionPeriod"] > queue_props["MessageRetentionPeriod"]
    # the worker marks a job failed on the delivery after which SQS gives the message up
    assert (
        worker_props["Environment"]["Variables"]["MAX_RECEIVE_COUNT"] == queue_props["RedrivePolicy"]["maxReceiveCount"]
    )
    # a queued job's lease lasts as long as these allow the queue and the worker to run it
    for name, function in functions(stack).items():
        variables = function["Environment"]["Variables"]
        assert int(variables["WORKER_TIMEOUT"]) == worker_props["Timeout"], name
        assert int(variables["QUEUE_VISIBILITY_TIMEOUT"]) == queue_props["VisibilityTimeout"], name


def test_only_the_functions_that_queue_jobs_may_send_and_they_know_the_queue(stack):
    senders = set()
    for name, function in functions(stack).items():
        assert function["Environment"]["Variables"]["QUEUE_URL"] == Ref("FetchQueue")
        role = stack.props(function["Role"].resource)
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        assert all(s["Resource"] != "*" for s in statements), name
        if any(action.startswith("sqs:Send") for s in statements for action in s["Action"]):
            senders.add(name)
            [resource] = {s["Resource"] for s in statements if s["Action"][0].startswith("sqs:")}
            assert resource.endswith(":${FetchQueue.QueueName}")
    assert senders == {"FetchApiFunction", "SchedulerFunction"}


def test_the_only_managed_policies_are_the_ones_the_readme_owns_up_to(stack):
    """Logs and X-Ray for every function; SAM's ENI policy wherever the template gives a VpcConfig (kept,
    unused, with DynamoDB); SAM's SQS poller policy, which names no queue, for the worker."""
    managed = "arn:aws:iam::aws:policy/"
    declared = TEMPLATE.raw["Resources"]
    for name, function in functions(stack).items():
        expected = {"service-role/AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}
        if "VpcConfig" in declared[name]["Properties"]:
            expected.add("service-role/AWSLambdaVPCAccessExecutionRole")
        if name == "WorkerFunction":
            expected.add("service-role/AWSLambdaSQSQueueExecutionRole")
        arns = stack.props(function["Role"].resource)["ManagedPolicyArns"]
        assert {arn.removeprefix(managed) for arn in arns} == expected, name


def test_the_schedule_invokes_the_scheduler_at_the_configured_rate(stack):
    (rule, props) = single(stack, "AWS::Events::Rule")
    assert props["ScheduleExpression"] == stack.parameters["ScheduleRate"]
    assert props.get("State", "ENABLED") == "ENABLED"
    [target] = props["Targets"]
    assert target["Arn"] == GetAtt("SchedulerFunction", "Arn")
    permissions = stack.of_type("AWS::Lambda::Permission").values()
    assert any(
        p["FunctionName"] == Ref("SchedulerFunction")
        and p["Principal"] == "events.amazonaws.com"
        and p["SourceArn"] == GetAtt(rule, "Arn")
        for p in permissions
    )


def test_functions_reach_the_network_they_are_given_or_the_one_created(stack):
    given = stack.parameters["ExistingVpcId"]
    created = {r["Type"] for r in stack.resources.values()} & {
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::NatGateway",
        "AWS::EC2::InternetGateway",
    }
    if given:
        assert not created
    subnets = (
        [stack.parameters["ExistingSubnetA"], stack.parameters["ExistingSubnetB"]]
        if given
        else [Ref("PrivateSubnetA"), Ref("PrivateSubnetB")]
    )
    group = stack.parameters["ExistingFunctionSecurityGroupId"] or Ref("FunctionSecurityGroup")
    in_vpc = {name: f["VpcConfig"] for name, f in functions(stack).items() if "VpcConfig" in f}
    assert "DocsFunction" not in in_vpc, "it needs neither EFS nor the internet"
    for config in in_vpc.values():
        assert config == {"SubnetIds": subnets, "SecurityGroupIds": [group]}
    if in_vpc and not given:
        assert_private_subnets_reach_the_internet_through_a_nat(stack, subnets)


def test_the_store_backend_chosen_is_the_one_deployed_and_the_functions_are_told_where_it_is(stack):
    backend = stack.parameters["StoreBackend"]
    tables = stack.of_type("AWS::DynamoDB::Table")
    assert bool(tables) == (backend == "dynamodb")
    assert bool(stack.of_type("AWS::EFS::FileSystem")) == (backend == "sqlite")
    for name, function in functions(stack).items():
        variables = function["Environment"]["Variables"]
        assert variables["STORE_BACKEND"] == backend, name
        if backend == "dynamodb":
            assert (variables["POSTS_TABLE"], variables["JOBS_TABLE"]) == (Ref("PostsTable"), Ref("JobsTable")), name
        else:
            assert variables["DB_PATH"].startswith("/mnt/data/"), name


def test_with_dynamodb_the_functions_sit_in_no_vpc_and_there_is_no_efs_and_no_nat(stack):
    if stack.parameters["StoreBackend"] != "dynamodb":
        pytest.skip("SQLite: the functions reach EFS in a VPC (the tests above)")
    network = {"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::EIP", "AWS::EC2::SecurityGroup"}
    assert not {r["Type"] for r in stack.resources.values()} & (network | {"AWS::EFS::FileSystem"})
    for name, function in functions(stack).items():
        assert "VpcConfig" not in function and "FileSystemConfigs" not in function, name
    posts = stack.props("PostsTable")
    assert [key["AttributeName"] for key in posts["KeySchema"]] == ["bucket", "id"]
    [by_user] = posts["GlobalSecondaryIndexes"]
    assert [key["AttributeName"] for key in by_user["KeySchema"]] == ["user_id", "id"]
    assert by_user["Projection"] == {"ProjectionType": "ALL"}, "a user's page is one Query, with no reads back"
    assert [key["AttributeName"] for key in stack.props("JobsTable")["KeySchema"]] == ["job_id"]


def dynamodb_statements(stack: Stack, function: dict) -> list[dict]:
    role = stack.props(function["Role"].resource)
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    return [s for s in statements if any(action.startswith("dynamodb:") for action in s["Action"])]


def test_dynamodb_access_is_scoped_to_the_tables_and_their_index_and_reads_only_read(stack):
    tables = {GetAtt(name, "Arn") for name in stack.of_type("AWS::DynamoDB::Table")}
    indexes = {f"${{{name}.Arn}}/index/*" for name in stack.of_type("AWS::DynamoDB::Table")}
    for name, function in functions(stack).items():
        statements = dynamodb_statements(stack, function)
        assert bool(statements) == (bool(tables) and name != "DocsFunction"), name
        for statement in statements:
            assert statement["Effect"] == "Allow" and set(statement["Resource"]) <= tables | indexes, name
        actions = {action for statement in statements for action in statement["Action"]}
        if name == "ReadApiFunction" and tables:
            assert actions == {"dynamodb:GetItem", "dynamodb:Query"}


def assert_private_subnets_reach_the_internet_through_a_nat(stack: Stack, subnets: list[Ref]) -> None:
    zones = {json.dumps(stack.props(s.resource)["AvailabilityZone"]) for s in subnets}
    assert len(zones) == 2
    routes = stack.of_type("AWS::EC2::Route").values()
    tables = {p["SubnetId"]: p["RouteTableId"] for p in stack.of_type("AWS::EC2::SubnetRouteTableAssociation").values()}
    default = {r["RouteTableId"]: r for r in routes if r["DestinationCidrBlock"] == "0.0.0.0/0"}
    for subnet in subnets:
        nat = default[tables[subnet]]["NatGatewayId"].resource
        public = stack.props(nat)["SubnetId"]
        assert "GatewayId" in default[tables[public]], "the NAT gateway sits in a subnet with an internet gateway"


def test_functions_mount_the_retained_file_system_where_db_path_points(stack):
    for name, function in functions(stack).items():
        if "FileSystemConfigs" not in function:
            continue
        [mount] = function["FileSystemConfigs"]
        db_path = function["Environment"]["Variables"]["DB_PATH"]
        assert db_path.startswith(mount["LocalMountPath"] + "/")
        access_point = stack.props(mount["Arn"].resource)
        file_system = access_point["FileSystemId"].resource
        assert stack.resources[file_system]["DeletionPolicy"] == "Retain"
        targets = {
            n for n, t in stack.of_type("AWS::EFS::MountTarget").items() if t["FileSystemId"] == Ref(file_system)
        }
        assert dependencies(stack, name) >= targets, "Lambda refuses a mount with no target yet"
        subnets = {json.dumps(t["SubnetId"], default=str) for t in stack.of_type("AWS::EFS::MountTarget").values()}
        assert subnets == {json.dumps(s, default=str) for s in function["VpcConfig"]["SubnetIds"]}


def dependencies(stack: Stack, name: str) -> set[str]:
    """What a resource is created after: its DependsOn, and what a wait condition handle among them refers to."""
    direct = stack.resources[name].get("DependsOn", [])
    found = set([direct] if isinstance(direct, str) else direct)
    for handle in list(found):
        if stack.resources[handle]["Type"] == "AWS::CloudFormation::WaitConditionHandle":
            found |= {ref.resource for ref in refs_in(stack.resolve(stack.resources[handle].get("Metadata", {})))}
    return found


def refs_in(value) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [ref for item in value for ref in refs_in(item)] if isinstance(value, list) else []


def test_nfs_reaches_efs_only_from_the_functions(stack):
    for ingress in stack.of_type("AWS::EC2::SecurityGroupIngress").values():
        assert (ingress["FromPort"], ingress["ToPort"]) == (2049, 2049)
        assert ingress["SourceSecurityGroupId"] == (
            stack.parameters["ExistingFunctionSecurityGroupId"] or Ref("FunctionSecurityGroup")
        )
    for name, group in stack.of_type("AWS::EC2::SecurityGroup").items():
        assert "SecurityGroupIngress" not in group
        egress = [{k: v for k, v in rule.items() if k != "Description"} for rule in group["SecurityGroupEgress"]]
        if name == "FunctionSecurityGroup":  # out only to HTTPS, and NFS to EFS
            assert egress == [
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"},
                {
                    "IpProtocol": "tcp",
                    "FromPort": 2049,
                    "ToPort": 2049,
                    "DestinationSecurityGroupId": Ref("EfsSecurityGroup"),
                },
            ]
        else:  # no way out: a security group with no egress rule would allow all
            assert egress == [{"IpProtocol": "-1", "CidrIp": "127.0.0.1/32"}], name


def test_alarms_watch_what_exists_and_notify_the_topic_when_one_is_given(stack):
    alarms = stack.of_type("AWS::CloudWatch::Alarm")
    assert set(alarms) == {"FetchFailuresAlarm", "DeadLetterAlarm", "WorkerErrorsAlarm", "Api5xxAlarm"}
    topic = stack.parameters["AlarmTopicArn"]
    for name, alarm in alarms.items():
        assert alarm.get("AlarmActions", NO_VALUE) == ([topic] if topic else NO_VALUE), name
        # back to OK after one 5-minute period without a failure, so the next one notifies again
        assert (period_of(alarm), alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (300, 1, "notBreaching")
    assert (alarms["Api5xxAlarm"]["Statistic"], alarms["Api5xxAlarm"]["Threshold"]) == ("Sum", 5)
    dimensions = {name: metric_of(alarm)["Dimensions"] for name, alarm in alarms.items()}
    assert dimensions["WorkerErrorsAlarm"] == [{"Name": "FunctionName", "Value": Ref("WorkerFunction")}]
    assert dimensions["DeadLetterAlarm"] == [
        {
            "Name": "QueueName",
            "Value": GetAtt(stack.props("FetchQueue")["RedrivePolicy"]["deadLetterTargetArn"].resource, "QueueName"),
        }
    ]
    (_, rest_api) = single(stack, "AWS::ApiGateway::RestApi")
    [stage] = stack.of_type("AWS::ApiGateway::Stage").values()
    assert dimensions["Api5xxAlarm"] == [
        {"Name": "ApiName", "Value": rest_api["Name"]},
        {"Name": "Stage", "Value": stage["StageName"]},
    ]


def period_of(alarm: dict) -> int:
    return alarm.get("Period") or next(m["MetricStat"]["Period"] for m in alarm["Metrics"] if "MetricStat" in m)


def metric_of(alarm: dict) -> dict:
    """The metric an alarm watches, directly or inside its metric math."""
    if "MetricName" in alarm:
        return {k: alarm[k] for k in ("Namespace", "MetricName", "Dimensions")}
    [stat] = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
    return stat["Metric"]


def test_the_dead_letter_alarm_fires_on_each_new_message_not_on_the_depth():
    """The depth of a queue nothing drains stays up after the first failure; its growth does not."""
    alarm = Stack({}).props("DeadLetterAlarm")
    [expression] = [m for m in alarm["Metrics"] if m.get("ReturnData")]
    [depth] = [m["Id"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert expression["Expression"] == f"DIFF(FILL({depth}, 0))"
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


def test_the_failure_alarm_watches_the_metric_a_failed_fetch_emits(upstream, capsys):
    alarm = Stack({}).props("FetchFailuresAlarm")
    upstream.then_respond(500, {})
    capsys.readouterr()
    invoke("FetchApiFunction", load_event("post_fetch_sync"))
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [directive] = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == alarm["Namespace"] == NAMESPACE
    assert alarm["MetricName"] in {m["Name"] for m in directive["Metrics"]}
    [dimension_names] = directive["Dimensions"]
    assert [{"Name": name, "Value": emf[name]} for name in dimension_names] == alarm["Dimensions"]
    assert sum(emf[alarm["MetricName"]]) >= alarm["Threshold"], "one failed fetch is enough to fire"
    assert (alarm["Statistic"], alarm["ComparisonOperator"]) == ("Sum", "GreaterThanOrEqualToThreshold")


def test_a_message_naming_no_known_job_fails_without_a_failed_fetch_so_only_the_dead_letter_alarm_sees_it(capsys):
    event = load_event("sqs_fetch_job")  # its job is in no fresh database
    capsys.readouterr()
    response = invoke("WorkerFunction", event)
    assert response["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["messageId"]}]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert not any("FetchFailures" in line for line in emitted)


class DynamoDbRequests:
    """What IAM checks for each DynamoDB request a store's client sends: (action, resource) pairs, the
    resource as the translated template names it (a table's GetAtt Arn, or its index ARN)."""

    ITEM_ACTIONS = {
        "Put": "PutItem",
        "Update": "UpdateItem",
        "Delete": "DeleteItem",
        "ConditionCheck": "ConditionCheckItem",
    }

    def __init__(self, client):
        self.needed: set[tuple[str, object]] = set()
        client.meta.events.register("before-parameter-build.dynamodb.*", self._record)

    def _record(self, model, params, **_):
        if model.name == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, request),) = item.items()
                self.needed.add((f"dynamodb:{self.ITEM_ACTIONS[kind]}", GetAtt(request["TableName"], "Arn")))
        elif model.name == "BatchWriteItem":
            self.needed |= {("dynamodb:BatchWriteItem", GetAtt(table, "Arn")) for table in params["RequestItems"]}
        else:
            table = params["TableName"]
            resource = f"${{{table}.Arn}}/index/*" if "IndexName" in params else GetAtt(table, "Arn")
            self.needed.add((f"dynamodb:{model.name}", resource))


@pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)
def test_every_dynamodb_request_a_function_makes_is_one_its_role_allows(backend, upstream, sqs):
    """The tables are named by their logical ids here, as the local stack names them."""
    from aggregator.config import settings
    from aggregator.store import open_store

    upstream.posts[0]["body"] = "é" * 400_000  # kept in parts, which a read fetches from the table
    stack = Stack({"StoreBackend": "dynamodb"})
    requests = DynamoDbRequests(open_store(settings())._db)
    queued = body(invoke("FetchApiFunction", load_event("post_fetch_task")))["job_id"]
    worker_event = load_event("sqs_fetch_job")
    worker_event["Records"][0]["body"] = json.dumps({"job_id": queued})
    runs = [
        ("WorkerFunction", worker_event),
        ("FetchApiFunction", load_event("post_fetch_sync")),
        ("FetchApiFunction", load_event("post_fetch_task")),
        ("SchedulerFunction", load_event("schedule")),
        ("ReadApiFunction", load_event("get_data")),
        ("ReadApiFunction", load_event("get_data_by_user")),
        ("ReadApiFunction", api_event("get_job_status", path_params={"job_id": queued})),
        ("ReadApiFunction", load_event("get_job_history")),
    ]
    for function, event in runs:
        requests.needed.clear()
        invoke(function, event)
        assert requests.needed, f"{function} made no DynamoDB request"
        statements = dynamodb_statements(stack, functions(stack)[function])
        for action, resource in requests.needed:
            allowed = any(action in s["Action"] and resource in s["Resource"] for s in statements)
            assert allowed, f"{function}'s role does not allow {action} on {resource}"


def test_the_outputs_give_the_api_its_docs_its_key_and_the_queues(stack):
    outputs = stack.template["Outputs"]
    assert set(outputs) == {"ApiUrl", "DocsUrl", "OpenApiUrl", "ApiKeyId", "FetchQueueUrl", "DeadLetterQueueUrl"}
    base = "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/Prod"
    assert [outputs[name]["Value"]["Fn::Sub"] for name in ("ApiUrl", "DocsUrl", "OpenApiUrl")] == [
        base,
        base + "/docs",
        base + "/openapi.json",
    ]
    assert (outputs["FetchQueueUrl"]["Value"], outputs["DeadLetterQueueUrl"]["Value"]) == (
        {"Ref": "FetchQueue"},
        {"Ref": "FetchDeadLetterQueue"},
    )
