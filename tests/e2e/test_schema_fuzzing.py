"""Property-based tests from the OpenAPI document, against the local stack: no 5xx, and every answer as documented."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
KEY = "schema-fuzzing-key"


def test_every_operation_holds_to_its_documented_schema(start_stack, tmp_path):
    stack = start_stack(UPSTREAM="sample", API_KEY=KEY)
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{stack.url}/openapi.json",
        "--checks=all",
        "--max-examples=25",
        "--seed=1",
        "--no-color",
        f"--header=x-api-key: {KEY}",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Tested: 4" in result.stdout  # /data, /fetch, /fetch/status/{job_id} and /fetch/jobs
