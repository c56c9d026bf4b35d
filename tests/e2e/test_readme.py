"""Every curl in the README that targets the local stack works against `make run UPSTREAM=sample`; env.json
works as the README's recipe for `sam local` says."""

import itertools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aggregator import config
from local.stack import Options
from tests.helpers import ROOT, TEMPLATE
from tests.running_stack import user_environment

pytestmark = pytest.mark.e2e
LOCAL = "http://127.0.0.1:3000"
CODE = (".py", ".json", ".yaml", ".toml")
CURL_LINE = re.compile(r"^(curl .*?)\s+# -> (\d{3})(.*)$")
HEADER_CLAIMS = {  # what a comment says of the answer's headers, and what the headers must then hold
    'Link: rel="next"': re.compile(r'^Link: <[^>]+>; rel="next"\r?$', re.M),
    "Location names its status": re.compile(r"^Location: /fetch/status/[0-9a-f-]{36}\r?$", re.M),
    "Allow: GET": re.compile(r"^Allow: GET\r?$", re.M),
}
# what a comment says of the answer's body, and what the body must then hold (`task`: the task's job id)
BODY_CLAIMS: dict[str, Callable[[Any, str | None], bool]] = {
    "the finished job": lambda job, _: (job["mode"], job["status"], job["inserted"]) == ("sync", "succeeded", 100),
    "user 1's posts": lambda posts, _: bool(posts) and {post["user_id"] for post in posts} == {1},
    "the first 100 posts, by id": lambda posts, _: [post["id"] for post in posts] == list(range(1, 101)),
    "posts 21-30": lambda posts, _: [post["id"] for post in posts] == list(range(21, 31)),
    "queued": lambda job, _: (job["mode"], job["status"]) == ("task", "queued"),
    "the job, queued -> running -> succeeded": lambda job, task: (
        job["job_id"] == task and job["status"] in ("queued", "running", "succeeded")
    ),
    "the newest job": lambda jobs, task: [job["job_id"] for job in jobs] == [task],
    "names the field": lambda error, _: (
        "user_id" in error["message"] and error["detail"][0]["loc"] == ["query", "user_id"]
    ),
    "an unknown parameter, named": lambda error, _: error["detail"][0]["loc"] == ["query", "userId"],
    "the OpenAPI document": lambda document, _: document["openapi"].startswith("3.1"),
}


def readme_curls() -> list[tuple[str, int, str]]:
    """Each curl of the README's walk-through: the command, its status and the rest of its comment."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("curl ") and LOCAL in line]
    return [(m.group(1), int(m.group(2)), m.group(3)) for m in map(CURL_LINE.match, lines) if m]


def claims_in(comment: str) -> tuple[list[str], str]:
    """The claims a comment makes, longest first, and whatever it says besides them."""
    found = []
    for claim in sorted([*HEADER_CLAIMS, *BODY_CLAIMS], key=len, reverse=True):
        if claim in comment:
            found.append(claim)
            comment = comment.replace(claim, "")
    return found, re.sub(r"^with\b|[\s:;,]", "", comment.strip(" :;,"))


def test_the_readme_walk_through_names_its_expected_answers():
    curls = readme_curls()
    assert len(curls) >= 10
    assert all(LOCAL in command for command, _, _ in curls)
    claims = [claim for _, _, comment in curls for claim in HEADER_CLAIMS if claim in comment]
    assert sorted(set(claims)) == sorted(HEADER_CLAIMS)  # each kind of claim is checked somewhere
    assert [comment for _, _, comment in curls if claims_in(comment)[1]] == []  # and every comment is a claim


def test_every_name_the_readme_gives_in_code_still_exists():
    """A sentence naming a function, field, event or setting that is gone (`upsert_posts`) is no longer true."""
    spans = re.findall(r"`([^`\n]+)`", (ROOT / "README.md").read_text())
    names = {name for span in spans for name in re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", span)}
    folders = ("layers", "functions", "local", "events", "bench")
    sources = [ROOT / "template.yaml", *(p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in CODE)]
    code = "\n".join(path.read_text(errors="replace") for path in sources) + " ".join(p.stem for p in sources)
    assert len(names) > 20
    assert sorted(name for name in names if name not in code) == []


def layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.search(r"## Layout\n\n```\n(.*?)```", text, flags=re.S).group(1).splitlines()


def test_the_layout_names_every_file_that_exists_and_each_module_of_the_package_and_the_local_stack():
    lines = layout_block()
    for line in lines:
        if not line.startswith(" "):
            path = line.split()[0]
            assert list(ROOT.glob(path.replace("<name>", "*"))), f"the Layout names {path}, which does not exist"
    for folder, first in (("layers/common/python/aggregator", "layers/common/python/aggregator/"), ("local", "local/")):
        start = next(n for n, line in enumerate(lines) if line.startswith(first))
        block = [line for line in itertools.takewhile(lambda line: line.startswith(" "), lines[start + 1 :])]
        block.append(lines[start].removeprefix(first))
        named = {name for line in block for name in re.findall(r"(?<![\w./])(\w+(?:\.py|/))(?=[\s:;,]|$)", line)}
        modules = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        packages = {p.name + "/" for p in (ROOT / folder).iterdir() if (p / "__init__.py").exists()}
        assert sorted((modules | packages) - named) == [], f"{folder}: the Layout does not name these"
        anywhere = {p.name + "/" if p.is_dir() else p.name for p in (ROOT / folder).rglob("*")}
        assert sorted(named - anywhere) == [], f"{folder}: the Layout names these, which do not exist"


class Reads(dict):
    """An empty environment that records the names read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, name, default=None):
        self.names.add(name)
        return super().get(name, default)


