import pytest

from aggregator.config import load
from aggregator.ingest import RetryLater, Tally, fetch_now, parse_posts, run_job
from aggregator.models import FetchMode, JobStatus

SUCCEEDED, FAILED = JobStatus.SUCCEEDED, JobStatus.FAILED


@pytest.fixture
def settings(upstream):
    return load({"UPSTREAM_URL": upstream.url, "UPSTREAM_TIMEOUT": "0.5", "UPSTREAM_ATTEMPTS": "1"})


def post(i, **changes):
    return {"userId": 1, "id": i, "title": f"t{i}", "body": f"b{i}", **changes}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"userId": 1, "title": "t", "body": "b"}, "'id' is missing"),
        (post(1, id="1"), "'id' must be an integer"),
        (post(1, id=1.0), "'id' must be an integer"),
        (post(1, id=True), "'id' must be an integer"),
        (post(1, id=0), "'id' must be between"),
        (post(1, id=2**53), "'id' must be between"),
        (post(1, userId=-4), "'userId' must be between"),
        (post(1, body="x" * 500_001), "longer than 500000"),
        (post(1, userId=None), "'userId' is missing"),
        (post(1, userId=[1]), "'userId' must be an integer"),
        (post(1, title=7), "'title' must be a string"),
        (post(1, body={"text": "x"}), "'body' must be a string"),
        (post(1, body="lone \ud800 surrogate"), "'body' is not valid unicode"),
    ],
)
def test_a_record_that_does_not_fit_is_rejected_with_its_reason(record, reason):
    tally = Tally()
    assert parse_posts([post(7), record], tally) == [(7, 1, "t7", "b7")]
    assert tally.rejected == 1
    assert reason in tally.reasons[0]
    assert tally.reasons[0].startswith("record 2:")


def test_extra_fields_are_ignored_and_the_last_duplicate_wins():
    tally = Tally()
    rows = parse_posts([post(1, extra="x"), post(2), post(1, title="second")], tally)
    assert sorted(rows) == [(1, 1, "second", "b1"), (2, 1, "t2", "b2")]
    assert (tally.fetched, tally.rejected) == (3, 0)


def test_only_the_first_reasons_are_kept_but_every_rejection_is_counted():
    tally = Tally()
    parse_posts([post(i, title=None) for i in range(1, 11)], tally)
    assert tally.rejected == 10
    assert len(tally.reasons) == 3
    assert tally.summary().endswith("and 7 more")


def test_a_first_fetch_inserts_everything(db, settings):
    job = fetch_now(db, settings).job
    assert job.status == SUCCEEDED
    assert (job.fetched, job.inserted, job.updated, job.unchanged, job.rejected) == (100, 100, 0, 0, 0)
    assert job.error is None
    assert db.count_posts() == 100


def test_a_refetch_of_unchanged_data_writes_nothing(db, settings):
    fetch_now(db, settings)
    job = fetch_now(db, settings).job
    assert (job.inserted, job.updated, job.unchanged) == (0, 0, 100)


def test_a_changed_post_is_updated_and_never_duplicated(db, settings, upstream):
    fetch_now(db, settings)
    upstream.posts[4]["title"] = "edited upstream"
    job = fetch_now(db, settings).job
    assert (job.inserted, job.updated, job.unchanged) == (0, 1, 99)
    assert db.count_posts() == 100
    assert db.list_posts()[4].title == "edited upstream"


def test_invalid_records_are_counted_and_named_while_valid_ones_are_stored(db, settings, upstream):
    upstream.posts[0]["title"] = None
    upstream.posts[1]["userId"] = "two"
    job = fetch_now(db, settings).job
    assert job.status == SUCCEEDED
    assert (job.fetched, job.inserted, job.rejected) == (100, 98, 2)
    assert "'title' is missing" in job.error and "'userId' must be an integer" in job.error


def test_an_upstream_failure_fails_the_job_and_writes_nothing(db, settings, upstream):
    upstream.then_respond(500, {"error": "boom"})
    outcome = fetch_now(db, settings)
    assert outcome.job.status == FAILED
    assert outcome.job.error == "upstream answered HTTP 500"
    assert not outcome.timed_out
    assert db.count_posts() == 0


def test_a_failure_on_a_later_page_writes_nothing_from_that_fetch(db, upstream):
    settings = load({"UPSTREAM_URL": upstream.url + "?_page=1&_limit=40", "UPSTREAM_ATTEMPTS": "1"})
    fetch_now(db, settings)
    upstream.posts.append(post(101))
    upstream.then_respond(
        200, [post(1, title="changed"), post(102)], {"Link": f'<{upstream.url}?_page=2&_limit=40>; rel="next"'}
    )
    upstream.then_respond(503, {})
    job = fetch_now(db, settings).job
    assert job.status == FAILED
    assert db.count_posts() == 100
    assert db.list_posts()[0].title == "post 1 title"


def test_a_timeout_is_reported_as_one(db, settings, upstream):
    upstream.then_respond(200, [], delay=1.5)
    outcome = fetch_now(db, settings)
    assert outcome.job.status == FAILED
    assert outcome.timed_out
    assert "timed out" in outcome.job.error


def test_a_failure_before_the_last_attempt_leaves_the_job_running_for_a_retry(db, settings, upstream):
    job = db.create_job(FetchMode.TASK)
    upstream.then_respond(502, {})
    with pytest.raises(RetryLater, match="HTTP 502"):
        run_job(db, settings, job.job_id, last_attempt=False)
    assert db.get_job(job.job_id).status == JobStatus.RUNNING
    assert run_job(db, settings, job.job_id, last_attempt=False).job.status == SUCCEEDED


def test_a_finished_job_is_returned_untouched(db, settings, upstream):
    job = fetch_now(db, settings).job
    requests_before = upstream.requests
    assert run_job(db, settings, job.job_id).job == job
    assert upstream.requests == requests_before
