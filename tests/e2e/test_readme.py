"""Every curl in the README that targets the local stack works against `make run UPSTREAM=sample`."""

import re
import shutil
import subprocess

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e
LOCAL = "http://127.0.0.1:3000"
CURL_LINE = re.compile(r"^(curl .*?)\s+# -> (\d{3})")


def readme_curls() -> list[tuple[str, int]]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("curl ") and LOCAL in line]
    return [(m.group(1), int(m.group(2))) for m in map(CURL_LINE.match, lines) if m]


def test_the_readme_walk_through_names_its_expected_answers():
    curls = readme_curls()
    assert len(curls) >= 10
    assert all(LOCAL in command for command, _ in curls)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed; .ci/run installs it")
def test_every_readme_curl_answers_as_the_readme_says(start_stack):
    stack = start_stack(UPSTREAM="sample")
    job_id = None
    for command, expected in readme_curls():
        if "<job_id>" in command:
            assert job_id, "the README shows a job status before any job"
            command = command.replace("<job_id>", job_id)
        command = command.replace(LOCAL, stack.url) + " -w '\\n%{http_code}'"
        output = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60).stdout
        body, _, status = output.rpartition("\n")
        assert int(status) == expected, f"{command}\n{output}"
        found = re.search(r'"job_id":"([0-9a-f-]{36})"', body)
        job_id = found.group(1) if found and "mode=task" in command else job_id
    assert job_id
