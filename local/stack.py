"""The whole stack in one process: the API, moto as the cloud, the queue poller and the schedule.

Everything comes from template.yaml; environment variables override the template's values the
way `sam local --env-vars` does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aggregator import config
from local import template as tpl
from local.api_server import ApiServer
from local.cloud import create_queues
from local.poller import QueuePoller
from local.runtime import FunctionRuntime
from local.sample_upstream import SampleUpstream
from local.scheduler import Scheduler

DEFAULT_DB = tpl.ROOT / ".local" / "aggregator.db"
LOCAL_VISIBILITY_TIMEOUT = 10
OVERRIDABLE = (
    "UPSTREAM_URL",
    "UPSTREAM_TIMEOUT",
    "UPSTREAM_ATTEMPTS",
    "DB_PATH",
    "MAX_RECEIVE_COUNT",
    "MIN_FETCH_INTERVAL",
)


def log(source: str, message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {source:<9} {message}", flush=True)


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 3000
    upstream: str = ""  # "sample", a URL, or "" for the template's
    db_path: str = str(DEFAULT_DB)
    schedule_rate: str = ""
    visibility_timeout: int = LOCAL_VISIBILITY_TIMEOUT
    sample_posts: int = 100
    cloud_port: int = 0  # 0: any free port
    api_key: str = ""  # when set, routes whose template event requires an API key require this one

    @classmethod
    def from_env(cls, env=os.environ, upstream: str | None = None) -> Options:
        return cls(
            port=_whole(env, "PORT", 3000),
            upstream=upstream or env.get("UPSTREAM") or env.get("UPSTREAM_URL", ""),
            db_path=str(Path(env.get("DB_PATH") or DEFAULT_DB).resolve()),
            schedule_rate=env.get("SCHEDULE_RATE", ""),
            visibility_timeout=_whole(env, "LOCAL_VISIBILITY_TIMEOUT", LOCAL_VISIBILITY_TIMEOUT),
            cloud_port=_whole(env, "MOTO_PORT", 0),
            api_key=env.get("API_KEY", ""),
        )


def _whole(env, name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"{name} must be a whole number from 0 to 65535, got {raw!r}")
    return int(raw)


class LocalStack:
    def __init__(self, options: Options, template: tpl.Template | None = None):
        self.options = options
        self.template = template or tpl.load()
        self.parts: list = []

    def start(self) -> LocalStack:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
        self.upstream_url = self._upstream()
        self.moto = ThreadedMotoServer(ip_address=self.options.host, port=self.options.cloud_port, verbose=False)
        self.moto.start()
        self.parts.append(self.moto)
        self.cloud_url = "http://{}:{}".format(*self.moto.get_host_and_port())
        os.environ.update(self._process_env())
        import boto3

        self.sqs = boto3.client("sqs")
        refs = {**self.template.parameters, "AWS::Region": "us-east-1", "AWS::StackName": "local"}
        self.queues = create_queues(self.sqs, self.template, refs, self.options.visibility_timeout)
        os.environ.update(self._function_env(refs))
        config.load()  # a malformed setting stops the stack now, not at the first request
        self.runtimes = self._runtimes()
        self._start_api()
        self._start_pollers()
        self._start_schedules(refs)
        return self

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()
        self.parts.clear()

    def _upstream(self) -> str:
        if self.options.upstream == "sample":
            sample = SampleUpstream(self.options.sample_posts).start()
            self.parts.append(sample)
            return sample.url
        return self.options.upstream or self.template.parameters["UpstreamUrl"]

    def _process_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.cloud_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        }

    def _function_env(self, refs: dict) -> dict[str, str]:
        """The functions' environment from the template, with the local stack's and the user's overrides.

        All functions run in this one process, so they must agree on every variable.
        """
        overrides = {name: os.environ[name] for name in OVERRIDABLE if os.environ.get(name)}
        overrides |= {"UPSTREAM_URL": self.upstream_url, "DB_PATH": self.options.db_path}
        overrides |= self._process_env()
        merged: dict[str, str] = {}
        for function in self.template.functions.values():
            for name, value in tpl.resolve(function.environment, refs).items():
                value = overrides.get(name, str(value))
                if merged.setdefault(name, value) != value:
                    raise ValueError(f"functions disagree on {name}; the local stack runs them in one process")
        return merged

    def _runtimes(self) -> dict[str, FunctionRuntime]:
        api_functions = {route.function for route in self.template.routes}
        shared = threading.Lock()  # Powertools' resolvers share the current event across functions
        return {
            name: FunctionRuntime(function, shared if name in api_functions else None)
            for name, function in self.template.functions.items()
        }

    def _start_api(self) -> None:
        def report(method, target, status, seconds, function):
            log("api", f"{method} {target} -> {status} in {seconds * 1000:.1f} ms ({function})")

        address = (self.options.host, self.options.port)
        self.api = ApiServer(address, self.template.routes, self.runtimes, report, self.options.api_key)
        self.api.start_in_thread()
        self.parts.append(self.api)

    def _start_pollers(self) -> None:
        from aggregator.store import open_store

        def report(messages, failed, seconds):
            store = open_store(self.options.db_path)
            for message in messages:
                outcome = "failed, back to the queue" if message["MessageId"] in failed else "done"
                job = _job_summary(store, message["Body"])
                count = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
                log("worker", f"delivery {count}: {job} -> {outcome} ({seconds * 1000:.0f} ms batch)")

        for source in self.template.sqs_sources:
            runtime = self.runtimes[source.function]
            poller = QueuePoller(self.sqs, self.queues[source.queue], runtime, source.batch_size, report)
            self.parts.append(poller.start())

    def _start_schedules(self, refs: dict) -> None:
        def report(result, error, seconds):
            log("schedule", f"fired: {error or result} ({seconds * 1000:.0f} ms)")

        for schedule in self.template.schedules:
            expression = self.options.schedule_rate or tpl.resolve(schedule.expression, refs)
            self.schedule = Scheduler(self.runtimes[schedule.function], expression, report)
            self.parts.append(self.schedule.start())

    def describe(self) -> str:
        keyed = sorted({f"{r.method} {r.path}" for r in self.template.routes if r.api_key_required})
        rows = [
            ("api", f"{self.api.url}   (docs: {self.api.url}/docs, /redoc, /openapi.json)"),
            (
                "cloud",
                f"moto at {self.cloud_url}: " + ", ".join(q["url"].rsplit("/", 1)[-1] for q in self.queues.values()),
            ),
            ("upstream", self.upstream_url + ("   (sample posts)" if self.options.upstream == "sample" else "")),
            ("database", self.options.db_path),
            (
                "api key",
                "required in x-api-key for " + ", ".join(keyed)
                if self.options.api_key
                else "not required (set API_KEY)",
            ),
        ]
        for source in self.template.sqs_sources:
            in_template = self.template.queues[source.queue].get("VisibilityTimeout", 30)
            rows.append(
                (
                    "worker",
                    f"{source.function} polls {source.queue}, batch size {source.batch_size}; visibility timeout "
                    f"{self.options.visibility_timeout} s locally ({in_template} s in the template)",
                )
            )
        for schedule in self.template.schedules:
            rows.append(("schedule", f"{schedule.function} at {self.schedule.expression}"))
        return "\n".join(f"  {name:<9} {text}" for name, text in rows)


def _job_summary(store, body: str) -> str:
    from aggregator.queue import BadMessage, job_id_of

    try:
        job = store.get_job(job_id_of(body))
    except BadMessage as exc:
        return f"bad message ({exc})"
    if job is None:
        return "unknown job"
    counts = ", ".join(f"{k} {job[k]}" for k in ("fetched", "inserted", "updated", "unchanged", "rejected"))
    return f"job {job['job_id']} {job['status']} ({counts}){': ' + job['error'] if job['error'] else ''}"
