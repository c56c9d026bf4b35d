"""The DynamoDB backend: posts in one table keyed for pages in id order, jobs and the fetch lease in another.

Posts: partition key `bucket`, sort key `id`. Every post sits in bucket 0, one item collection in id order,
so a page of all posts is one Query from `after_id`; the index `by_user` (partition key `user_id`, sort key
`id`, every attribute projected) makes a user's page one Query too. One bucket is one partition's
throughput (3,000 reads and 1,000 writes a second); the README says why that is ample here and what
to change if it stops being so.

A post whose title and body pass INLINE_BYTES (an item holds at most 400 KB) keeps them compressed in
part items (bucket `-id`, sort keys derived from the text's digest), written before the post that names
them and deleted after it no longer does.

Jobs: partition key `job_id`; the index `by_age` (partition key `kind`, the same for every job, sort key
`created_ns`) lists them by age for the history. The item LEASE serializes the claims: it names the jobs
in progress (`open`), counts the jobs (`jobs`, for the history's retention), keeps the latest success
(`succeeded`, `succeeded_at`) and the digest of the posts the last complete merge left (`merged`), and
has a `version` that each new job moves on. A job is created only in one transaction with that move,
conditional on the version its claim read, so two claims never both start one.

Each start of a job gives it a new lease token; progress, a fetch's end and a failure are writes
conditional on it. Posts cannot be written conditionally in bulk, so a merge reads its job (strongly
consistent) before each batch of 25 posts: a run whose lease is revoked writes at most the batch it had
in flight.

What differs from SQLite: a merge is many writes, not one transaction, so readers may see a fetch partly
applied; a failed fetch still writes nothing, since nothing is written before every page has been read;
and a job whose merge was cut short finishes it on its next delivery, which compares again and writes
what is still missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError  # type: ignore[import-untyped]
from botocore.exceptions import ConnectionError as EndpointUnreachable

from aggregator.models import Claim, ClaimOutcome, FetchMode, Job, JobStatus, Post
from aggregator.store import (
    FetchEnd,
    JobsPage,
    Lease,
    LeaseLost,
    PageItem,
    PostRow,
    PostsPage,
    Progress,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    UnknownJob,
    fill_page,
    iso,
    utc_now,
)
from aggregator.store.sqlite import ABANDONED_QUEUED, ABANDONED_SYNC, StagedPosts

Item = dict[str, dict[str, Any]]  # an item in DynamoDB's attribute-value form

POSTS_BUCKET = 0
BY_USER = "by_user"
BY_AGE = "by_age"
JOB_KIND = "job"  # the `kind` of every job item: the one partition of the by_age index
LEASE = "fetch-lease"  # the one item of the jobs table that is not a job: never a UUID
INLINE_BYTES = 300_000  # title and body up to this size stay in the post's item
PART_BYTES = 300_000
PARTS_PER_TEXT = 100  # a text's parts take sort keys stamp * 100 + 1 .. n
BATCH_SIZE = 25  # BatchWriteItem's limit
WRITE_ATTEMPTS = 8
CLAIM_ATTEMPTS = 5
READ_ATTEMPTS = 3
IN_PROGRESS = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
JOB_FIELDS = frozenset(Job.model_fields)
HANDLED = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})  # the store's own cases
# Failures that may pass: the table is missing (being created, or restored), or its requests are throttled
# beyond the client's retries.
UNAVAILABLE = frozenset(
    {"ResourceNotFoundException", "ProvisionedThroughputExceededException", "ThrottlingException",
     "RequestLimitExceeded"}
)  # fmt: skip


class DynamoDbError(StoreError):
    """DynamoDB did not do what was asked within the attempts allowed."""


def dynamodb_client(endpoint_url: str | None) -> Any:
    """A DynamoDB client with bounded timeouts and retries (throttling included).

    Made with botocore, which boto3 wraps: a cold start spends about a third less importing it and making
    the client. Only this backend imports it. Every client comes from one session, whose loader reads
    the service's model once a process: a second store costs milliseconds, not a tenth of a second. The
    session resolves credentials once, as a Lambda sandbox's stay the same for its life; the region and
    the endpoint are read for each client."""
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 8})
    try:
        with _SESSION_LOCK:  # a session is not thread-safe; the clients it makes are
            return _session().create_client("dynamodb", endpoint_url=endpoint_url, config=config)
    except BotoCoreError as exc:  # no region, a malformed endpoint
        raise StoreError(f"database error: {exc} ({type(exc).__name__})") from exc


_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> Any:
    from botocore.session import Session  # type: ignore[import-untyped]

    return Session()


class DynamoDbStore:
    def __init__(self, posts_table: str, jobs_table: str, client: Any):
        self._posts, self._jobs, self._db = posts_table, jobs_table, _StoreErrors(client)
        self._deadline: float | None = None

    def close(self) -> None:
        self._db.close()

    def set_deadline(self, deadline: float | None) -> None:
        """DynamoDB holds no lock to wait for, and each request is bounded by the client's timeouts and
        retries; a merge stops before its next batch once `deadline` (monotonic) has passed."""
        self._deadline = deadline

    # Posts

    def count_posts(self) -> int:
        query = self._posts_after(None, 0, consistent=True) | {"Select": "COUNT"}
        count = 0
        while True:
            answer = self._db.query(**query)
            count += int(answer["Count"])
            if "LastEvaluatedKey" not in answer:
                return count
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def page_of_posts_json(self, *, user_id: int | None, after_id: int, limit: int, max_bytes: int) -> PostsPage:
        items = self._query(self._posts_after(user_id, after_id), wanted=limit + 1)  # one more: does more follow?
        posts = ((int(item["id"]["N"]), _post_json(self._post(item))) for item in items)
        taken, last_id, cut = fill_page(posts, limit=limit, max_bytes=max_bytes)
        more = cut or (len(taken) == limit and next(items, None) is not None)
        return PostsPage(json="[" + ",".join(taken) + "]", post_count=len(taken), last_id=last_id, more=more)

    def list_posts(self, *, user_id: int | None = None, after_id: int = 0, limit: int = -1) -> list[Post]:
        if limit == 0:
            return []
        query = self._posts_after(user_id, after_id, consistent=user_id is None)
        return [Post(**self._post(item)) for item in self._query(query, wanted=limit if limit > 0 else None)]

    def merge_fetch(self, lease: Lease, pages: Iterable[Iterable[PageItem]], end: Callable[[], FetchEnd]) -> Job:
        """Stage every page, then compare each post with the stored one (read in id order beside it) and
        write only the new and changed ones, and delete the posts a complete fetch no longer lists; then
        finish the job, if its lease still holds."""
        with StagedPosts() as staged:
            count = staged.add(pages)
            fetch = end()
            self._hold(lease)
            digest = _digest_of(staged.items())
            if self._lease().get("merged") == digest:  # the very posts the last complete merge left
                return self._finish_merge(lease, fetch, (0, 0, count, 0), merged=None)
            self._remember_merged(None)  # a merge cut short leaves none: the next one compares every post
            counts = self._merge(staged, count, complete=fetch.complete, lease=lease)
            return self._finish_merge(lease, fetch, counts, merged=digest if fetch.complete else None)

    def _merge(self, staged: StagedPosts, count: int, *, complete: bool, lease: Lease) -> tuple[int, int, int, int]:
        span = staged.id_range()
        if not complete and span is None:
            return 0, 0, 0, 0
        query = self._all_posts() if complete else self._posts_between(*(span or (0, 0)))
        stored = self._query(query, before_each_page=self._stop_at_deadline)
        writer = _BatchWriter(self._db, self._posts, guard=lambda: self._hold_in_time(lease))
        inserted = updated = deleted = 0
        for item, post in _side_by_side(staged.items(), stored):
            if item is None:
                if complete and post is not None:  # a stored post the upstream no longer lists
                    deleted += 1
                    self._delete_post(writer, post)
            elif not isinstance(item, int) and not (post is not None and _same(post, item)):
                inserted, updated = inserted + (post is None), updated + (post is not None)
                self._write_post(writer, item, post)
        writer.finish()
        return inserted, updated, count - inserted - updated, deleted

    def _finish_merge(
        self, lease: Lease, fetch: FetchEnd, counts: tuple[int, int, int, int], merged: str | None
    ) -> Job:
        inserted, updated, unchanged, deleted = counts
        fields = {
            "status": JobStatus.SUCCEEDED.value,
            "finished_at": utc_now(),
            "fetched": fetch.fetched,
            "pages": fetch.pages,
            "inserted": inserted,
            "updated": updated,
            "unchanged": unchanged,
            "deleted": deleted,
            "rejected": fetch.rejected,
            "error": fetch.error,
            "lease_token": None,
        }
        job = self._end_job(lease.job.job_id, fields, token=lease.token, merged=merged)
        if job is None:
            raise LeaseLost(self._job(lease.job.job_id))
        return job

    def _posts_after(self, user_id: int | None, after_id: int, *, consistent: bool = False) -> dict[str, Any]:
        """The Query for posts above `after_id` in id order: all of them, or one user's through the index."""
        if user_id is None:
            key, value, index = "bucket", POSTS_BUCKET, {}
        else:  # an index is read eventually consistent only
            key, value, index, consistent = "user_id", user_id, {"IndexName": BY_USER}, False
        return {
            "TableName": self._posts,
            "KeyConditionExpression": "#k = :k AND #id > :after",
            "ExpressionAttributeNames": {"#k": key, "#id": "id"},
            "ExpressionAttributeValues": {":k": _n(value), ":after": _n(after_id)},
            "ConsistentRead": consistent,
            **index,
        }

    def _all_posts(self) -> dict[str, Any]:
        return {
            "TableName": self._posts,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": "bucket"},
            "ExpressionAttributeValues": {":k": _n(POSTS_BUCKET)},
            "ConsistentRead": True,
        }

    def _posts_between(self, low: int, high: int) -> dict[str, Any]:
        return {
            "TableName": self._posts,
            "KeyConditionExpression": "#k = :k AND #id BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#k": "bucket", "#id": "id"},
            "ExpressionAttributeValues": {":k": _n(POSTS_BUCKET), ":low": _n(low), ":high": _n(high)},
            "ConsistentRead": True,
        }

    def _query(
        self, query: dict[str, Any], wanted: int | None = None, before_each_page: Callable[[], None] = lambda: None
    ) -> Iterator[Item]:
        """The items a Query finds, page after page as they are used, and no more than `wanted` in all."""
        found = 0
        while True:
            before_each_page()
            if wanted is not None:
                query["Limit"] = wanted - found
            answer = self._db.query(**query)
            found += len(answer["Items"])
            yield from answer["Items"]
            if "LastEvaluatedKey" not in answer or (wanted is not None and found >= wanted):
                return
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def _post(self, item: Item) -> dict[str, Any]:
        """A stored post as the API serves it; a post kept in parts is read whole."""
        post_id = int(item["id"]["N"])
        for _ in range(READ_ATTEMPTS):
            text = _inline_text(item) or self._parts_text(post_id, item)
            if text is not None:
                return {"id": post_id, "user_id": int(item["user_id"]["N"]), "title": text[0], "body": text[1]}
            # its parts were replaced while it was read: read the post again
            item = self._db.get_item(TableName=self._posts, Key=_post_key(post_id), ConsistentRead=True)["Item"]
        raise DynamoDbError(f"post {post_id} kept changing while it was read")

    def _parts_text(self, post_id: int, item: Item) -> tuple[str, str] | None:
        first, count = _first_part(item["digest"]["S"]), int(item["parts"]["N"])
        query = {
            "TableName": self._posts,
            "KeyConditionExpression": "#k = :k AND #id BETWEEN :first AND :last",
            "ExpressionAttributeNames": {"#k": "bucket", "#id": "id"},
            "ExpressionAttributeValues": {":k": _n(-post_id), ":first": _n(first), ":last": _n(first + count - 1)},
            "ConsistentRead": True,
        }
        parts = [part["data"]["B"] for part in self._query(query)]
        if len(parts) != count:
            return None
        title, body = json.loads(zlib.decompress(b"".join(parts)))
        return title, body

    def _write_post(self, writer: _BatchWriter, row: PostRow, stored: Item | None) -> None:
        post_id, user_id, title, body = row
        item: Item = {**_post_key(post_id), "user_id": _n(user_id)}
        digest = None
        if len(title.encode()) + len(body.encode()) <= INLINE_BYTES:
            item |= {"title": {"S": title}, "body": {"S": body}}
        else:
            digest = _digest(title, body)
            packed = zlib.compress(_text_json(title, body).encode())
            parts = [packed[i : i + PART_BYTES] for i in range(0, len(packed), PART_BYTES)]
            first = _first_part(digest)
            for number, part in enumerate(parts):
                writer.put({"bucket": _n(-post_id), "id": _n(first + number), "data": {"B": part}})
            writer.flush()  # the parts are stored before the post that names them
            item |= {"digest": {"S": digest}, "parts": _n(len(parts))}
        writer.put(item)
        if stored is not None and "parts" in stored and stored["digest"]["S"] != digest:
            self._delete_parts(writer, post_id, stored)

    def _delete_post(self, writer: _BatchWriter, stored: Item) -> None:
        post_id = int(stored["id"]["N"])
        writer.delete_at_finish(_post_key(post_id))
        if "parts" in stored:
            self._delete_parts(writer, post_id, stored)

    def _delete_parts(self, writer: _BatchWriter, post_id: int, stored: Item) -> None:
        first = _first_part(stored["digest"]["S"])
        for number in range(int(stored["parts"]["N"])):
            writer.delete_at_finish({"bucket": _n(-post_id), "id": _n(first + number)})

    def _hold_in_time(self, lease: Lease) -> None:
        """StoreTimeout once the deadline has passed; then LeaseLost unless `lease` still holds."""
        self._stop_at_deadline()
        self._hold(lease)

    def _stop_at_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise StoreTimeout(
                "merging the fetch ran past the invocation's time; the posts written so far stay, the next fetch "
                "writes the rest"
            )

    def _hold(self, lease: Lease) -> None:
        """LeaseLost unless `lease` is still its running job's."""
        item = self._job_item(lease.job.job_id) or {}
        if (_text(item, "status"), _text(item, "lease_token")) != (JobStatus.RUNNING.value, lease.token):
            raise LeaseLost(self._job(lease.job.job_id))

    # Jobs

    def create_job(self, mode: FetchMode, *, lease_seconds: float) -> Job:
        for _ in range(CLAIM_ATTEMPTS):  # only a transaction in conflict with another fails here
            job = _new_job(mode)
            if self._create(job, lease_seconds, version=None):
                return job
        raise DynamoDbError(f"the fetch lease was busy for {CLAIM_ATTEMPTS} attempts in a row")

    def claim_job(self, mode: FetchMode, *, fresh_for: float, lease_seconds: float, keep_jobs: int) -> Claim:
        for _ in range(CLAIM_ATTEMPTS):
            now = datetime.now(UTC)
            lease = self._lease_item()
            in_progress = [item for item in self._open_jobs(lease) if not self._settled(item, now)]
            if in_progress:
                oldest = min(in_progress, key=lambda item: int(item["created_ns"]["N"]))
                return Claim(_job(oldest), ClaimOutcome.JOINED)
            if fresh_for > 0 and _text(lease, "succeeded_at") >= iso(now, -fresh_for):
                fresh = self.get_job(_text(lease, "succeeded"))
                if fresh is not None:
                    return Claim(fresh, ClaimOutcome.FRESH)
            job = _new_job(mode)
            if self._create(job, lease_seconds, version=int(lease.get("version", {}).get("N", "0"))):
                self._trim(keep_jobs, jobs=int(lease.get("jobs", {}).get("N", "0")) + 1)
                return Claim(job, ClaimOutcome.STARTED)
        raise DynamoDbError(f"the fetch lease changed under {CLAIM_ATTEMPTS} claims in a row")

    def get_job(self, job_id: str) -> Job | None:
        item = self._job_item(job_id)
        return None if item is None else _job(item)

    def list_jobs(self) -> list[Job]:
        items: list[Item] = []
        scan: dict[str, Any] = {"TableName": self._jobs, "ConsistentRead": True}
        while True:
            answer = self._db.scan(**scan)
            items += [item for item in answer["Items"] if item["job_id"]["S"] != LEASE]
            if "LastEvaluatedKey" not in answer:
                break
            scan["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return [_job(item) for item in sorted(items, key=lambda item: int(item["created_ns"]["N"]))]

    def page_of_jobs(self, *, before: str | None, limit: int) -> JobsPage:
        """Newest first, from the by_age index (eventually consistent)."""
        condition, values = "#kind = :kind", {":kind": {"S": JOB_KIND}}
        if before is not None:
            anchor = self._job_item(before)
            if anchor is None:
                raise UnknownJob(before)
            condition = condition + " AND #ns < :before"
            values[":before"] = {"N": str(anchor["created_ns"]["N"])}
        query = {
            "TableName": self._jobs,
            "IndexName": BY_AGE,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#kind": "kind", "#ns": "created_ns"} if before else {"#kind": "kind"},
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        jobs = [_job(item) for item in self._query(query, wanted=limit + 1)]
        return JobsPage(jobs=jobs[:limit], more=len(jobs) > limit)

    def start_job(self, job_id: str, *, lease_seconds: float) -> Lease | None:
        token, now = str(uuid.uuid4()), datetime.now(UTC)
        fields = {
            "status": JobStatus.RUNNING.value,
            "started_at": iso(now),
            "lease_token": token,
            "lease_expires_at": iso(now, lease_seconds),
            "fetched": 0,
            "pages": 0,
        }
        item = self._update_in_progress(job_id, fields)
        return None if item is None else Lease(_job(item), token)

    def reissue_lease(self, job_id: str, *, lease_seconds: float) -> Job | None:
        fields = {"lease_token": None, "lease_expires_at": iso(datetime.now(UTC), lease_seconds)}
        item = self._update_in_progress(job_id, fields)
        return None if item is None else _job(item)

    def record_progress(self, lease: Lease, progress: Progress) -> None:
        fields = {"fetched": progress.fetched, "pages": progress.pages}
        if self._update_in_progress(lease.job.job_id, fields, token=lease.token) is None:
            raise LeaseLost(self._job(lease.job.job_id))

    def fail_job(
        self, job_id: str, reason: str, *, lease: Lease | None = None, progress: Progress | None = None
    ) -> Job:
        fields: dict[str, Any] = {
            "status": JobStatus.FAILED.value,
            "finished_at": utc_now(),
            "error": reason,
            "lease_token": None,
        }
        if progress is not None:
            fields |= {"fetched": progress.fetched, "pages": progress.pages}
        job = self._end_job(job_id, fields, token=lease.token if lease else None)
        return job or self._job(job_id)  # a finished job as it was; UnknownJob if none

    def _job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _job_item(self, job_id: str) -> Item | None:
        if job_id == LEASE:
            return None
        answer = self._db.get_item(TableName=self._jobs, Key=_job_key(job_id), ConsistentRead=True)
        item: Item | None = answer.get("Item")
        return item

    def _lease_item(self) -> Item:
        answer = self._db.get_item(TableName=self._jobs, Key=_job_key(LEASE), ConsistentRead=True)
        item: Item = answer.get("Item", {})
        return item

    def _lease(self) -> dict[str, str]:
        return {name: value["S"] for name, value in self._lease_item().items() if "S" in value}

    def _open_jobs(self, lease: Item) -> Iterator[Item]:
        for job_id in lease.get("open", {}).get("SS", []):
            item = self._job_item(job_id)
            if item is None:
                self._close(job_id)
            else:
                yield item

    def _settled(self, item: Item, now: datetime) -> bool:
        """Whether a job the lease lists as open is settled: finished (and closed now), or in progress past
        its lease, and failed now as abandoned."""
        job = _job(item)
        if job.status.finished:
            self._close(job.job_id)
            return True
        if _text(item, "lease_expires_at") >= iso(now):
            return False
        reason = ABANDONED_SYNC if job.mode == FetchMode.SYNC else ABANDONED_QUEUED
        self._end_job(job.job_id, {"status": "failed", "finished_at": iso(now), "error": reason, "lease_token": None})
        return True

    def _create(self, job: Job, lease_seconds: float, *, version: int | None) -> bool:
        """Create `job` leased for `lease_seconds`, opened on the lease; if `version` is given, only while the
        lease is still at that version. False if it is not, or a job has this id."""
        item = _new_job_item(job) | {"lease_expires_at": {"S": iso(datetime.now(UTC), lease_seconds)}}
        values: Item = {":one": _n(1), ":job": {"SS": [job.job_id]}}
        lease: dict[str, Any] = {
            "TableName": self._jobs,
            "Key": _job_key(LEASE),
            "UpdateExpression": "ADD #version :one, #open :job, #jobs :one",
            "ExpressionAttributeNames": {"#version": "version", "#open": "open", "#jobs": "jobs"},
            "ExpressionAttributeValues": values,
        }
        if version is not None:
            lease["ConditionExpression"] = "attribute_not_exists(#version) OR #version = :seen"
            values[":seen"] = _n(version)
        new_job = {"TableName": self._jobs, "Item": item, "ConditionExpression": "attribute_not_exists(job_id)"}
        return self._transact([{"Put": new_job}, {"Update": lease}])

    def _trim(self, keep_jobs: int, *, jobs: int) -> None:
        """Delete the finished jobs among all but the newest `keep_jobs` (`jobs`: how many there are)."""
        if jobs <= keep_jobs:
            return
        oldest = {
            "TableName": self._jobs,
            "IndexName": BY_AGE,
            "KeyConditionExpression": "#kind = :kind",
            "ExpressionAttributeNames": {"#kind": "kind"},
            "ExpressionAttributeValues": {":kind": {"S": JOB_KIND}},
            "ProjectionExpression": "job_id",
        }
        for item in list(self._query(oldest, wanted=jobs - keep_jobs)):
            finished = {
                "TableName": self._jobs,
                "Key": _job_key(item["job_id"]["S"]),
                "ConditionExpression": "#status IN (:succeeded, :failed)",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":succeeded": {"S": "succeeded"}, ":failed": {"S": "failed"}},
            }
            count = {
                "TableName": self._jobs,
                "Key": _job_key(LEASE),
                "UpdateExpression": "ADD #jobs :less",
                "ExpressionAttributeNames": {"#jobs": "jobs"},
                "ExpressionAttributeValues": {":less": _n(-1)},
            }
            self._transact([{"Delete": finished}, {"Update": count}])  # a job in progress stays

    def _end_job(
        self, job_id: str, fields: dict[str, Any], *, token: str | None = None, merged: str | None = None
    ) -> Job | None:
        """Finish a job in progress (with `token`, only while it holds it): set `fields` and close it on the
        lease, recording a success and the digest of the posts it `merged`. None if it is no longer
        in progress, or the token no longer holds."""
        expression, names, values = _update(fields)
        names["#status"] = "status"
        values |= {":queued": {"S": IN_PROGRESS[0]}, ":running": {"S": IN_PROGRESS[1]}}
        condition = "#status IN (:queued, :running)"
        if token is not None:
            condition += " AND #token = :token"
            names["#token"], values[":token"] = "lease_token", {"S": token}
        job = {
            "TableName": self._jobs,
            "Key": _job_key(job_id),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        recorded: dict[str, Any] = {}
        if fields["status"] == JobStatus.SUCCEEDED.value:
            recorded = {"succeeded": job_id, "succeeded_at": fields["finished_at"]}
        if merged is not None:
            recorded["merged"] = merged
        lease_set, lease_names, lease_values = _update(recorded) if recorded else ("", {}, {})
        lease = {
            "TableName": self._jobs,
            "Key": _job_key(LEASE),
            "UpdateExpression": (lease_set + " " if lease_set else "") + "DELETE #open :job",
            "ExpressionAttributeNames": lease_names | {"#open": "open"},
            "ExpressionAttributeValues": lease_values | {":job": {"SS": [job_id]}},
        }
        return self.get_job(job_id) if self._transact([{"Update": job}, {"Update": lease}]) else None

    def _close(self, job_id: str) -> None:
        """Take a job that is no longer in progress off the lease's open jobs."""
        self._db.update_item(
            TableName=self._jobs,
            Key=_job_key(LEASE),
            UpdateExpression="DELETE #open :job",
            ExpressionAttributeNames={"#open": "open"},
            ExpressionAttributeValues={":job": {"SS": [job_id]}},
        )

    def _remember_merged(self, digest: str | None) -> None:
        """Record on the lease the digest of the posts a complete merge left, or forget it."""
        expression, names, values = _update({"merged": digest})
        self._db.update_item(
            TableName=self._jobs,
            Key=_job_key(LEASE),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            **({"ExpressionAttributeValues": values} if values else {}),
        )

    def _update_in_progress(self, job_id: str, fields: dict[str, Any], *, token: str | None = None) -> Item | None:
        """Set `fields` (None removes one) on a job still queued or running, or, with `token`, running under
        it; the job's item after, or None if there is no such job."""
        expression, names, values = _update(fields)
        names["#status"] = "status"
        if token is None:
            condition = "#status IN (:queued, :running)"
            values |= {":queued": {"S": IN_PROGRESS[0]}, ":running": {"S": IN_PROGRESS[1]}}
        else:
            condition = "#status = :running AND #token = :token"
            names["#token"] = "lease_token"
            values |= {":running": {"S": IN_PROGRESS[1]}, ":token": {"S": token}}
        try:
            answer = self._db.update_item(
                TableName=self._jobs,
                Key=_job_key(job_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        item: Item = answer["Attributes"]
        return item

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        """One transaction; False if a condition in it failed (or another transaction got there first)."""
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if _code(exc) == "TransactionCanceledException":
                return False
            raise
        return True


class _StoreErrors:
    """The DynamoDB client, its failures as the store's: a missing table, throttling or a connection that
    fails is StoreUnavailable, any other failure StoreError with DynamoDB's own reason; failed conditions
    stay for the store to handle."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not callable(found) or name in ("close", "meta"):
            return found

        def call(**request: Any) -> Any:
            try:
                return found(**request)
            except ClientError as exc:
                code = _code(exc)
                if code in HANDLED:
                    raise
                reason = f"{exc.response.get('Error', {}).get('Message', exc)} ({code}, {request.get('TableName')})"
                if code in UNAVAILABLE:
                    raise StoreUnavailable(reason) from exc
                raise StoreError(f"database error: {reason}") from exc
            except (EndpointUnreachable, HTTPClientError) as exc:
                raise StoreUnavailable(f"{exc} ({type(exc).__name__})") from exc
            except BotoCoreError as exc:
                raise StoreError(f"database error: {exc} ({type(exc).__name__})") from exc

        return call


class _BatchWriter:
    """Puts and deletes sent 25 to a BatchWriteItem, each batch after `guard` passes; what DynamoDB leaves
    unprocessed is sent again."""

    def __init__(self, client: Any, table: str, guard: Callable[[], None]):
        self._db, self._table, self._guard = client, table, guard
        self._pending: list[dict[str, Any]] = []
        self._last: list[dict[str, Any]] = []

    def put(self, item: Item) -> None:
        self._pending.append({"PutRequest": {"Item": item}})
        if len(self._pending) == BATCH_SIZE:
            self.flush()

    def delete_at_finish(self, key: Item) -> None:
        self._last.append({"DeleteRequest": {"Key": key}})

    def flush(self) -> None:
        while self._pending:
            self._guard()
            self._send(self._pending[:BATCH_SIZE])
            del self._pending[:BATCH_SIZE]

    def finish(self) -> None:
        """Send what is pending, then the deletes kept for the end."""
        self.flush()
        self._pending, self._last = self._last, []
        self.flush()

    def _send(self, requests: list[dict[str, Any]]) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            answer = self._db.batch_write_item(RequestItems={self._table: requests})
            requests = answer.get("UnprocessedItems", {}).get(self._table, [])
            if not requests:
                return
            time.sleep(min(2.0, 0.05 * 2**attempt))
        raise DynamoDbError(f"{len(requests)} writes still unprocessed after {WRITE_ATTEMPTS} attempts")


def _side_by_side(staged: Iterator[PageItem], stored: Iterator[Item]) -> Iterator[tuple[PageItem | None, Item | None]]:
    """The staged items and stored posts, both in id order, paired by id: (item, post), where either is None
    if the other has no match. (A pair is never both None.)"""
    item, post = next(staged, None), next(stored, None)
    while item is not None or post is not None:
        item_id = None if item is None else _id_of(item)
        post_id = None if post is None else int(post["id"]["N"])
        if post_id is None or (item_id is not None and item_id < post_id):
            yield item, None
            item = next(staged, None)
        elif item_id is None or post_id < item_id:
            yield None, post
            post = next(stored, None)
        else:
            yield item, post
            item, post = next(staged, None), next(stored, None)


def _id_of(item: PageItem) -> int:
    return item if isinstance(item, int) else item[0]


def _digest_of(items: Iterable[PageItem]) -> str:
    """One digest of a whole fetch: its posts, and the ids it keeps as they were, in id order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def _same(stored: Item, row: PostRow) -> bool:
    _, user_id, title, body = row
    if int(stored["user_id"]["N"]) != user_id:
        return False
    if "parts" in stored:
        return bool(stored["digest"]["S"] == _digest(title, body))
    return _inline_text(stored) == (title, body)


def _inline_text(item: Item) -> tuple[str, str] | None:
    return (item["title"]["S"], item["body"]["S"]) if "title" in item else None


def _text_json(title: str, body: str) -> str:
    return json.dumps([title, body], ensure_ascii=False)


def _digest(title: str, body: str) -> str:
    return hashlib.sha256(_text_json(title, body).encode()).hexdigest()


def _first_part(digest: str) -> int:
    """The sort key of a text's first part: each version of a text has keys of its own."""
    return int(digest[:12], 16) * PARTS_PER_TEXT + 1


def _post_key(post_id: int) -> Item:
    return {"bucket": _n(POSTS_BUCKET), "id": _n(post_id)}


def _job_key(job_id: str) -> Item:
    return {"job_id": {"S": job_id}}


def _post_json(post: dict[str, Any]) -> str:
    return json.dumps(post, ensure_ascii=False, separators=(",", ":"))


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _attribute(value: str | int) -> dict[str, str]:
    return _n(value) if isinstance(value, int) else {"S": value}


def _text(item: Item, name: str) -> str:
    return str(item.get(name, {}).get("S", ""))


def _update(fields: dict[str, Any]) -> tuple[str, dict[str, str], Item]:
    """An update expression that sets `fields`, removing those that are None; its names and values."""
    names = {f"#f{i}": name for i, name in enumerate(fields)}
    values: Item = {f":v{i}": _attribute(value) for i, value in enumerate(fields.values()) if value is not None}
    sets = [f"#f{i} = :v{i}" for i, value in enumerate(fields.values()) if value is not None]
    removes = [f"#f{i}" for i, value in enumerate(fields.values()) if value is None]
    clauses = [("SET", sets), ("REMOVE", removes)]
    return " ".join(f"{verb} {', '.join(parts)}" for verb, parts in clauses if parts), names, values


def _new_job(mode: FetchMode) -> Job:
    return Job(job_id=str(uuid.uuid4()), mode=mode, status=JobStatus.QUEUED, created_at=utc_now())


def _new_job_item(job: Job) -> Item:
    fields = {name: _attribute(value) for name, value in job.as_json().items() if value is not None}
    return fields | {"kind": {"S": JOB_KIND}, "created_ns": _n(time.time_ns())}  # orders jobs within a millisecond


def _job(item: Item) -> Job:
    return Job.model_validate(
        {name: int(value["N"]) if "N" in value else value["S"] for name, value in item.items() if name in JOB_FIELDS}
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
