import itertools
import json
import threading
import time
from dataclasses import replace

import pytest

from aggregator import jobs
from aggregator.config import load
from aggregator.ingest import (
    FINISH_MARGIN_SECONDS,
    RetryLater,
    Tally,
    fetch_budget,
    fetch_now,
    parse_posts,
    run_job,
)
from aggregator.models import ClaimOutcome, FetchMode, JobStatus
from tests.helpers import LEASE_SECONDS, STORE_FREE, queued_job
from tests.utils.hostile_upstream import HostileUpstream, drip, http_response

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
    items = list(parse_posts([post(7), record], tally))
    assert items[0] == (7, 1, "t7", "b7") and all(type(item) is int for item in items[1:])
    assert tally.rejected == 1
    assert reason in tally.reasons[0]
    assert tally.reasons[0].startswith("record 2:")


def test_extra_fields_are_ignored_and_the_last_duplicate_wins(db, settings, upstream):
    upstream.then_respond(200, [post(1, extra="x"), post(2), post(1, title="second")])
    job = fetch_now(db, settings, seconds_left=30).job
    assert [(p.id, p.title) for p in db.list_posts()] == [(1, "second"), (2, "t2")]
    assert (job.fetched, job.inserted, job.rejected) == (3, 2, 0)


def test_a_rejected_record_keeps_its_post_by_id_and_one_without_a_readable_id_makes_the_fetch_incomplete():
    tally = Tally()
    assert list(parse_posts([post(1, title=None), post(3)], tally)) == [1, (3, 1, "t3", "b3")]
    assert tally.end().complete
    list(parse_posts([post(2, id="2")], tally))
    assert (tally.rejected, tally.unidentified, tally.end().complete) == (2, 1, False)


def test_only_the_first_reasons_are_kept_but_every_rejection_is_counted():
    tally = Tally()
    list(parse_posts([post(i, title=None) for i in range(1, 11)], tally))
    assert tally.rejected == 10
    assert len(tally.reasons) == 3
    assert tally.summary().endswith("and 7 more")


def test_a_first_fetch_inserts_everything(db, settings):
    job = fetch_now(db, settings, seconds_left=30).job
    assert job.status == SUCCEEDED
    assert (job.fetched, job.inserted, job.updated, job.unchanged, job.rejected) == (100, 100, 0, 0, 0)
    assert job.error is None
    assert db.count_posts() == 100


def test_a_refetch_of_unchanged_data_writes_nothing(db, settings):
    fetch_now(db, settings, seconds_left=30)
    job = fetch_now(db, settings, seconds_left=30).job
    assert (job.inserted, job.updated, job.unchanged) == (0, 0, 100)


def test_a_changed_post_is_updated_and_never_duplicated(db, settings, upstream):
    fetch_now(db, settings, seconds_left=30)
    upstream.posts[4]["title"] = "edited upstream"
    job = fetch_now(db, settings, seconds_left=30).job
    assert (job.inserted, job.updated, job.unchanged) == (0, 1, 99)
    assert db.count_posts() == 100
    assert db.list_posts()[4].title == "edited upstream"


def test_invalid_records_are_counted_and_named_while_valid_ones_are_stored(db, settings, upstream):
    upstream.posts[0]["title"] = None
    upstream.posts[1]["userId"] = "two"
    job = fetch_now(db, settings, seconds_left=30).job
    assert job.status == SUCCEEDED
    assert (job.fetched, job.inserted, job.rejected) == (100, 98, 2)
    assert "'title' is missing" in job.error and "'userId' must be an integer" in job.error


def test_an_upstream_failure_fails_the_job_and_writes_nothing(db, settings, upstream):
    upstream.then_respond(500, {"error": "boom"})
    outcome = fetch_now(db, settings, seconds_left=30)
    assert outcome.job.status == FAILED
    assert outcome.job.error == "upstream answered HTTP 500"
    assert not outcome.timed_out
    assert db.count_posts() == 0