def readme_table(header: str) -> list[list[str]]:
    """The cells of each row of the README's table under `header`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines[lines.index(header) + 2 :])
    return [row.strip("|").strip().split(" | ") for row in rows]


def setting_names(cell: str) -> list[str]:
    return [n for span in re.findall(r"`([^`]+)`", cell) for n in re.findall(r"\b[A-Z][A-Z0-9_]*[A-Z0-9]\b", span)]


def test_the_configuration_table_is_what_config_reads_and_the_template_deploys():
    """Every setting in the table is read by config.py and declared in template.yaml, from the parameter in
    brackets, with the default the table gives; no setting config.py reads is missing from it."""
    declared = TEMPLATE.raw["Globals"]["Function"]["Environment"]["Variables"]
    listed = set()
    for setting, default, _ in readme_table("| variable | default | meaning |"):
        parameter = re.search(r"\(`(\w+)`\)", setting)
        for name in setting_names(setting.split("(")[0]):
            listed.add(name)
            value = declared[name]
            if parameter:
                assert value == {"Ref": parameter[1]}, name
                value = str(TEMPLATE.parameters[parameter[1]])
            value = value["Fn::If"][1] if isinstance(value, dict) and "Fn::If" in value else value
            shown = re.match(r"`([^`]*)`", default)
            assert not shown or shown[1] == value, f"{name}: the README says {shown[1]}, the template {value}"
        if not listed & set(setting_names(setting)):  # a parameter with no variable: the schedule
            assert parameter and parameter[1] in TEMPLATE.parameters
            assert default == f"`{TEMPLATE.parameters[parameter[1]]}`"
    env = Reads()
    config.load(env)
    assert listed == env.names - {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}  # Lambda sets that one


def test_the_local_stacks_variables_are_the_ones_it_reads_with_the_defaults_the_readme_gives():
    env = Reads()
    Options.from_env(env)
    listed = set()
    for variable, effect in readme_table("| variable | effect |"):
        names = setting_names(variable)
        listed.update(names)
        default = re.search(r"\((\d+)[;)]", effect)
        if default and len(names) == 1:  # the default is the value that changes nothing
            assert Options.from_env({names[0]: default[1]}) == Options.from_env({}), names[0]
    assert listed == env.names


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed; .ci/run installs it")
def test_every_readme_curl_answers_as_the_readme_says(start_stack):
    stack = start_stack(UPSTREAM="sample")
    job_id = None
    for command, expected, comment in readme_curls():
        if "<job_id>" in command:
            assert job_id, "the README shows a job status before any job"
            command = command.replace("<job_id>", job_id)
        command = command.replace(LOCAL, stack.url) + " -w '\\n%{http_code}'"
        output = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60).stdout
        answer, _, status = output.rpartition("\n")
        assert int(status) == expected, f"{command}\n{output}"
        headers, _, body = answer.partition("\n\n") if " -si " in command else ("", "", answer)
        for claim in claims_in(comment)[0]:
            if claim in HEADER_CLAIMS:
                assert HEADER_CLAIMS[claim].search(headers), f"{command}: no {claim}\n{output}"
            else:
                assert BODY_CLAIMS[claim](json.loads(body), job_id), f"{command}: not {claim}\n{output}"
        found = re.search(r'"job_id":"([0-9a-f-]{36})"', body)
        job_id = found.group(1) if found and "mode=task" in command else job_id
    assert job_id
    jobs = stack.json("GET", "/fetch/jobs")[1]
    assert [job["mode"] for job in jobs] == ["task", "sync"]  # bad input changed nothing


def env_json_here(stack, upstream, folder) -> str:
    """env.json with host.docker.internal's ports replaced by what they reach here: the stack's moto and
    the sample upstream."""
    settings = json.loads((ROOT / "env.json").read_text())["Parameters"]
    here = {
        name: value.replace("http://host.docker.internal:5005", stack.cloud_url).replace(
            "http://host.docker.internal:8001/posts", upstream.url
        )
        for name, value in settings.items()
    }
    path = folder / "env.json"
    path.write_text(json.dumps({"Parameters": here}))
    return str(path)


def invoke_with(env_vars: str, function: str, event: str) -> subprocess.CompletedProcess[str]:
    """One invocation in a process of its own, as sam local gives each request a container of its own."""
    command = [sys.executable, "-m", "local", "invoke", function, "-e", event, "--env-vars", env_vars]
    lock_beside = {"DB_PATH": str(Path(env_vars).with_name("invoke.db"))}  # not the repository's own .local file
    env = {**user_environment(), **lock_beside}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def answer_of(done: subprocess.CompletedProcess[str]) -> tuple[int, object]:
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return answer["statusCode"], json.loads(answer["body"])


def test_env_json_keeps_the_state_of_one_off_invocations_in_the_local_stacks_moto(start_stack, upstream, tmp_path):
    stack = start_stack(UPSTREAM_URL=upstream.url, STORE_BACKEND="dynamodb")
    env_vars = env_json_here(stack, upstream, tmp_path)
    assert json.loads((ROOT / "env.json").read_text())["Parameters"]["STORE_BACKEND"] == "dynamodb"
    status, job = answer_of(invoke_with(env_vars, "FetchApiFunction", "events/post_fetch_sync.json"))
    assert (status, job["inserted"]) == (200, 100)
    status, posts = answer_of(invoke_with(env_vars, "ReadApiFunction", "events/get_data.json"))
    assert (status, len(posts)) == (200, 100)  # read by another process: the data stayed in moto
    status, queued = answer_of(invoke_with(env_vars, "FetchApiFunction", "events/post_fetch_task.json"))
    assert status == 202
    done = stack.wait_for_job(queued["job_id"])  # the stack's worker took it from its queue
    assert (done["status"], done["unchanged"]) == ("succeeded", 100)


def test_env_json_against_a_stack_started_without_its_tables_answers_503_naming_the_table(
    start_stack, upstream, tmp_path
):
    stack = start_stack(UPSTREAM_URL=upstream.url, STORE_BACKEND="sqlite")
    done = invoke_with(env_json_here(stack, upstream, tmp_path), "ReadApiFunction", "events/get_data.json")
    status, answer = answer_of(done)
    assert status == 503
    assert answer["message"].startswith("the database is unavailable: ")
    assert answer["message"].endswith("(ResourceNotFoundException, PostsTable)")  # as Troubleshooting quotes it


def test_the_readme_lists_every_event_in_events():
    text = (ROOT / "README.md").read_text()
    listed = re.search(r"`events/` holds one event per route and trigger \(([^)]*)\)", text).group(1)
    assert sorted(re.findall(r"`(\w+)`", listed)) == sorted(p.stem for p in (ROOT / "events").glob("*.json"))
