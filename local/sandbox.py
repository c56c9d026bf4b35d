"""What one function's instances get, as Lambda gives it: a command, a code folder, an environment.

The environment is exactly the function's variables from the template, resolved (Globals merged,
parameters and references replaced, local overrides applied by the caller), plus the variables
Lambda itself sets. Nothing comes from the environment of the process that runs the local stack.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from local.template import Function

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLIENTS = ("awslambdaric", "python")
PURE_PYTHON_CLIENT = Path(__file__).resolve().parent / "lambda_client.py"


class SandboxError(ValueError):
    """A function that cannot be run as configured."""


@dataclass(frozen=True)
class Sandbox:
    name: str
    command: tuple[str, ...]
    code_dir: Path
    environment: dict[str, str]
    timeout: float
    memory_size: int

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"


def runtime_client(choice: str = "") -> str:
    """`awslambdaric` where it is installed (Linux wheels), else the pure-Python client; `choice` forces one."""
    if choice and choice not in CLIENTS:
        raise SandboxError(f"LOCAL_RUNTIME_CLIENT must be one of {', '.join(CLIENTS)}, got {choice!r}")
    if choice == "awslambdaric" and importlib.util.find_spec("awslambdaric") is None:
        raise SandboxError("LOCAL_RUNTIME_CLIENT=awslambdaric, but awslambdaric is not installed")
    return choice or ("awslambdaric" if importlib.util.find_spec("awslambdaric") else "python")


def sandbox(function: Function, variables: dict[str, str], client: str, credentials: dict[str, str]) -> Sandbox:
    """The sandbox of `function`, whose own resolved variables are `variables`."""
    if not function.runtime.startswith("python"):
        raise SandboxError(f"{function.name}: the local stack runs Python functions only, not {function.runtime}")
    if client == "awslambdaric":
        command: tuple[str, ...] = (sys.executable, "-m", "awslambdaric", function.handler)
    else:
        command = (sys.executable, str(PURE_PYTHON_CLIENT), function.handler)
    return Sandbox(
        name=function.name,
        command=command,
        code_dir=function.code_uri,
        environment={**variables, **_lambda_variables(function, credentials)},
        timeout=float(function.timeout),
        memory_size=function.memory_size,
    )


def _lambda_variables(function: Function, credentials: dict[str, str]) -> dict[str, str]:
    """The variables Lambda sets in every sandbox (its reserved ones, and the runtime's defaults)."""
    python_paths = [str(layer / "python") for layer in function.layers]
    variables = {
        "_HANDLER": function.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "LAMBDA_TASK_ROOT": str(function.code_uri),
        "LAMBDA_RUNTIME_DIR": str(Path(sys.executable).parent),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "PYTHONPATH": os.pathsep.join(python_paths),  # /opt/python in Lambda: where layers put packages
        **credentials,
    }
    if sys.platform == "win32":  # Python cannot open a socket on Windows without it
        variables["SYSTEMROOT"] = os.environ.get("SYSTEMROOT", r"C:\Windows")
    return variables
