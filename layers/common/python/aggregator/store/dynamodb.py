"""The DynamoDB backend: posts in one table keyed for pages in id order, jobs and the fetch lease in another.

Posts: partition key `bucket`, sort key `id`. Every post sits in bucket 0, one item collection in id order,
so a page of all posts is one Query from `after_id`; the index `by_user` (partition key `user_id`, sort key
`id`, every attribute projected) makes a user's page one Query too. One bucket is one partition's
throughput (3,000 reads and 1,000 writes a second); the README says why that is ample here and what
to change if it stops being so.

A post whose title and body pass INLINE_BYTES (an item holds at most 400 KB) keeps them compressed in
part items (bucket `-id`, sort keys derived from the text's digest), written before the post that names
them and deleted after it no longer does.

Jobs: partition key `job_id`. The item LEASE names the job a claim started last (`active`), the latest
success (`succeeded`, `succeeded_at`) and the digest of the posts the last whole merge left (`merged`):
a fetch with that same digest reads no post and writes none. A claim starts a job only by a conditional
write on the lease, in one transaction with the new job, so two claims never both start one.

What differs from SQLite: a merge is many writes, not one transaction, so readers may see a fetch partly
applied; a failed fetch still writes nothing, since nothing is written before every page has been read;
and a job whose merge was cut short finishes it on its next delivery, which compares again and writes
what is still missing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from aggregator.models import Claim, ClaimOutcome, FetchMode, Job, JobCounts, JobStatus, Post
from aggregator.store import Merge, PostRow, PostsPage, UnknownJob, fill_page, iso, utc_now
from aggregator.store.sqlite import StagedPosts

Item = dict[str, dict[str, Any]]  # an item in DynamoDB's attribute-value form

POSTS_BUCKET = 0
BY_USER = "by_user"
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
ABANDONED = "abandoned: no progress"


class DynamoDbError(RuntimeError):
    """DynamoDB did not do what was asked within the attempts allowed."""


def dynamodb_client(endpoint_url: str | None) -> Any:
    """A DynamoDB client with bounded timeouts and retries (throttling included).

    Made with botocore, which boto3 wraps: a cold start spends about a third less importing it and making
    the client. Only this backend imports it."""
    from botocore.config import Config  # type: ignore[import-untyped]
    from botocore.session import Session  # type: ignore[import-untyped]

    config = Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 8})
    return Session().create_client("dynamodb", endpoint_url=endpoint_url, config=config)


class DynamoDbStore:
    def __init__(self, posts_table: str, jobs_table: str, client: Any):
        self._posts, self._jobs, self._db = posts_table, jobs_table, client

    def close(self) -> None:
        self._db.close()

    # Posts

    def upsert_posts(self, pages: Iterable[Sequence[PostRow]]) -> Merge:
        """Stage every page, then compare each post with the stored one (read in id order beside it) and
        write only the new and changed ones."""
        with StagedPosts() as staged:
            count = staged.add(pages)
            span = staged.id_range()
            if span is None:
                return Merge(staged=0, inserted=0, updated=0)
            fetched = _digest_of(staged.rows())
            if self._lease().get("merged") == fetched:  # the very posts the last whole merge left
                return Merge(staged=count, inserted=0, updated=0)
            self._remember_merged(None)  # a merge cut short leaves none: the next one compares every post
            writer = _BatchWriter(self._db, self._posts)
            inserted = updated = 0
            for row, stored in _beside(staged.rows(), self._query(self._posts_between(*span))):
                if stored is not None and _same(stored, row):
                    continue
                inserted, updated = inserted + (stored is None), updated + (stored is not None)
                self._write_post(writer, row, stored)
            writer.finish()
            self._remember_merged(fetched)
        return Merge(staged=count, inserted=inserted, updated=updated)

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

    def _posts_between(self, low: int, high: int) -> dict[str, Any]:
        return {
            "TableName": self._posts,
            "KeyConditionExpression": "#k = :k AND #id BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#k": "bucket", "#id": "id"},
            "ExpressionAttributeValues": {":k": _n(POSTS_BUCKET), ":low": _n(low), ":high": _n(high)},
            "ConsistentRead": True,
        }

    def _query(self, query: dict[str, Any], wanted: int | None = None) -> Iterator[Item]:
        """The items a Query finds, page after page as they are used, and no more than `wanted` in all."""
        found = 0
        while True:
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
            first = _first_part(stored["digest"]["S"])
            for number in range(int(stored["parts"]["N"])):
                writer.delete_at_finish({"bucket": _n(-post_id), "id": _n(first + number)})

    # Jobs

    def create_job(self, mode: FetchMode) -> Job:
        """A new queued job; it holds no lease (claim_job starts jobs that do)."""
        job = _new_job(mode)
        self._db.put_item(TableName=self._jobs, Item=_job_item(job), ConditionExpression="attribute_not_exists(job_id)")
        return job

    def claim_job(self, mode: FetchMode, *, fresh_for: float, stale_after: float, sync_stale_after: float) -> Claim:
        for _ in range(CLAIM_ATTEMPTS):
            now = datetime.now(UTC)
            lease = self._lease()
            active = self.get_job(lease["active"]) if "active" in lease else None
            if active is not None and not active.status.finished:
                if not _stale(active, now, stale_after, sync_stale_after):
                    return Claim(active, ClaimOutcome.JOINED)
                self._update_in_progress(
                    active.job_id, {"status": JobStatus.FAILED.value, "finished_at": iso(now), "error": ABANDONED}
                )
            if fresh_for > 0 and lease.get("succeeded_at", "") >= iso(now, -fresh_for):
                fresh = self.get_job(lease["succeeded"])
                if fresh is not None:
                    return Claim(fresh, ClaimOutcome.FRESH)
            job = _new_job(mode)
            if self._take_lease(job, seen=lease.get("active")):
                return Claim(job, ClaimOutcome.STARTED)
        raise DynamoDbError(f"the fetch lease changed under {CLAIM_ATTEMPTS} claims in a row")

    def get_job(self, job_id: str) -> Job | None:
        if job_id == LEASE:
            return None
        item = self._db.get_item(TableName=self._jobs, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        return _job(item["Item"]) if "Item" in item else None

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

    def start_job(self, job_id: str) -> Job | None:
        return self._update_in_progress(job_id, {"status": JobStatus.RUNNING.value, "started_at": utc_now()})

    def finish_job(self, job_id: str, status: JobStatus, counts: JobCounts, error: str | None) -> Job:
        if not status.finished:
            raise ValueError(f"a job finishes as succeeded or failed, not {status}")
        fields = {
            "status": status.value,
            "finished_at": utc_now(),
            "fetched": counts.fetched,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "rejected": counts.rejected,
            "error": error,
        }
        job = self._update_in_progress(job_id, fields)
        if job is None:
            finished = self.get_job(job_id)
            if finished is None:
                raise UnknownJob(job_id)
            return finished
        if status == JobStatus.SUCCEEDED:
            self._record_success(job)
        return job

    def _lease(self) -> dict[str, str]:
        item = self._db.get_item(TableName=self._jobs, Key={"job_id": {"S": LEASE}}, ConsistentRead=True)
        return {name: value["S"] for name, value in item.get("Item", {}).items()}

    def _take_lease(self, job: Job, *, seen: str | None) -> bool:
        """Create `job` and make it the lease's active job, if the lease still names `seen`."""
        new_job = {
            "TableName": self._jobs,
            "Item": _job_item(job),
            "ConditionExpression": "attribute_not_exists(job_id)",
        }
        lease = {
            "TableName": self._jobs,
            "Key": {"job_id": {"S": LEASE}},
            "UpdateExpression": "SET #active = :job",
            "ConditionExpression": "attribute_not_exists(#active)" if seen is None else "#active = :seen",
            "ExpressionAttributeNames": {"#active": "active"},
            "ExpressionAttributeValues": {":job": {"S": job.job_id}} | ({":seen": {"S": seen}} if seen else {}),
        }
        try:
            self._db.transact_write_items(TransactItems=[{"Put": new_job}, {"Update": lease}])
        except ClientError as exc:
            if _code(exc) == "TransactionCanceledException":  # another claim took the lease first
                return False
            raise
        return True

    def _remember_merged(self, digest: str | None) -> None:
        """Record on the lease the digest of the posts a whole merge left, or forget it."""
        change = {"UpdateExpression": "SET #m = :m", "ExpressionAttributeValues": {":m": {"S": digest}}}
        self._db.update_item(
            TableName=self._jobs,
            Key={"job_id": {"S": LEASE}},
            ExpressionAttributeNames={"#m": "merged"},
            **(change if digest else {"UpdateExpression": "REMOVE #m"}),
        )

    def _record_success(self, job: Job) -> None:
        """Make `job` the lease's latest success, unless a later one is recorded already."""
        try:
            self._db.update_item(
                TableName=self._jobs,
                Key={"job_id": {"S": LEASE}},
                UpdateExpression="SET #job = :job, #at = :at",
                ConditionExpression="attribute_not_exists(#at) OR #at <= :at",
                ExpressionAttributeNames={"#job": "succeeded", "#at": "succeeded_at"},
                ExpressionAttributeValues={":job": {"S": job.job_id}, ":at": {"S": job.finished_at or ""}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise

    def _update_in_progress(self, job_id: str, fields: dict[str, Any]) -> Job | None:
        """Set `fields` (None removes one) on a job still queued or running; None if there is no such job."""
        names = {"#status": "status"} | {f"#f{i}": name for i, name in enumerate(fields)}
        values: Item = {":queued": {"S": IN_PROGRESS[0]}, ":running": {"S": IN_PROGRESS[1]}}
        sets, removes = [], []
        for i, value in enumerate(fields.values()):
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":v{i}"] = _attribute(value)
                sets.append(f"#f{i} = :v{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            answer = self._db.update_item(
                TableName=self._jobs,
                Key={"job_id": {"S": job_id}},
                UpdateExpression=expression,
                ConditionExpression="#status IN (:queued, :running)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _job(answer["Attributes"])


class _BatchWriter:
    """Puts and deletes sent 25 to a BatchWriteItem; what DynamoDB leaves unprocessed is sent again."""

    def __init__(self, client: Any, table: str):
        self._db, self._table = client, table
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


def _beside(rows: Iterator[PostRow], stored: Iterator[Item]) -> Iterator[tuple[PostRow, Item | None]]:
    """Each staged row with the stored post of the same id, or None; both come in id order."""
    current = next(stored, None)
    for row in rows:
        while current is not None and int(current["id"]["N"]) < row[0]:
            current = next(stored, None)
        yield row, (current if current is not None and int(current["id"]["N"]) == row[0] else None)


def _digest_of(rows: Iterable[PostRow]) -> str:
    """One digest of a whole fetch, its posts in id order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
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


def _post_json(post: dict[str, Any]) -> str:
    return json.dumps(post, ensure_ascii=False, separators=(",", ":"))


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _attribute(value: str | int) -> dict[str, str]:
    return _n(value) if isinstance(value, int) else {"S": value}


def _new_job(mode: FetchMode) -> Job:
    return Job(job_id=str(uuid.uuid4()), mode=mode, status=JobStatus.QUEUED, created_at=utc_now())


def _job_item(job: Job) -> Item:
    fields = {name: _attribute(value) for name, value in job.as_json().items() if value is not None}
    return fields | {"created_ns": _n(time.time_ns())}  # orders jobs created within one millisecond


def _job(item: Item) -> Job:
    return Job.model_validate(
        {name: int(value["N"]) if "N" in value else value["S"] for name, value in item.items() if name in JOB_FIELDS}
    )


def _stale(job: Job, now: datetime, stale_after: float, sync_stale_after: float) -> bool:
    if job.mode == FetchMode.SYNC and job.created_at < iso(now, -sync_stale_after):
        return True
    return job.created_at < iso(now, -stale_after)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