def test_a_failure_on_a_later_page_writes_nothing_from_that_fetch(db, upstream):
    settings = load({"UPSTREAM_URL": upstream.url + "?_page=1&_limit=40", "UPSTREAM_ATTEMPTS": "1"})
    fetch_now(db, settings, seconds_left=30)
    upstream.posts.append(post(101))
    upstream.then_respond(
        200, [post(1, title="changed"), post(102)], {"Link": f'<{upstream.url}?_page=2&_limit=40>; rel="next"'}
    )
    upstream.then_respond(503, {})
    job = fetch_now(db, settings, seconds_left=30).job
    assert job.status == FAILED
    assert db.count_posts() == 100
    assert db.list_posts()[0].title == "post 1 title"


def test_a_timeout_is_reported_as_one(db, settings, upstream):
    upstream.then_respond(200, [], delay=1.5)
    outcome = fetch_now(db, settings, seconds_left=30)
    assert outcome.job.status == FAILED
    assert outcome.timed_out
    assert "timed out" in outcome.job.error


def test_a_failure_before_the_last_attempt_leaves_the_job_running_for_a_retry(db, settings, upstream):
    job = queued_job(db)
    upstream.then_respond(502, {})
    with pytest.raises(RetryLater, match="HTTP 502"):
        run_job(db, settings, job.job_id, budget=10, lease_seconds=LEASE_SECONDS, last_attempt=False)
    assert db.get_job(job.job_id).status == JobStatus.RUNNING
    assert (
        run_job(db, settings, job.job_id, budget=10, lease_seconds=LEASE_SECONDS, last_attempt=False).job.status
        == SUCCEEDED
    )


def test_a_finished_job_is_returned_untouched(db, settings, upstream):
    job = fetch_now(db, settings, seconds_left=30).job
    requests_before = upstream.requests
    assert run_job(db, settings, job.job_id, budget=10, lease_seconds=LEASE_SECONDS).job == job
    assert upstream.requests == requests_before


def fields(**changes) -> bytes:
    """The JSON text of post 2, with fields replaced by raw JSON text."""
    raw = {"id": b"2", "userId": b"1", "title": b'"t2"', "body": b'"b2"'} | changes
    return b"{" + b", ".join(b'"%s": %s' % (name.encode(), value) for name, value in raw.items()) + b"}"


@STORE_FREE  # a record is refused as it is read; test_invalid_records_... stores the others on each backend
@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (fields(extra=b"1" * 5000), "an integer has more than 4300 digits"),
        (fields(id=b"9" * 5000), "an integer has more than 4300 digits"),
        (fields(id=b"9" * 40), "'id' must be between 1 and"),
        (fields(id=b"NaN"), "NaN is not JSON"),
        (fields(extra=b"-Infinity"), "-Infinity is not JSON"),
        (fields(id=b"1e999"), "'id' must be an integer"),
        (fields(id=b"2.0"), "'id' must be an integer"),
        (fields(extra=b'{"id": 3, "id": 4}'), "the key 'id' appears twice in one object"),
        (fields(body=b'"bad \xff byte"'), "'body' is not valid unicode"),
        (fields(title=b'"raw \x01 control"'), "Invalid control character"),
        (fields(body=b'"' + b"x" * 600_000 + b'"'), "longer than 500000 characters"),
        (fields(body=b'"\\ud800"'), "'body' is not valid unicode"),
        (fields(userId=b"[" * 50 + b"]" * 50), "'userId' must be an integer"),
    ],
)
def test_an_odd_record_is_rejected_alone_and_the_others_are_stored(db, settings, upstream, record, reason):
    upstream.then_respond(200, b"[" + fields(id=b"1") + b", " + record + b",\n" + fields(id=b"3") + b"]")
    job = fetch_now(db, settings, seconds_left=30).job
    assert job.status == SUCCEEDED
    assert (job.fetched, job.inserted, job.rejected) == (3, 2, 1)
    assert job.error.startswith("1 record(s) rejected: record 2: ") and reason in job.error
    assert [p.id for p in db.list_posts()] == [1, 3]


