"""The translated template created by moto's CloudFormation, in process, for every parameter set of
the translation test: what the stack creates, and the fetch path's send against the queue it creates.

What this cannot prove. moto runs no function code without Docker and fires no schedule. It skips
API Gateway stages, usage plans, API keys, the account setting, alarms and the wait condition handle
without creating them. It ignores a table's encryption and point-in-time recovery settings, and applies
neither IAM policies, security group egress, a function's file system mount nor its layers, and it
checks little of what AWS checks (subnet zones, mount targets being ready, code size). A stack
created here can still fail in AWS; the translation test checks references and settings, and this one
that the resources come into being wired to each other. The workarounds below say what moto lacks.
"""

import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from aggregator import config, queue
from aggregator.models import FetchMode, JobStatus
from aggregator.store import open_store
from tests.cloudformation import ARTIFACTS, PARAMETER_SETS, STACK_NAME, Stack, code_key, translate
from tests.helpers import merge, moto_cloud, reset_settings

JOB_ID = "0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10"


def moto_can_create(template: dict, parameters: dict[str, str]) -> dict:
    """The translated template with moto's known gaps worked around, each for the reason given."""
    template = without_list_items_of_no_value(template, Stack(parameters, template).conditions)
    access_points = set()
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        # CloudFormation appends ".fifo" to the name it generates for a FIFO queue; moto does not,
        # then refuses the name. Name them as CloudFormation would, minus its random suffix.
        if resource["Type"] == "AWS::SQS::Queue" and properties.get("FifoQueue"):
            properties["QueueName"] = f"{STACK_NAME}-{name}.fifo"
        if resource["Type"] == "AWS::EFS::AccessPoint":
            access_points.add(name)
    # moto has no GetAtt Arn for an EFS access point; its Ref (the id) makes the same ARN.
    text = json.dumps(template)
    for name in access_points:
        arn = f"arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:access-point/${{{name}}}"
        text = text.replace(json.dumps({"Fn::GetAtt": [name, "Arn"]}), json.dumps({"Fn::Sub": arn}))
    return json.loads(text)


def without_list_items_of_no_value(value: Any, conditions: dict[str, bool]) -> Any:
    """CloudFormation leaves out a list item whose Fn::If chooses AWS::NoValue (a role's policy for the other
    store backend); moto keeps it as a null, then fails on it. Leave such items out, as CloudFormation does."""
    if isinstance(value, list):
        chosen = [item for item in value if not (is_if(item) and chooses_no_value(item["Fn::If"], conditions))]
        return [without_list_items_of_no_value(item, conditions) for item in chosen]
    if isinstance(value, dict):
        return {key: without_list_items_of_no_value(item, conditions) for key, item in value.items()}
    return value


def is_if(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == ["Fn::If"]


def chooses_no_value(arguments: list, conditions: dict[str, bool]) -> bool:
    name, when_true, when_false = arguments
    return (when_true if conditions[name] else when_false) == {"Ref": "AWS::NoValue"}


def import_the_body(original, moto_apigateway):
    """moto creates a RestApi without its Body (the routes), then refuses to deploy an API with no
    methods. Import the Body, as API Gateway does, through moto's own OpenAPI import."""

    def create(cls, name, cloudformation_json, account_id, region_name, **kwargs):
        api = original(name, cloudformation_json, account_id, region_name, **kwargs)
        body = cloudformation_json["Properties"].get("Body")
        if body:
            backend = moto_apigateway.apigateway_backends[account_id][region_name]
            backend.put_rest_api(api.id, body, fail_on_warnings=False, mode="overwrite")
        return api

    return classmethod(create)


@dataclass
class Deployed:
    parameters: dict[str, str]
    template: dict
    outputs: dict[str, str]
    physical: dict[str, str]  # logical id -> physical id
    clients: dict[str, Any] = field(default_factory=dict)  # one a service: each costs milliseconds to make

    @property
    def store_backend(self) -> str:
        return self.parameters.get("StoreBackend", "sqlite")

    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = boto3.client(service, region_name="us-east-1")
        return self.clients[service]

    def function(self, name: str) -> dict:
        return self.client("lambda").get_function_configuration(FunctionName=self.physical[name])

    def queue_attributes(self, url: str) -> dict:
        return self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


@pytest.fixture(scope="module", params=list(PARAMETER_SETS))
def deployed(request):
    from moto.apigateway import models as moto_apigateway  # imported only by a process that deploys

    with pytest.MonkeyPatch.context() as patch, moto_cloud():
        for name, value in {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
        }.items():
            patch.setenv(name, value)
        patch.setattr(
            moto_apigateway.RestAPI,
            "create_from_cloudformation_json",
            import_the_body(moto_apigateway.RestAPI.create_from_cloudformation_json, moto_apigateway),
        )
        parameters = with_the_network_it_names(PARAMETER_SETS[request.param])
        template = translate(parameters)
        upload_code(template)
        cloudformation = boto3.client("cloudformation")
        with warnings.catch_warnings():  # one per resource type moto skips; the docstring lists them
            warnings.filterwarnings("ignore", message="Tried to parse AWS::")
            cloudformation.create_stack(
                StackName=STACK_NAME,
                TemplateBody=json.dumps(moto_can_create(template, parameters)),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
                Capabilities=["CAPABILITY_IAM"],
            )
            [stack] = cloudformation.describe_stacks(StackName=STACK_NAME)["Stacks"]
            resources = cloudformation.list_stack_resources(StackName=STACK_NAME)["StackResourceSummaries"]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        yield Deployed(
            parameters=parameters,
            template=template,
            outputs={o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]},
            physical={r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources},
        )


