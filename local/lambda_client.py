"""A pure-Python client of Lambda's Runtime API, for machines where `awslambdaric` has no wheel.

It does what AWS's runtime interface client does, with the standard library only: import the
handler (reporting a failure to /runtime/init/error), then loop on /invocation/next, call the
handler with the event and a context, and post its result to /response or its exception to /error.
Run as `python lambda_client.py module.function` in the function's code folder, with
AWS_LAMBDA_RUNTIME_API set. It must not import anything from the local stack: it runs in the
function's own process, which sees only the function's code and layers.
"""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

API_VERSION = "2018-06-01"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"

Handler = Callable[[Any, "LambdaContext"], Any]


class LambdaContext:
    """The context object the managed runtime passes to a handler."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = None
        self.identity = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


class RuntimeApi:
    def __init__(self, address: str):
        self.connection = http.client.HTTPConnection(address)

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.connection.request(method, f"/{API_VERSION}/runtime/{path}", body=body, headers=headers or {})
        response = self.connection.getresponse()
        return response.status, response.headers, response.read()


def error_object(exc: BaseException) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(frames),
    }


def log_error(error: dict[str, Any]) -> None:
    """The error record the managed runtime writes: one log event, lines joined by carriage returns."""
    lines = [f"[ERROR] {error['errorType']}: {error['errorMessage']}", "Traceback (most recent call last):"]
    lines += [line for frame in error["stackTrace"] for line in frame.rstrip("\n").splitlines()]
    sys.stdout.write("\r".join(lines) + "\n")


def load_handler(name: str) -> Handler:
    module_name, _, function_name = name.rpartition(".")
    if not module_name:
        raise ValueError(f"Bad handler '{name}': not enough values to unpack (expected 2, got 1)")
    module = importlib.import_module(module_name.replace("/", "."))
    return getattr(module, function_name)  # type: ignore[no-any-return]


def initialise(api: RuntimeApi, name: str) -> Handler:
    try:
        return load_handler(name)
    except Exception as exc:
        error = error_object(exc)
        if isinstance(exc, ImportError):
            error |= {"errorType": "Runtime.ImportModuleError", "errorMessage": f"Unable to import module: {exc}"}
        log_error(error)
        api.call("POST", "init/error", json.dumps(error).encode(), {ERROR_TYPE_HEADER: error["errorType"]})
        sys.exit(1)


def serve(api: RuntimeApi, handler: Handler) -> None:
    while True:
        _, headers, body = api.call("GET", "invocation/next")
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("Lambda-Runtime-Trace-Id", "")
        context = LambdaContext(
            request_id, int(headers["Lambda-Runtime-Deadline-Ms"]), headers["Lambda-Runtime-Invoked-Function-Arn"]
        )
        try:
            result = json.dumps(handler(json.loads(body), context), ensure_ascii=False).encode()
        except Exception as exc:
            error = error_object(exc) | {"requestId": request_id}
            log_error(error)
            api.call(
                "POST",
                f"invocation/{request_id}/error",
                json.dumps(error).encode(),
                {ERROR_TYPE_HEADER: error["errorType"]},
            )
        else:
            api.call("POST", f"invocation/{request_id}/response", result, {"Content-Type": "application/json"})


def main(argv: list[str]) -> None:
    sys.path[0] = os.getcwd()  # the task root comes first, as /var/task does in Lambda
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(format="[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    api = RuntimeApi(os.environ["AWS_LAMBDA_RUNTIME_API"])
    serve(api, initialise(api, argv[1]))


if __name__ == "__main__":
    main(sys.argv)