def test_a_key_given_twice_in_a_record_rejects_it_whatever_the_key(db, settings, upstream):
    upstream.then_respond(200, b'[{"id": 1, "userId": 1, "title": "t", "body": "b", "title": "u"}]')
    job = fetch_now(db, settings, seconds_left=30).job
    assert job.rejected == 1 and "the key 'title' appears twice" in job.error


def test_the_fetch_budget_keeps_a_margin_to_record_the_outcome_and_a_cap():
    assert fetch_budget(60.0) == 60.0 - FINISH_MARGIN_SECONDS
    assert fetch_budget(29.0, 25.0) == 25.0
    assert fetch_budget(10.0, 25.0) == 10.0 - FINISH_MARGIN_SECONDS
    assert fetch_budget(1.0) == 0.0


def dripping(seconds: float = 30.0):
    response = http_response(body=json.dumps([post(1)]).encode())
    return HostileUpstream(drip(response, every=seconds / len(response)))


def test_a_sync_fetch_ends_within_the_budget_its_settings_give(db):
    with dripping() as server:
        settings = replace(load({"UPSTREAM_URL": server.url, "UPSTREAM_TIMEOUT": "20"}), sync_fetch_budget=1.0)
        started = time.monotonic()
        outcome = fetch_now(db, settings, seconds_left=30)
    assert time.monotonic() - started < 1.0 + 1.5
    assert outcome.timed_out and outcome.job.status == FAILED
    assert outcome.job.error == "upstream fetch ran out of its 1 s budget"


def test_a_sync_fetch_ends_early_enough_to_record_its_outcome_when_the_invocation_is_short(db):
    with dripping() as server:
        settings = load({"UPSTREAM_URL": server.url, "UPSTREAM_TIMEOUT": "20"})
        outcome = fetch_now(db, settings, seconds_left=FINISH_MARGIN_SECONDS + 1.0)
    assert outcome.job.error == "upstream fetch ran out of its 1 s budget"


def test_the_job_error_and_the_logs_never_carry_credentials_of_the_url(db, upstream, log_lines):
    url = upstream.url.replace("http://", "http://alice:s3cret@") + "?api_key=k3y"
    upstream.then_respond(200, [post(1)], {"Link": f'<{url}>; rel="next"'})
    upstream.then_respond(200, [post(2)], {"Link": f'<{url}>; rel="next"'})
    job = fetch_now(db, load({"UPSTREAM_URL": url, "UPSTREAM_ATTEMPTS": "1"}), seconds_left=30).job
    assert job.error == "upstream pagination loops back to a page it already sent"
    logs = json.dumps(log_lines())
    assert "fetch failed" in logs and "api_key=***" in logs
    assert "s3cret" not in logs and "k3y" not in logs


def paged(upstream, page_size=10):
    return load({"UPSTREAM_URL": f"{upstream.url}?_page=1&_limit={page_size}", "UPSTREAM_ATTEMPTS": "1"})


def in_a_thread(action):
    thread = threading.Thread(target=action)
    thread.start()
    return thread


def test_a_post_gone_upstream_is_deleted_and_counted(db, settings, upstream):
    fetch_now(db, settings, seconds_left=30)
    del upstream.posts[10:13]
    job = fetch_now(db, settings, seconds_left=30).job
    assert (job.status, job.deleted, job.unchanged) == (SUCCEEDED, 3, 97)
    assert [p.id for p in db.list_posts()][9:12] == [10, 14, 15]


def test_a_post_whose_record_turns_invalid_is_kept_as_it_was(db, settings, upstream):
    fetch_now(db, settings, seconds_left=30)
    upstream.posts[0]["title"] = None
    job = fetch_now(db, settings, seconds_left=30).job
    assert (job.rejected, job.deleted) == (1, 0)
    assert db.list_posts()[0].title == "post 1 title"