def with_the_network_it_names(parameters: dict[str, str]) -> dict[str, str]:
    """The row's parameters, with an existing network's ids replaced by a network made in moto."""
    if not parameters.get("ExistingVpcId"):
        return dict(parameters)
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")["Subnet"]
        for i, zone in enumerate("ab")
    ]
    made = {"ExistingVpcId": vpc, "ExistingSubnetA": subnets[0]["SubnetId"], "ExistingSubnetB": subnets[1]["SubnetId"]}
    if parameters.get("ExistingFunctionSecurityGroupId"):
        group = ec2.create_security_group(GroupName="functions", Description="functions", VpcId=vpc)
        made["ExistingFunctionSecurityGroupId"] = group["GroupId"]
    return {**parameters, **made}


def upload_code(template: dict) -> None:
    """What `sam deploy` uploads: moto stores each function's and layer's code (and runs none of it)."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=ARTIFACTS)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", "def lambda_handler(event, context):\n    return None\n")
    for name, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::Lambda::Function", "AWS::Lambda::LayerVersion"):
            s3.put_object(Bucket=ARTIFACTS, Key=code_key(name), Body=archive.getvalue())


def functions(deployed: Deployed) -> dict[str, dict]:
    names = [n for n, r in deployed.template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"]
    return {name: deployed.function(name) for name in names}


def environment(function: dict) -> dict[str, str]:
    # Lambda holds every variable as a string; moto keeps the numbers the template resolved to.
    return {key: str(value) for key, value in function["Environment"]["Variables"].items()}


def test_the_fetch_queue_redrives_to_its_dead_letter_queue(deployed):
    fetch_queue = deployed.queue_attributes(deployed.outputs["FetchQueueUrl"])
    dead_letter = deployed.queue_attributes(deployed.outputs["DeadLetterQueueUrl"])
    assert fetch_queue["FifoQueue"] == dead_letter["FifoQueue"] == "true"
    redrive = json.loads(fetch_queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dead_letter["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == int(deployed.parameters.get("MaxReceiveCount", 3))
    assert int(fetch_queue["VisibilityTimeout"]) >= 6 * deployed.function("WorkerFunction")["Timeout"]
    assert int(dead_letter["MessageRetentionPeriod"]) == 14 * 24 * 3600


def test_the_worker_takes_batches_from_the_fetch_queue_and_reports_partial_failures(deployed):
    queue_arn = deployed.queue_attributes(deployed.outputs["FetchQueueUrl"])["QueueArn"]
    [mapping] = deployed.client("lambda").list_event_source_mappings(EventSourceArn=queue_arn)["EventSourceMappings"]
    assert mapping["FunctionArn"] == deployed.function("WorkerFunction")["FunctionArn"]
    assert mapping["BatchSize"] == 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert mapping["State"] == "Enabled"


def test_the_schedule_invokes_the_scheduler_hourly(deployed):
    events = deployed.client("events")
    rule = events.describe_rule(Name=deployed.physical["SchedulerFunctionPeriodic"])
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 hour)", "ENABLED")
    [target] = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == deployed.function("SchedulerFunction")["FunctionArn"]


def test_the_logging_role_is_named_after_the_stack_when_the_stack_sets_it(deployed):
    roles = deployed.client("iam").list_roles()["Roles"]
    named = [r["RoleName"] for r in roles if r["RoleName"].startswith(f"{STACK_NAME}-ApiGatewayLoggingRole-")]
    assert len(named) == (deployed.parameters.get("SetApiGatewayLoggingRole", "true") == "true")


def test_every_function_reads_a_valid_configuration_naming_the_stacks_queue(deployed):
    redrive = json.loads(deployed.queue_attributes(deployed.outputs["FetchQueueUrl"])["RedrivePolicy"])
    for name, function in functions(deployed).items():
        settings = config.load(environment(function))
        assert settings.queue_url == deployed.outputs["FetchQueueUrl"], name
        assert settings.max_receive_count == int(redrive["maxReceiveCount"]), name
        assert settings.aws_endpoint_url is None, f"{name} must reach AWS itself"
        assert settings.upstream_url == deployed.parameters.get("UpstreamUrl", config.DEFAULT_UPSTREAM_URL)


def test_functions_that_keep_data_sit_in_the_private_subnets_beside_the_file_systems_mount_targets(deployed):
    if deployed.store_backend == "dynamodb":
        pytest.skip("no file system and no network: the next test checks the DynamoDB rows")
    ec2, efs = deployed.client("ec2"), deployed.client("efs")
    if deployed.parameters.get("ExistingVpcId"):
        subnets = [deployed.parameters["ExistingSubnetA"], deployed.parameters["ExistingSubnetB"]]
        assert "Vpc" not in deployed.physical, "the stack makes no network of its own"
    else:
        subnets = [deployed.physical["PrivateSubnetA"], deployed.physical["PrivateSubnetB"]]
        assert_the_vpc_reaches_the_internet_through_a_nat(ec2, deployed.physical["Vpc"], subnets)
    group = deployed.parameters.get("ExistingFunctionSecurityGroupId") or deployed.physical["FunctionSecurityGroup"]
    for name, function in functions(deployed).items():
        if name == "DocsFunction":
            assert not function.get("VpcConfig", {}).get("SubnetIds"), "it needs neither EFS nor the internet"
            continue
        assert function["VpcConfig"]["SubnetIds"] == subnets, name
        assert function["VpcConfig"]["SecurityGroupIds"] == [group], name
    [file_system] = efs.describe_file_systems()["FileSystems"]
    assert file_system["Encrypted"] and file_system["Name"] == f"{STACK_NAME}-data"
    targets = efs.describe_mount_targets(FileSystemId=file_system["FileSystemId"])["MountTargets"]
    assert sorted(t["SubnetId"] for t in targets) == sorted(subnets)
    [access_point] = efs.describe_access_points(FileSystemId=file_system["FileSystemId"])["AccessPoints"]
    assert access_point["RootDirectory"]["Path"] == "/aggregator"
    assert access_point["PosixUser"] == {"Uid": 1000, "Gid": 1000}
    [efs_group] = {
        g
        for t in targets
        for g in efs.describe_mount_target_security_groups(MountTargetId=t["MountTargetId"])["SecurityGroups"]
    }
    [nfs] = ec2.describe_security_groups(GroupIds=[efs_group])["SecurityGroups"][0]["IpPermissions"]
    assert (nfs["FromPort"], nfs["ToPort"]) == (2049, 2049)
    assert [pair["GroupId"] for pair in nfs["UserIdGroupPairs"]] == [group]


def test_with_dynamodb_the_functions_run_outside_any_vpc_on_the_tables_the_stack_made(deployed):
    if deployed.store_backend != "dynamodb":
        pytest.skip("SQLite rows: the test before checks the network and the file system")
    ec2, efs, dynamodb = deployed.client("ec2"), deployed.client("efs"), deployed.client("dynamodb")
    assert efs.describe_file_systems()["FileSystems"] == []
    assert ec2.describe_nat_gateways()["NatGateways"] == []
    assert not {"Vpc", "FunctionSecurityGroup", "EfsSecurityGroup"} & set(deployed.physical)
    for name, function in functions(deployed).items():
        assert not function.get("VpcConfig", {}).get("SubnetIds"), name
        assert not function.get("FileSystemConfigs"), name
    posts = dynamodb.describe_table(TableName=deployed.physical["PostsTable"])["Table"]
    jobs = dynamodb.describe_table(TableName=deployed.physical["JobsTable"])["Table"]
    assert posts["BillingModeSummary"]["BillingMode"] == jobs["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    [by_user] = posts["GlobalSecondaryIndexes"]
    assert [key["AttributeName"] for key in by_user["KeySchema"]] == ["user_id", "id"]


def test_with_dynamodb_each_function_opens_the_store_on_the_stacks_tables(deployed):
    if deployed.store_backend != "dynamodb":
        pytest.skip("SQLite rows: the file is on EFS, which moto does not mount")
    for name, function in functions(deployed).items():
        settings = config.load(environment(function))
        assert settings.store_backend == "dynamodb", name
        assert (settings.posts_table, settings.jobs_table) == (
            deployed.physical["PostsTable"],
            deployed.physical["JobsTable"],
        ), name
    store = open_store(config.load(environment(deployed.function("FetchApiFunction"))))
    claim = store.claim_job(FetchMode.SYNC, fresh_for=0, lease_seconds=60, keep_jobs=1000)
    lease = store.start_job(claim.job.job_id, lease_seconds=60)
    assert merge(store, [[(i, 1 + i % 2, f"t{i}", "b") for i in range(1, 11)]], lease=lease).inserted == 10
    reader = open_store(config.load(environment(deployed.function("ReadApiFunction"))))
    page = reader.page_of_posts_json(user_id=2, after_id=0, limit=3, max_bytes=6_000_000)
    assert ([post["id"] for post in json.loads(page.json)], page.more) == ([1, 3, 5], True)
    assert reader.get_job(claim.job.job_id).status == JobStatus.SUCCEEDED
    assert [job.job_id for job in reader.page_of_jobs(before=None, limit=5).jobs] == [claim.job.job_id]


def assert_the_vpc_reaches_the_internet_through_a_nat(ec2, vpc: str, subnets: list[str]) -> None:
    # moto records a subnet's route table association made by CloudFormation but leaves it out of
    # DescribeRouteTables; the translation test checks which table each subnet uses.
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    defaults = [r for table in tables for r in table["Routes"] if r["DestinationCidrBlock"] == "0.0.0.0/0"]
    [nat] = [r["NatGatewayId"] for r in defaults if "NatGatewayId" in r]
    [gateway] = [r["GatewayId"] for r in defaults if r.get("GatewayId", "").startswith("igw-")]
    [nat_gateway] = ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"]
    assert nat_gateway["SubnetId"] not in subnets, "the NAT gateway sits in the public subnet"
    [internet] = ec2.describe_internet_gateways(InternetGatewayIds=[gateway])["InternetGateways"]
    assert [a["VpcId"] for a in internet["Attachments"]] == [vpc]
    zones = {s["AvailabilityZone"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"]}
    assert len(zones) == 2


def test_a_job_sent_by_the_fetch_path_reaches_the_worker_or_after_the_last_delivery_the_dead_letter_queue(deployed):
    sqs, aws_lambda = deployed.client("sqs"), deployed.client("lambda")
    url, dlq_url = deployed.outputs["FetchQueueUrl"], deployed.outputs["DeadLetterQueueUrl"]
    # moto's event source mapping would run the worker in Docker on each send, taking a delivery;
    # this test plays the worker's part itself.
    for mapping in aws_lambda.list_event_source_mappings(FunctionName=deployed.physical["WorkerFunction"])[
        "EventSourceMappings"
    ]:
        aws_lambda.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    settings = config.load(environment(deployed.function("FetchApiFunction")))
    reset_settings()
    queue.send(settings, JOB_ID)
    deliveries = int(json.loads(deployed.queue_attributes(url)["RedrivePolicy"])["maxReceiveCount"])
    for delivery in range(1, deliveries + 1):
        # the worker failing: the message comes back at once (instead of after the visibility timeout)
        [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], VisibilityTimeout=0)["Messages"]
        assert queue.job_id_of(message["Body"]) == JOB_ID
        assert message["Attributes"]["MessageGroupId"] == queue.MESSAGE_GROUP
        assert int(message["Attributes"]["ApproximateReceiveCount"]) == delivery
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    [dead] = sqs.receive_message(QueueUrl=dlq_url)["Messages"]
    assert queue.job_id_of(dead["Body"]) == JOB_ID
