"""What `sam deploy` creates, read from template.yaml: network, storage, queue, API, least privilege,
alarms, logs and outputs."""

import json

from tests.conftest import TEMPLATE

RESOURCES = TEMPLATE.raw["Resources"]
EFS_FUNCTIONS = ("ReadApiFunction", "FetchApiFunction", "WorkerFunction", "SchedulerFunction")


def props(name):
    return RESOURCES[name]["Properties"]


def test_the_network_is_created_unless_an_existing_one_is_given():
    assert TEMPLATE.raw["Conditions"]["CreateNetwork"] == {"Fn::Equals": [{"Ref": "ExistingVpcId"}, ""]}
    for name in ("Vpc", "PrivateSubnetA", "PrivateSubnetB", "NatGateway", "InternetGateway", "PrivateRoute"):
        assert RESOURCES[name]["Condition"] == "CreateNetwork"
    zones = {json.dumps(props(s)["AvailabilityZone"]) for s in ("PrivateSubnetA", "PrivateSubnetB")}
    assert len(zones) == 2
    for name in EFS_FUNCTIONS:
        subnets = props(name)["VpcConfig"]["SubnetIds"]
        assert subnets[0] == {"Fn::If": ["CreateNetwork", {"Ref": "PrivateSubnetA"}, {"Ref": "ExistingSubnetA"}]}
        assert subnets[1] == {"Fn::If": ["CreateNetwork", {"Ref": "PrivateSubnetB"}, {"Ref": "ExistingSubnetB"}]}


def test_nfs_flows_only_between_the_functions_and_efs():
    egress = props("FunctionSecurityGroup")["SecurityGroupEgress"]
    assert {(rule["FromPort"], rule.get("DestinationSecurityGroupId", {}).get("Ref")) for rule in egress} == {
        (443, None),
        (2049, "EfsSecurityGroup"),
    }
    ingress = props("EfsIngressFromFunctions")
    assert (ingress["FromPort"], ingress["ToPort"]) == (2049, 2049)
    assert ingress["SourceSecurityGroupId"]["Fn::If"][1] == {"Ref": "FunctionSecurityGroup"}
    assert "SecurityGroupIngress" not in props("EfsSecurityGroup")


def test_only_functions_that_need_efs_or_the_internet_are_in_the_vpc():
    assert "VpcConfig" not in props("DocsFunction")
    for name in EFS_FUNCTIONS:
        assert props(name)["VpcConfig"]["SecurityGroupIds"] == [
            {
                "Fn::If": [
                    "CreateFunctionSecurityGroup",
                    {"Ref": "FunctionSecurityGroup"},
                    {"Ref": "ExistingFunctionSecurityGroupId"},
                ]
            }
        ]
    assert RESOURCES["FunctionSecurityGroup"]["Condition"] == "CreateFunctionSecurityGroup"


def test_efs_is_encrypted_backed_up_and_reached_through_one_access_point():
    assert props("FileSystem")["Encrypted"] is True
    assert props("FileSystem")["BackupPolicy"] == {"Status": "ENABLED"}
    assert {props(m)["SubnetId"]["Fn::If"][1]["Ref"] for m in ("MountTargetA", "MountTargetB")} == {
        "PrivateSubnetA",
        "PrivateSubnetB",
    }
    access_point = props("AccessPoint")
    assert access_point["PosixUser"] == {"Uid": "1000", "Gid": "1000"}
    assert access_point["RootDirectory"]["CreationInfo"]["OwnerUid"] == "1000"
    for name in EFS_FUNCTIONS:
        assert props(name)["FileSystemConfigs"][0]["Arn"] == {"Fn::GetAtt": ["AccessPoint", "Arn"]}


def test_the_queue_outlives_the_worker_and_its_dlq_outlives_the_queue():
    queue, dlq = props("FetchQueue"), props("FetchDeadLetterQueue")
    assert queue["VisibilityTimeout"] >= 6 * TEMPLATE.functions["WorkerFunction"].timeout
    assert TEMPLATE.parameters["MaxReceiveCount"] <= 5
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert queue["SqsManagedSseEnabled"] and dlq["SqsManagedSseEnabled"]


def policies(name):
    return {key: value for policy in props(name).get("Policies", []) for key, value in policy.items()}


def test_each_function_may_do_only_what_it_does():
    senders = {name for name in TEMPLATE.functions if "SQSSendMessagePolicy" in policies(name)}
    assert senders == {"FetchApiFunction", "SchedulerFunction"}
    for name in senders:
        assert policies(name)["SQSSendMessagePolicy"] == {"QueueName": {"Fn::GetAtt": ["FetchQueue", "QueueName"]}}
    for name in EFS_FUNCTIONS:
        assert policies(name)["EFSWriteAccessPolicy"] == {
            "FileSystem": {"Ref": "FileSystem"},
            "AccessPoint": {"Ref": "AccessPoint"},
        }
    assert policies("DocsFunction") == {}
    assert '"Resource": "*"' not in json.dumps(RESOURCES)


def test_the_api_throttles_its_stage_logs_access_and_meters_post_fetch():
    api = props("Api")
    [setting] = api["MethodSettings"]
    assert setting["ThrottlingRateLimit"] > 0 and setting["ThrottlingBurstLimit"] > 0
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert json.loads(api["AccessLogSetting"]["Format"].replace("\n", " "))["requestId"] == "$context.requestId"
    assert api["Auth"]["UsagePlan"]["Quota"]["Period"] == "DAY"


def test_every_function_logs_to_a_group_with_retention():
    for name in TEMPLATE.functions:
        group = props(name)["LoggingConfig"]["LogGroup"]["Ref"]
        assert props(group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert TEMPLATE.raw["Globals"]["Function"]["Tracing"] == "Active"


def test_the_outputs_say_how_to_reach_everything():
    outputs = TEMPLATE.raw["Outputs"]
    assert {"ApiUrl", "DocsUrl", "OpenApiUrl", "ApiKeyId", "FetchQueueUrl", "DeadLetterQueueUrl"} <= set(outputs)
    assert outputs["ApiKeyId"]["Value"] == {"Ref": "ApiApiKey"}
    assert "get-api-key --include-value" in outputs["ApiKeyId"]["Description"]


def test_every_checkov_skip_says_why():
    for name, resource in RESOURCES.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV_") and len(skip["comment"]) > 40, name
