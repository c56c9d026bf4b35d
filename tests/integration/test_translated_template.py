"""What CloudFormation receives: template.yaml translated by the SAM translator, offline, for every
supported parameter set. cfn-lint and `sam validate` read the template before translation and accept
a Ref to a name that merely looks like one SAM generates; these tests read what SAM generates."""

import pytest

from tests.cloudformation import EXISTING_NETWORK, PARAMETER_SETS, Stack, translate


@pytest.fixture(params=list(PARAMETER_SETS))
def stack(request) -> Stack:
    return Stack(PARAMETER_SETS[request.param])


def test_every_reference_resolves(stack):
    assert stack.problems == []


def test_a_reference_to_a_name_sam_does_not_generate_is_caught():
    template = translate(EXISTING_NETWORK)
    template["Outputs"]["ApiKeyId"]["Value"] = {"Ref": "ApiKey"}  # SAM generates ApiApiKey
    template["Resources"]["Api"]["DependsOn"] = "Vpc"
    problems = Stack(EXISTING_NETWORK, template).problems
    assert any(p.startswith("Ref ApiKey") for p in problems)
    assert any("DependsOn Vpc, whose condition CreateNetwork is false" in p for p in problems)