def test_a_record_without_a_readable_id_stops_every_deletion(db, settings, upstream):
    fetch_now(db, settings, seconds_left=30)
    upstream.posts[0]["id"] = "one"  # this may be post 1, which then only seems gone
    del upstream.posts[50:]
    job = fetch_now(db, settings, seconds_left=30).job
    assert (job.status, job.rejected, job.deleted) == (SUCCEEDED, 1, 0)
    assert db.count_posts() == 100


def test_a_failed_fetch_deletes_nothing(db, upstream):
    settings = paged(upstream, 40)
    fetch_now(db, settings, seconds_left=30)
    upstream.then_respond(200, [post(1)], {"Link": f'<{upstream.url}?_page=2&_limit=40>; rel="next"'})
    upstream.then_respond(500, {})
    assert fetch_now(db, settings, seconds_left=30).job.status == FAILED
    assert db.count_posts() == 100


def test_progress_is_written_as_pages_arrive(db, open_db, upstream):
    upstream.delay = 0.15
    seen = set()
    fetch = in_a_thread(lambda: fetch_now(open_db(), paged(upstream), seconds_left=30))
    watcher = open_db()
    while fetch.is_alive():
        seen |= {(j.status, j.fetched, j.pages) for j in watcher.list_jobs()}
        time.sleep(0.02)
    fetch.join()
    [job] = watcher.list_jobs()
    assert (job.fetched, job.pages) == (100, 10)
    during = {(fetched, pages) for status, fetched, pages in seen if status == JobStatus.RUNNING}
    assert any(0 < fetched < 100 and 0 < pages < 10 for fetched, pages in during), during
    assert all(fetched == 10 * pages for fetched, pages in during)


def test_a_job_given_up_on_while_it_fetches_stops_and_writes_nothing(db, open_db, upstream):
    fetch_now(db, paged(upstream), seconds_left=30)
    for record in upstream.posts:
        record["title"] = "late"
    upstream.delay = 0.15
    results = []
    fetch = in_a_thread(lambda: results.append(fetch_now(open_db(), paged(upstream), seconds_left=29)))
    other = open_db()
    deadline = time.monotonic() + 10
    while not any(j.status == JobStatus.RUNNING for j in other.list_jobs()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    [running] = [j for j in other.list_jobs() if j.status == JobStatus.RUNNING]
    given_up = other.fail_job(running.job_id, "abandoned: given up by a test")
    fetch.join()
    assert results[0].given_up and results[0].job == given_up
    assert upstream.requests < 20  # it stopped at its next progress write, not after every page
    assert {p.title for p in db.list_posts()} == {f"post {i} title" for i in range(1, 101)}


def test_progress_is_written_at_most_once_a_second(db, upstream, monkeypatch):
    upstream.delay = 0.1
    written_at = []
    record_progress = db.record_progress
    monkeypatch.setattr(db, "record_progress", lambda *a: (written_at.append(time.monotonic()), record_progress(*a)))
    assert fetch_now(db, paged(upstream), seconds_left=30).job.pages == 10
    assert written_at and all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(written_at))


def test_a_sync_job_is_given_up_once_its_invocation_would_have_ended(db, open_db, upstream, monkeypatch):
    monkeypatch.setattr(jobs, "LEASE_MARGIN_SECONDS", -29.7)  # the lease ends 0.3 s into a 30 s invocation
    upstream.delay = 1.0
    results = []
    opened = threading.Event()

    def fetch_in_an_invocation():
        store = open_db()
        opened.set()  # the clock starts here, not while a client is made
        results.append(fetch_now(store, paged(upstream), seconds_left=30))

    fetch = in_a_thread(fetch_in_an_invocation)
    opened.wait()
    time.sleep(0.5)
    later = jobs.claim(db, load({}), FetchMode.TASK, lease_seconds=60)
    fetch.join()
    assert later.outcome == ClaimOutcome.STARTED
    assert results[0].given_up and results[0].job.error == "abandoned: the request running it ended before it finished"
    assert db.count_posts() == 0
