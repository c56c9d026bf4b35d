"""`python -m local invoke FUNCTION -e EVENT [--env-vars FILE]`: one invocation through the same runtime
as the local stack, with the template's environment, as `sam local invoke` does without Docker.

The function's answer goes to stdout and its logs to stderr; the exit code is 1 when it fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from local.console import Console
from local.deployment import DeploymentError
from local.stack import LocalStack, Options


def invoke(options: Options, function: str, event_file: Path, env_vars: Path | None) -> int:
    payload = _json_file(event_file, "event")
    stack = LocalStack(options, Console(verbose=True, stream=sys.stderr))
    if function not in stack.template.functions:
        raise DeploymentError(f"no function {function!r} in the template; it has {', '.join(stack.template.functions)}")
    if env_vars is not None:
        stack.function_overrides = _env_vars(_json_file(env_vars, "--env-vars"))
    try:  # a deployment refused by its plan stops too: the sample upstream and the database's lock
        stack.deploy()
        result = stack.deployment.pools[function].invoke(json.dumps(payload).encode())
    finally:
        stack.stop()
    answer = result.response.decode() if result.response is not None else json.dumps(result.error)
    sys.stdout.write(answer + "\n")
    return 0 if result.ok else 1


def _json_file(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"cannot read the {what} file {path}: {exc}") from None


def _env_vars(document: object) -> dict[str, dict[str, str]]:
    """sam local's --env-vars shape: {"Parameters": {NAME: value}} for all, {"Function": {NAME: value}} for one."""
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise DeploymentError('--env-vars must be {"Parameters": {...}} and/or {"FunctionName": {...}}')
    return {scope: {str(k): str(v) for k, v in values.items()} for scope, values in document.items()}
