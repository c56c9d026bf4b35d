"""The local stack as a user runs it: `python -m local` in a subprocess, driven over real HTTP.

Tests and benchmarks start it this way and stop it when they are done.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

import boto3

from local.template import ROOT
from tests.api_document import answer_problems

HARNESS_SETTINGS = (
    "UPSTREAM_URL",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_ATTEMPTS",
    "STORE_BACKEND",
    "DB_PATH",
    "POSTS_TABLE",
    "JOBS_TABLE",
    "QUEUE_URL",
    "AWS_ENDPOINT_URL",
)


def user_environment() -> dict[str, str]:
    """This process's environment without the settings the unit tests' fixtures put in it."""
    return {k: v for k, v in os.environ.items() if k not in HARNESS_SETTINGS}


class RunningStack:
    problems: ClassVar[
        list[str]
    ] = []  # every answer of the project's stacks that the OpenAPI document does not describe
    checked: ClassVar[int] = 0

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ()):
        self.env = env
        self.lines: list[str] = []
        self.checks_answers = "--template" not in args  # another template's API has another document
        self.process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "local", *args],
            cwd=ROOT,
            env={**user_environment(), "PORT": "0", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60):
            self.stop()
            raise RuntimeError("local stack did not start:\n" + "\n".join(self.lines))
        self.url = re.search(r"api\s+(http://\S+)", self.output).group(1)
        self.cloud_url = re.search(r"moto at (http://[^:]+:\d+)", self.output).group(1)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("Ready."):
                self._ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def store(self):
        """The store as the stack's functions see it, opened from this process: its SQLite file, or its
        tables (named by their logical ids) in its moto."""
        from aggregator.store.dynamodb import DynamoDbStore
        from aggregator.store.sqlite import SqliteStore

        if self.env.get("STORE_BACKEND") != "dynamodb":
            return SqliteStore(self.env["DB_PATH"])
        client = boto3.client(
            "dynamodb",
            endpoint_url=self.cloud_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        return DynamoDbStore("PostsTable", "JobsTable", client)

    def request(self, method: str, path: str, headers: dict | None = None):
        """(status, headers, body) of one request over a real socket; the answer is checked against the document."""
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            answer = error.code, error.headers, error.read()
        if self.checks_answers:
            self.check_answer(method, path, *answer)
        return answer

    @classmethod
    def check_answer(cls, method: str, path: str, status: int, headers, body: bytes) -> None:
        problems = answer_problems(method, path, status, dict(headers.items()), body)
        cls.problems += [f"{method} {path} -> {status}: {problem}" for problem in problems]
        cls.checked += 1

    def json(self, method: str, path: str):
        status, _, body = self.request(method, path)
        return status, json.loads(body)

    def wait_for_job(
        self, job_id: str, statuses=("succeeded", "failed"), timeout: float = 60.0, poll: float = 0.02
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.json("GET", f"/fetch/status/{job_id}")[1]
            if job["status"] in statuses:
                return job
            time.sleep(poll)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed within {timeout} s:\n{self.output}")
            time.sleep(0.02)

    def instance_pids(self) -> list[int]:
        """The processes of the stack's function instances (Linux: read from /proc)."""
        pid = self.process.pid
        tasks = Path(f"/proc/{pid}/task")
        return [int(child) for task in tasks.iterdir() for child in (task / "children").read_text().split()]

    def kill(self) -> list[int]:
        """`kill -9` the stack alone, as a crash would; its instances, in sessions of their own, run on.
        Returns their pids: the caller ends them."""
        orphans = self.instance_pids()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return orphans

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGABRT)  # faulthandler prints where it hung
                self.process.wait()
        return self.process.returncode
