import time
from email.utils import formatdate

import pytest

from aggregator import upstream
from aggregator.upstream import UpstreamError, UpstreamTimeout, fetch_pages
from local.sample_upstream import SampleUpstream


@pytest.fixture
def server():
    with SampleUpstream(25) as s:
        yield s


def fetch(url, *, timeout=2.0, attempts=1, budget=10.0):
    return list(fetch_pages(url, timeout=timeout, attempts=attempts, budget=budget))


def test_a_plain_list_is_one_page(server):
    assert fetch(server.url) == [server.posts]  # every record as the server sent it, in one page


def test_link_next_is_followed_until_the_last_page(server):
    pages = fetch(server.url + "?_page=1&_limit=10")
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [p["id"] for page in pages for p in page] == list(range(1, 26))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("<html>maintenance</html>", "not JSON"),
        ('{"posts": []}', "JSON dict, expected a list"),
        ("42", "JSON int, expected a list"),
        ('[{"id": 1}, "two"]', "not a JSON object"),
        ('[{"id": 1}', "not JSON"),
        ("", "not JSON"),
    ],
)
def test_a_body_that_is_not_a_list_of_objects_fails(server, body, says):
    server.then_respond(200, body)
    with pytest.raises(UpstreamError, match=says):
        fetch(server.url)


def test_an_empty_list_is_a_valid_answer(server):
    server.then_respond(200, [])
    assert fetch(server.url) == [[]]


def test_a_client_error_is_not_retried(server):
    server.then_respond(404, {"error": "gone"})
    with pytest.raises(UpstreamError, match="HTTP 404"):
        fetch(server.url, attempts=3)
    assert server.requests == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_server_errors_are_retried(server, status):
    server.then_respond(status, {}, {"Retry-After": "0"})
    pages = fetch(server.url, attempts=2)
    assert len(pages[0]) == 25
    assert server.requests == 2


def test_retries_are_bounded(server):
    for _ in range(5):
        server.then_respond(503, {}, {"Retry-After": "0"})
    with pytest.raises(UpstreamError, match="HTTP 503"):
        fetch(server.url, attempts=3)
    assert server.requests == 3


def test_a_slow_upstream_times_out(server):
    server.then_respond(200, [], delay=1.0)
    with pytest.raises(UpstreamTimeout, match="timed out"):
        fetch(server.url, timeout=0.2)


def test_a_retry_that_would_overrun_the_budget_is_not_made(server):
    server.then_respond(503, {}, {"Retry-After": "5"})
    with pytest.raises(UpstreamError, match="HTTP 503"):
        fetch(server.url, attempts=3, budget=1.0)
    assert server.requests == 1


def test_an_unreachable_upstream_fails_with_a_reason():
    with pytest.raises(UpstreamError, match="unreachable"):
        fetch("http://127.0.0.1:9/posts")


def test_a_page_that_links_back_to_itself_stops(server):
    server.then_respond(200, [{"id": 1}], {"Link": f'<{server.url}>; rel="next"'})
    server.then_respond(200, [{"id": 2}], {"Link": f'<{server.url}>; rel="next"'})
    with pytest.raises(UpstreamError, match="loops back"):
        fetch(server.url)


def test_a_next_link_to_another_host_is_refused(server):
    server.then_respond(200, [], {"Link": '<http://169.254.169.254/latest/meta-data>; rel="next"'})
    with pytest.raises(UpstreamError, match="leaves its origin"):
        fetch(server.url)


def test_a_relative_next_link_is_resolved_against_the_page(server):
    server.then_respond(200, [{"id": 1}], {"Link": '</posts?_page=2&_limit=20>; rel="next"'})
    pages = fetch(server.url)
    assert [len(p) for p in pages] == [1, 5]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", upstream.MIN_DELAY_SECONDS),
        ("2", 2.0),
        ("3600", upstream.MAX_DELAY_SECONDS),
        ("-5", upstream.MIN_DELAY_SECONDS),
        ("nan", 0.7),
        ("soon", 0.7),
        (None, 0.7),
        (formatdate(time.time() - 60, usegmt=True), upstream.MIN_DELAY_SECONDS),
    ],
)
def test_retry_after_is_honoured_within_bounds(header, expected):
    assert upstream._retry_after(header, 0.7) == expected


def test_retry_after_as_an_http_date_counts_from_now():
    delay = upstream._retry_after(formatdate(time.time() + 4, usegmt=True), 0.7)
    assert 2.0 <= delay <= 4.0
