"""What only the DynamoDB backend does, seen in the requests it makes to moto's DynamoDB: it writes only what
changed, reads a page in one Query, takes the fetch lease by a conditional write, fences each batch of posts
by the job's lease, keeps a large post in parts, and, unlike SQLite, applies a merge in many writes, which a
redelivered job completes."""

import contextlib
import time
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from aggregator import ingest
from aggregator.config import load
from aggregator.models import ClaimOutcome, FetchMode, JobStatus
from aggregator.store import LeaseLost, StoreTimeout, StoreUnavailable
from aggregator.store.dynamodb import LEASE, DynamoDbStore
from tests.helpers import LEASE_SECONDS, merge, queued_job, running_job
from tests.unit.test_store import counts, incompressible_text, rows

pytestmark = pytest.mark.parametrize("backend", ["dynamodb"], indirect=True)


class Requests:
    """Every request a store's client sends, by operation, with its parameters."""

    def __init__(self, client):
        self.sent: list[tuple[str, dict]] = []
        client.meta.events.register("before-parameter-build.dynamodb.*", self._record)

    def _record(self, model, params, **_):
        self.sent.append((model.name, dict(params)))

    def named(self, operation: str) -> list[dict]:
        return [body for name, body in self.sent if name == operation]

    def puts(self) -> int:
        return sum(
            "PutRequest" in request
            for body in self.named("BatchWriteItem")
            for requests in body["RequestItems"].values()
            for request in requests
        )


@pytest.fixture
def dynamo(backend):
    """A store with its own client, whose requests the test can watch and interrupt."""
    from aggregator.config import settings

    client = boto3.client("dynamodb")
    store = DynamoDbStore(settings().posts_table, settings().jobs_table, client)
    yield store, client
    store.close()


def fail_after(batches: int):
    """A fault for BatchWriteItem: the connection is lost once `batches` batches have been sent."""
    sent = []

    def fail(**_):
        sent.append(1)
        if len(sent) > batches:
            raise ConnectionError("lost DynamoDB mid-merge")

    return fail


@contextlib.contextmanager
def hooked(client, operation: str, hook):
    """`hook` runs before each `operation` request the client sends, until the block ends."""
    event = f"before-call.dynamodb.{operation}"
    client.meta.events.register(event, hook)
    try:
        yield
    finally:
        client.meta.events.unregister(event, hook)


def deadline_passes(store, seen: list[int]):
    """A hook after which `store`'s invocation has run out of time; `seen` counts the requests it saw."""

    def passes(**_):
        seen.append(1)
        store.set_deadline(time.monotonic() - 1)

    return passes


def posts_settings(upstream):
    return load({"UPSTREAM_URL": upstream.url, "UPSTREAM_ATTEMPTS": "1"})


def claim(store):
    return store.claim_job(FetchMode.TASK, fresh_for=0, lease_seconds=LEASE_SECONDS, keep_jobs=1000)


def test_a_fetch_equal_to_the_last_merged_one_reads_no_post_and_writes_none(dynamo):
    store, client = dynamo
    merge(store, [rows(*range(1, 101))])
    lease = running_job(store)
    requests = Requests(client)
    assert counts(merge(store, [rows(*range(1, 101))], lease=lease)) == (0, 0, 100, 0)
    sent = {name for name, _ in requests.sent}
    assert "Query" not in sent and "BatchWriteItem" not in sent  # the lease holds the last merge's digest


def test_after_a_merge_cut_short_even_the_fetch_before_it_is_compared_post_by_post(dynamo):
    store, client = dynamo
    merge(store, [rows(*range(1, 101))])
    with hooked(client, "BatchWriteItem", fail_after(1)), pytest.raises(ConnectionError):
        merge(store, [rows(*range(1, 101), title="v2")])
    job = merge(store, [rows(*range(1, 101))])  # the data the table held before the cut-short merge
    assert counts(job) == (0, 25, 75, 0)
    assert {post.title.split()[0] for post in store.list_posts()} == {"t"}


def test_only_new_and_changed_posts_are_written(dynamo):
    store, client = dynamo
    merge(store, [rows(*range(1, 101))])
    requests = Requests(client)
    job = merge(store, [rows(*range(1, 99)) + rows(99, 100, title="new") + rows(101)])
    assert counts(job) == (1, 2, 98, 0)
    assert requests.puts() == 3


