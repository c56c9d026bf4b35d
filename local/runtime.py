"""A function's handler called in this process, with a context like Lambda's: for tests and benchmarks
that measure the handler alone. The local stack runs functions in processes of their own (instance.py)."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    timeout: int = 30
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout - (time.monotonic() - self.started)) * 1000))


def load_handler(code_uri: Path, handler: str, name: str) -> Callable[[Any, Any], Any]:
    """Import `module.function` from `code_uri` as a module of its own."""
    module_name, _, function_name = handler.rpartition(".")
    spec = importlib.util.spec_from_file_location(f"lambda_{name}", code_uri / f"{module_name}.py")
    assert spec is not None and spec.loader is not None, f"no module {module_name} in {code_uri}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    handler_function: Callable[[Any, Any], Any] = getattr(module, function_name)
    return handler_function
