"""The whole stack on this machine: the API, moto as the cloud, the queue's event source mapping, the
schedule, each function in processes of its own; all of it from template.yaml.

Environment variables override the template's values the way `sam local --env-vars` does.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.config import DB_MARKER_SUFFIX
from aggregator.scrub import scrub
from local import template as tpl
from local.api_server import OUTCOME_HEADER, Answer, ApiServer
from local.console import Console, json_record
from local.deployment import Deployment, DeploymentError, DeployOptions, overrides_from
from local.instance import InvokeResult
from local.poller import Delivery, QueuePoller
from local.pool import FunctionPool
from local.sample_upstream import SampleUpstream
from local.scheduler import Scheduler, rate_seconds

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.models import Job
    from aggregator.store import Store

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_DB = tpl.ROOT / ".local" / "aggregator.db"
RETRY_DELAY = 10  # seconds before a failed delivery comes back locally (the template's visibility timeout: 360)
IDLE_SECONDS = 300  # an instance idle this long is stopped, as Lambda reclaims idle sandboxes
REAP_EVERY_SECONDS = 1.0
WATCHED = ("functions", "layers")
STOPPED_MID_SYNC = "abandoned: the local stack stopped while it ran"


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 3000
    upstream: str = ""  # "sample", a URL, or "" for the template's
    db_path: str = str(DEFAULT_DB)
    schedule_rate: str = ""
    retry_delay: int = RETRY_DELAY
    sample_posts: int = 100
    cloud_port: int = 0  # 0: any free port
    api_key: str = ""  # when set, routes whose template event requires an API key require this one
    runtime_client: str = ""
    concurrency: int = 4
    idle_seconds: float = IDLE_SECONDS
    verbose: bool = False
    reload: bool = True
    template: Path = tpl.TEMPLATE
    overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **given: Any) -> Options:
        options = cls(
            port=_whole(env, "PORT", 3000, high=65535),
            upstream=env.get("UPSTREAM") or env.get("UPSTREAM_URL", ""),
            db_path=str(Path(env.get("DB_PATH") or DEFAULT_DB).resolve()),
            schedule_rate=env.get("SCHEDULE_RATE", ""),
            retry_delay=_whole(env, "LOCAL_VISIBILITY_TIMEOUT", RETRY_DELAY, high=43200),
            cloud_port=_whole(env, "MOTO_PORT", 0, high=65535),
            api_key=env.get("API_KEY", ""),
            runtime_client=env.get("LOCAL_RUNTIME_CLIENT", ""),
            concurrency=_whole(env, "LOCAL_CONCURRENCY", 4, low=1, high=64),
            idle_seconds=_whole(env, "LOCAL_IDLE_SECONDS", IDLE_SECONDS, low=1, high=86400),
            overrides=overrides_from(env),
        )
        for name, value in given.items():
            if value not in (None, ""):
                setattr(options, name, value)
        return options


def _whole(env: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


class DatabaseLock:
    """One local stack, or one invoke, per database file at a time: each settles the jobs it finds as its
    own, so two would fail each other's. The lock is on a file beside the database, released at exit."""

    def __init__(self, db_path: str):
        self._file = None
        if fcntl is None:  # Windows: no advisory locks; the user keeps to one stack per file
            return
        lock = Path(f"{db_path}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        self._file = lock.open("a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DeploymentError(
                f"{db_path} is in use by another local stack or invoke: stop it, or set DB_PATH to another file"
            ) from None

    def stop(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None


class LocalStack:
    def __init__(self, options: Options, console: Console | None = None):
        self.options = options
        self.console = console or Console(verbose=options.verbose)
        self.template = tpl.load(options.template)
        self.parts: list[Any] = []
        self.schedulers: list[Scheduler] = []
        self.upstream_url = ""
        self.function_overrides: dict[str, dict[str, str]] = {}  # an --env-vars file
        self._tables: Store | None = None
        self._stopping = threading.Event()

    def start(self) -> LocalStack:
        self.plan()
        schedules = self._schedules()
        self._launch()
        self.reconcile_jobs()
        self._start_api()
        self._start_pollers()
        self._start_schedules(schedules)
        self._start_housekeeping()
        return self

    def deploy(self) -> Deployment:
        """The template in the emulated cloud, with each function's instances ready to start."""
        self.plan()
        return self._launch()

    def plan(self) -> None:
        """The deployment as configured, each function's settings checked before anything starts."""
        self.parts.append(DatabaseLock(self.options.db_path))
        self.upstream_url = self._upstream()
        overrides = self.options.overrides | {
            "UPSTREAM_URL": self.upstream_url,
            "DB_PATH": self.options.db_path,
            "QUEUE_VISIBILITY_TIMEOUT": str(self._redelivery_seconds()),
        }
        deploy = DeployOptions(
            overrides=overrides,
            function_overrides=self.function_overrides,
            runtime_client=self.options.runtime_client,
            host=self.options.host,
            cloud_port=self.options.cloud_port,
            concurrency=self.options.concurrency,
        )
        self.deployment = Deployment(self.template, deploy, self.console.function_output)
        self._check_settings()

    def _launch(self) -> Deployment:
        self.parts.append(self.deployment)
        return self.deployment.start()

    def _redelivery_seconds(self) -> int:
        """The longest from one local delivery of a message to the next: the worker may run to its timeout,
        then a failed message comes back `retry_delay` seconds later (not after the queue's own timeout)."""
        timeouts = [self.template.functions[source.function].timeout for source in self.template.sqs_sources]
        return max(timeouts, default=0) + self.options.retry_delay

    def reconcile_jobs(self) -> None:
        """Settle the jobs the last run left in progress. Its queue lived in memory, so a task or scheduled
        job's message is gone: the job is sent again, under a new lease. A sync job ran in an invocation
        that died with that run: it is failed."""
        from aggregator.config import load

        for source in self.template.sqs_sources:
            worker = self.deployment.pools[source.function]
            if "STORE_BACKEND" not in worker.sandbox.environment:
                continue  # a worker that declares no store keeps no jobs (another template's, such as a test's)
            settings = load(worker.sandbox.environment)
            if self._new_store(settings):
                continue  # nothing to settle, and the store's modules are not imported: a fifth of a second
            from aggregator.store import StoreUnavailable

            try:
                self._reconcile(worker, settings)
            except StoreUnavailable as exc:
                raise DeploymentError(f"{self.options.db_path}: {exc}") from None

    def _new_store(self, settings: Settings) -> bool:
        """Tables this deployment has just created, or a SQLite file never created (nor its marker): no jobs."""
        if settings.store_backend == "dynamodb":
            return settings.jobs_table in self.deployment.tables
        return not any(Path(settings.db_path + suffix).exists() for suffix in ("", DB_MARKER_SUFFIX))

    def _reconcile(self, worker: FunctionPool, settings: Settings) -> None:
        from aggregator import jobs, queue
        from aggregator.models import FetchMode

        store = self.store(worker)
        for job in store.list_jobs():
            if job.status.finished:
                continue
            was = f"job {job.job_id} ({job.mode}) was {job.status} when the last run stopped"
            if job.mode == FetchMode.SYNC:
                store.fail_job(job.job_id, STOPPED_MID_SYNC)
                self.console.line("jobs", f"{was}: failed")
            elif store.reissue_lease(
                job.job_id, lease_seconds=jobs.queued_lease(settings, deliveries_left=settings.max_receive_count)
            ):
                queue.send(settings, job.job_id, self.deployment.sqs)
                self.console.line("jobs", f"{was}: sent to the queue again")

    def stop(self, *, wait_seconds: float = 0.0) -> None:
        """Stop taking work, let invocations in flight finish within `wait_seconds`, then stop every part."""
        self._stopping.set()
        for part in reversed(self.parts):
            if isinstance(part, ApiServer | QueuePoller | Scheduler):
                part.stop()
        if wait_seconds and hasattr(self, "deployment"):
            for pool in self.deployment.pools.values():
                pool.wait_idle(wait_seconds)
        for part in reversed(self.parts):
            if not isinstance(part, ApiServer | QueuePoller | Scheduler):
                part.stop()
        self.parts.clear()

    def busy(self) -> int:
        return sum(pool.busy() for pool in self.deployment.pools.values())

    def _upstream(self) -> str:
        if self.options.upstream == "sample":
            sample = SampleUpstream(self.options.sample_posts).start()
            self.parts.append(sample)
            return sample.url
        return self.options.upstream or str(self.template.parameters.get("UpstreamUrl") or "")

    def _check_settings(self) -> None:
        """A malformed setting stops the stack now, naming the function, not at its first request."""
        from aggregator import config

        for name, function in self.template.functions.items():
            variables = self.deployment.planned_sandbox(function).environment  # with Lambda's own, such as memory
            try:
                config.load(variables)
            except config.ConfigError as exc:
                raise DeploymentError(f"{name}: {exc}") from None
            level = variables.get("POWERTOOLS_LOG_LEVEL", "INFO")
            if level.upper() not in logging.getLevelNamesMapping():  # Powertools' Logger fails at import on it
                levels = ", ".join(logging.getLevelNamesMapping())
                raise DeploymentError(f"{name}: POWERTOOLS_LOG_LEVEL must be a log level ({levels}), got {level!r}")

    def _start_api(self) -> None:
        def report(method: str, target: str, answer: Answer, seconds: float) -> None:
            self.console.line("api", request_line(method, target, answer, seconds))

        address = (self.options.host, self.options.port)
        try:
            self.api = ApiServer(
                address, self.template.routes, self.deployment.pools, report, api_key=self.options.api_key
            )
        except OSError as exc:
            port = self.options.port
            raise DeploymentError(
                f"PORT {port} cannot be used: {exc.strerror}; set another, such as PORT={port + 1}"
            ) from None
        self.api.start_in_thread()
        self.parts.append(self.api)

    def _start_pollers(self) -> None:
        for source in self.template.sqs_sources:
            pool = self.deployment.pools[source.function]
            limit = self.max_receive_count(source.queue)

            poller = QueuePoller(
                self.deployment.sqs,
                self.deployment.queues[source.queue],
                pool,
                batch_size=source.batch_size,
                concurrency=source.maximum_concurrency or pool.limit,
                retry_delay=self.options.retry_delay,
                report=functools.partial(self._report_deliveries, limit=limit, pool=pool),
            )
            self.parts.append(poller.start())

    def max_receive_count(self, queue: str) -> int | None:
        redrive = self.template.queues[queue].get("RedrivePolicy")
        return int(tpl.resolve(redrive["maxReceiveCount"], self.deployment.refs)) if redrive else None

    def _report_deliveries(
        self, deliveries: list[Delivery], result: InvokeResult | None, *, limit: int | None, pool: FunctionPool
    ) -> None:
        for delivery in deliveries:
            self.console.line("worker", self._delivery_line(delivery, result, limit, pool))

    def _delivery_line(
        self, delivery: Delivery, result: InvokeResult | None, limit: int | None, pool: FunctionPool
    ) -> str:
        job_id = _job_id(delivery.message["Body"])
        label = f"job {job_id}" if job_id else f"message {delivery.message['MessageId']}"
        attempt = f"attempt {delivery.attempt}" + (f"/{limit}" if limit else "")
        job = self.store(pool).get_job(job_id) if job_id else None
        if not delivery.failed:
            return f"{label} {attempt}: {_job_outcome(job) if job_id else 'done'}"
        reason = (job.error if job else None) or _failure_reason(result, job_id or delivery.message["MessageId"])
        return f"{label} {attempt}: failed: {reason}{self._fate(delivery, limit)}"

    def _fate(self, delivery: Delivery, limit: int | None) -> str:
        if not delivery.failed:
            return ""
        if limit and delivery.attempt >= limit:
            return "; to the DLQ"
        return f"; back to the queue, retried in {self.options.retry_delay} s"

    def store(self, pool: FunctionPool) -> Store:
        """The store as `pool`'s function sees it, with its own settings: the emulator reading the cloud."""
        from aggregator.config import load
        from aggregator.store import open_store

        settings = load(pool.sandbox.environment)
        if settings.store_backend != "dynamodb":
            return open_store(settings)
        if self._tables is None:  # with the emulator's credentials, which this process may not have
            from aggregator.store.dynamodb import DynamoDbStore

            self._tables = DynamoDbStore(settings.posts_table, settings.jobs_table, self.deployment.aws("dynamodb"))
        return self._tables

    def _schedules(self) -> list[tuple[str, str]]:
        """Each schedule's function and expression; one the stack cannot run stops it before anything starts."""
        schedules = []
        for schedule in self.template.schedules:
            try:
                expression = self.options.schedule_rate or tpl.resolve(schedule.expression, self.deployment.refs)
            except KeyError as exc:
                raise DeploymentError(
                    f"{schedule.function}: its schedule refers to {exc}, which the template does not define"
                ) from None
            rate_seconds(expression)
            schedules.append((schedule.function, expression))
        return schedules

    def _start_schedules(self, schedules: list[tuple[str, str]]) -> None:
        for function, expression in schedules:
            pool = self.deployment.pools[function]

            def report(result: InvokeResult | None, next_at: datetime, name: str = function) -> None:
                self.console.line("schedule", f"{name} fired: {_schedule_outcome(result)}; next at {next_at:%H:%M:%S}")

            scheduler = Scheduler(pool, expression, report)
            self.schedulers.append(scheduler)
            self.parts.append(scheduler.start())

    def _start_housekeeping(self) -> None:
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()
        if self.options.reload:
            threading.Thread(target=self._watch_code, name="reload", daemon=True).start()

    def _reap(self) -> None:
        while not self._stopping.wait(REAP_EVERY_SECONDS):
            for pool in self.deployment.pools.values():
                pool.reap(self.options.idle_seconds)

    def _watch_code(self) -> None:
        from watchfiles import watch

        root = self.options.template.parent
        folders = [root / name for name in WATCHED if (root / name).is_dir()]
        for changes in watch(*folders, stop_event=self._stopping, debounce=200, rust_timeout=500):
            names = sorted({Path(path).relative_to(root).as_posix() for _, path in changes})
            for pool in self.deployment.pools.values():
                pool.recycle()
            self.console.line("reload", f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''} changed: "
                              "instances recycled")  # fmt: skip

    def describe(self) -> str:
        keyed = sorted({f"{r.method} {r.path}" for r in self.template.routes if r.api_key_required})
        queues = ", ".join(q["url"].rsplit("/", 1)[-1] for q in self.deployment.queues.values())
        cloud = self.deployment.cloud_url
        rows = [
            ("api", f"{self.api.url}   (docs: {self.api.url}/docs, /redoc, /openapi.json)"),
            ("cloud", f"moto at {cloud}: {queues}; dashboard {cloud}/moto-api/"),
            ("upstream", scrub(self.upstream_url) + ("   (sample posts)" if self.options.upstream == "sample" else "")),
            ("database", self._database()),
            ("api key", "required in x-api-key for " + ", ".join(keyed) if self.options.api_key else "not required"),
            ("functions", f"a process per instance, under {_client_name(self.deployment.client)}; up to "
                          f"{self.options.concurrency} instances each where the template reserves no concurrency"),
        ]  # fmt: skip
        for source in self.template.sqs_sources:
            limit = self.max_receive_count(source.queue)
            rows.append(
                (
                    "worker",
                    f"{source.function} polls {source.queue}, batch size {source.batch_size}, "
                    f"{source.maximum_concurrency or 'unlimited'} at once; a failed delivery comes back in "
                    f"{self.options.retry_delay} s, the DLQ after {limit} deliveries",
                )
            )
        for scheduler in self.schedulers:
            rows.append(("schedule", f"{scheduler.pool.name} at {scheduler.expression}"))
        return "\n".join(f"  {name:<9} {text}" for name, text in rows)

    def _database(self) -> str:
        tables = ", ".join(self.deployment.tables)
        return f"DynamoDB tables {tables} in moto, kept while the stack runs" if tables else self.options.db_path


def request_line(method: str, target: str, answer: Answer, seconds: float) -> str:
    parts = [f"{method} {target} -> {answer.status} in {seconds * 1000:.1f} ms ({answer.function}"]
    result = answer.result
    if result and result.init_ms is not None:
        parts.append(f", cold start {result.init_ms:.0f} ms")
    parts.append(")")
    outcome = next((v for k, v in answer.headers if k.lower() == OUTCOME_HEADER.lower()), None)
    if outcome:
        parts.append(f" {OUTCOME_HEADER}: {outcome}")
    if result and result.error:
        parts.append(f" {result.error.get('errorType', '')}: {result.error.get('errorMessage', '')}")
    return "".join(parts)


def _job_outcome(job: Job | None) -> str:
    if job is None:
        return "unknown job"
    names = ("fetched", "pages", "inserted", "updated", "unchanged", "deleted", "rejected")
    counts = ", ".join(f"{name} {getattr(job, name)}" for name in names)
    return f"{job.status} ({counts})" + (f": {job.error}" if job.error else "")


def _job_id(body: str) -> str | None:
    from aggregator.queue import BadMessage, job_id_of

    try:
        return job_id_of(body)
    except BadMessage:
        return None


def _failure_reason(result: InvokeResult | None, correlation_id: str) -> str:
    """Why a delivery failed: the function's own warning about the job (or the message, if it names none),
    else what the invocation reported."""
    if result is None:
        return "throttled"
    for record in filter(None, map(json_record, reversed(result.logs))):
        if record.get("correlation_id") == correlation_id and record.get("level") in ("WARNING", "ERROR"):
            return str(record.get("reason") or record.get("message"))
    if result.error:
        return str(result.error.get("errorMessage") or result.error.get("errorType"))
    return "the function reported it failed"


def _schedule_outcome(result: InvokeResult | None) -> str:
    if result is None:
        return "throttled"
    if not result.ok or result.response is None:
        error = result.error or {}
        return f"failed: {error.get('errorType', '')}: {error.get('errorMessage', '')}"
    answer = json.loads(result.response)
    return f"job {answer.get('job_id')} {answer.get('outcome')}" if isinstance(answer, dict) else "done"


def _client_name(client: str) -> str:
    return "awslambdaric" if client == "awslambdaric" else "the pure-Python runtime client"