def test_a_page_is_one_eventually_consistent_query_and_a_job_one_strongly_consistent_read(dynamo):
    store, client = dynamo
    merge(store, [rows(*range(1, 301))])
    job = queued_job(store)
    requests = Requests(client)
    assert store.page_of_posts_json(user_id=None, after_id=0, limit=100, max_bytes=6_000_000).post_count == 100
    assert store.page_of_posts_json(user_id=2, after_id=0, limit=100, max_bytes=6_000_000).post_count == 100
    assert store.get_job(job.job_id) == job
    [everyone, user] = requests.named("Query")
    assert (everyone.get("IndexName"), everyone["Limit"]) == (None, 101)  # one more tells whether more remain
    assert (user["IndexName"], user["Limit"]) == ("by_user", 101)
    assert everyone["ConsistentRead"] is user["ConsistentRead"] is False
    [read] = requests.named("GetItem")
    assert read["ConsistentRead"] is True  # a job just created is never 404


def test_a_claim_that_loses_the_race_for_the_lease_joins_the_winners_job(dynamo):
    store, client = dynamo
    other = DynamoDbStore(store._posts, store._jobs, boto3.client("dynamodb"))
    won = []

    def the_other_claims_first(**_):
        if not won:  # between this claim's read of the lease and its conditional write
            won.append(claim(other))

    client.meta.events.register("before-call.dynamodb.TransactWriteItems", the_other_claims_first)
    lost = claim(store)
    assert won[0].outcome == ClaimOutcome.STARTED
    assert (lost.outcome, lost.job.job_id) == (ClaimOutcome.JOINED, won[0].job.job_id)
    assert [job.job_id for job in store.list_jobs()] == [won[0].job.job_id]


def test_the_lease_is_no_job(dynamo):
    store, _ = dynamo
    claim(store)
    assert store.get_job(LEASE) is None
    assert store.start_job(LEASE, lease_seconds=LEASE_SECONDS) is None
    assert len(store.list_jobs()) == 1
    assert len(store.page_of_jobs(before=None, limit=10).jobs) == 1


def test_a_run_whose_lease_is_revoked_mid_merge_stops_before_its_next_batch(dynamo):
    store, client = dynamo
    merge(store, [rows(*range(1, 101))])
    lease = running_job(store)
    sent = []

    def reissued_after_the_first_batch(**_):
        sent.append(1)
        if len(sent) == 1:
            store.reissue_lease(lease.job.job_id, lease_seconds=LEASE_SECONDS)  # a redelivery's new lease

    client.meta.events.register("before-call.dynamodb.BatchWriteItem", reissued_after_the_first_batch)
    with pytest.raises(LeaseLost):
        merge(store, [rows(*range(1, 101), title="stale")], lease=lease)
    assert len(sent) == 1  # the batch in flight, and no other
    assert sum(post.title.startswith("stale") for post in store.list_posts()) == 25
    assert store.get_job(lease.job.job_id).status == JobStatus.RUNNING


def test_a_merge_past_the_deadline_stops_before_its_next_batch_and_a_later_fetch_completes_it(dynamo):
    store, client = dynamo
    merge(store, [rows(*range(1, 101))])
    lease = running_job(store)
    sent: list[int] = []
    with (
        hooked(client, "BatchWriteItem", deadline_passes(store, sent)),
        pytest.raises(StoreTimeout, match="ran past the invocation's time; the posts written so far stay"),
    ):
        merge(store, [rows(*range(1, 101), title="late")], lease=lease)
    assert len(sent) == 1  # the batch in flight, and no other
    assert sum(post.title.startswith("late") for post in store.list_posts()) == 25
    assert store.fail_job(lease.job.job_id, "out of time", lease=lease).status == JobStatus.FAILED
    store.set_deadline(None)
    again = merge(store, [rows(*range(1, 101), title="late")])
    assert counts(again) == (0, 75, 25, 0)
    assert {post.title.split()[0] for post in store.list_posts()} == {"late"}


def test_a_merge_past_the_deadline_stops_before_its_next_page_of_stored_posts_though_it_writes_nothing(dynamo):
    store, client = dynamo
    posts = [(i, 1, f"t {i}", "b" * 30_000) for i in range(1, 101)]  # 3 MB: several pages of a Query
    merge(store, [posts])
    lease = running_job(store)
    read: list[int] = []
    with (
        hooked(client, "Query", deadline_passes(store, read)),
        pytest.raises(StoreTimeout, match="ran past the invocation's time"),
    ):
        merge(store, [[*posts[:-1], (100, 1, "late", "b")]], lease=lease)  # one post changed, at the end
    assert len(read) == 1
    assert store.list_posts()[-1].title == "t 100"


def test_a_merge_cut_short_shows_in_part_and_the_next_delivery_completes_it(dynamo, upstream):
    store, client = dynamo
    settings = posts_settings(upstream)
    ingest.fetch_now(store, settings, seconds_left=30)
    for post in upstream.posts:
        post["title"] = "v2"
    job = queued_job(store)
    with hooked(client, "BatchWriteItem", fail_after(2)), pytest.raises(ingest.RetryLater):
        ingest.run_job(store, settings, job.job_id, budget=30, lease_seconds=LEASE_SECONDS, last_attempt=False)
    titles = [post.title for post in store.list_posts()]
    assert titles == ["v2"] * 50 + [f"post {i} title" for i in range(51, 101)]  # readers see it partly applied
    again = ingest.run_job(store, settings, job.job_id, budget=30, lease_seconds=LEASE_SECONDS, last_attempt=False)
    assert (again.job.status, counts(again.job)) == (JobStatus.SUCCEEDED, (0, 50, 50, 0))
    assert {post.title for post in store.list_posts()} == {"v2"}


def test_a_large_post_leaves_no_parts_behind_when_it_changes_or_goes(dynamo):
    store, client = dynamo

    def parts():
        found = client.scan(TableName=store._posts)["Items"]
        return sorted(int(item["id"]["N"]) for item in found if item["bucket"]["N"] != "0")

    body = incompressible_text(400_000)
    merge(store, [[(1, 1, "t", body)]])
    first = parts()
    assert len(first) >= 2, "more than one item's worth"
    merge(store, [[(1, 1, "t", body + "!")]])
    second = parts()
    assert len(second) == len(first) and not set(first) & set(second)
    merge(store, [[(1, 1, "t", "short")]])
    assert parts() == []
    merge(store, [[(2, 1, "t", body)]])
    assert merge(store, [rows(3)]).deleted == 1
    assert parts() == []


def test_writes_dynamodb_leaves_unprocessed_are_sent_again(dynamo):
    store, client = dynamo
    batches = []

    def keep(params, **_):
        batches.append(params["RequestItems"])

    def first_batch_throttled(**_):  # what DynamoDB answers when a partition is at its limit
        if len(batches) == 1:
            return SimpleNamespace(status_code=200), {"UnprocessedItems": batches[0]}
        return None

    client.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", keep)
    client.meta.events.register("before-call.dynamodb.BatchWriteItem", first_batch_throttled)
    assert merge(store, [rows(*range(1, 11))]).inserted == 10
    assert len(batches) == 2 and batches[1] == batches[0]
    assert [post.id for post in store.list_posts()] == list(range(1, 11))


def test_a_missing_table_is_unavailable_and_named(backend):
    store = DynamoDbStore("NoSuchPosts", "NoSuchJobs", boto3.client("dynamodb"))
    with pytest.raises(StoreUnavailable, match="NoSuchPosts"):
        store.count_posts()
    with pytest.raises(StoreUnavailable, match="NoSuchJobs"):
        store.get_job("0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10")


@pytest.mark.parametrize(
    ("fault", "found"),
    [
        ({"Code": "ThrottlingException", "Message": "Rate of requests exceeds the allowed throughput."}, "Throttling"),
        ({"Code": "ProvisionedThroughputExceededException", "Message": "Too much"}, "ProvisionedThroughput"),
    ],
)
def test_throttling_past_the_clients_retries_is_unavailable(backend, fault, found):
    from aggregator.config import settings

    client = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 1}))
    client.meta.events.register(
        "before-call.dynamodb.Query", lambda **_: (SimpleNamespace(status_code=400, headers={}), {"Error": fault})
    )
    store = DynamoDbStore(settings().posts_table, settings().jobs_table, client)
    with pytest.raises(StoreUnavailable, match=found):
        store.count_posts()


def test_an_unreachable_endpoint_is_unavailable(backend):
    from aggregator.config import settings

    client = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 1}))

    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    client.meta.events.register("before-call.dynamodb.GetItem", unreachable)
    store = DynamoDbStore(settings().posts_table, settings().jobs_table, client)
    with pytest.raises(StoreUnavailable, match="Could not connect"):
        store.get_job("0b7e1c2a-4f6d-4c1e-9a57-3d2f8e6b9c10")
