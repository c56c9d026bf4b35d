import base64
import json
import time
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest

from aggregator import upstream
from aggregator.upstream import UpstreamError, UpstreamTimeout, fetch_pages
from local.sample_upstream import SampleUpstream, make_posts
from tests.utils.hostile_upstream import (
    HostileUpstream,
    drip,
    http_response,
    self_signed_certificate,
    send,
    silence,
    unaccepted_address,
)


@pytest.fixture
def server():
    with SampleUpstream(25) as s:
        yield s


def fetch(url, *, timeout=2.0, attempts=1, budget=10.0, max_page_bytes=2**20):
    pages = fetch_pages(url, timeout=timeout, attempts=attempts, budget=budget, max_page_bytes=max_page_bytes)
    return [list(page) for page in pages]


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
        ('{"posts": []}', "a JSON object, expected a list"),
        ("42", "a JSON scalar, expected a list"),
        ('[{"id": 1}, "two"]', "not a JSON object"),
        ('[{"id": 1}', "not JSON"),
        ("", "not JSON"),
    ],
)
def test_a_body_that_is_not_a_list_of_objects_fails(server, body, says):
    server.then_respond(200, body)
    with pytest.raises(UpstreamError, match=says):
        fetch(server.url)


DEEP = 100_000


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * DEEP + b"]" * DEEP, "not a JSON object"),
        (b'[{"id": 1, "deep": ' + b"[" * DEEP + b"]" * DEEP + b"}]", "nests too deeply"),
        (b'[{"id": 1}, ' + b'{"a": ' * DEEP, "nests too deeply"),
        (b'{"a": ' + b"[" * DEEP, "a JSON object, expected a list"),
        (b'"' + b"x" * 100_000 + b'"', "a JSON string, expected a list"),
        ('[{"id": 1}]'.encode("utf-16"), "not JSON"),
        (b'[{"id": 1}] and more', "more follows the list"),
        (b'[{"id": 1}]]', "more follows the list"),
        (b'[{"id": 1},]', "not a JSON object"),
        (b'[{"id": 1} {"id": 2}]', "expected ',' or ']'"),
        (b'[{"id": 1}, {"id": }]', "not JSON: expecting a value"),
        (b'[{"id": 1}, {"id": \xff}]', "not JSON"),
        (b'[{"id": "unterminated}]', "not JSON"),
        (b"[", "the list is unfinished"),
        (b'[{"id": 1},', "the list is unfinished"),
        (b"\x00\x00\x00[", "not JSON"),
    ],
)
def test_an_odd_body_fails_the_page_with_a_clean_reason(server, body, says):
    server.then_respond(200, body)
    with pytest.raises(UpstreamError, match=says) as failure:
        fetch(server.url)
    assert len(str(failure.value)) < 200


def test_a_page_larger_than_its_budget_fails_before_it_is_read_whole(server):
    server.then_respond(200, b"[" + b" " * 2_000 + b"]")
    with pytest.raises(UpstreamError, match="larger than 1000 bytes"):
        fetch(server.url, max_page_bytes=1000)


def test_a_page_without_a_length_is_cut_at_its_budget_too():
    body = b"[" + b" " * 100_000 + b"]"
    server = HostileUpstream(send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body))
    with server, pytest.raises(UpstreamError, match="larger than 1000 bytes"):
        fetch(server.url, max_page_bytes=1000)


def test_a_body_cut_short_is_an_error_not_a_shorter_page():
    response = http_response(body=json.dumps(make_posts(5)).encode())
    server = HostileUpstream(send(response[:-20]))
    with server, pytest.raises(UpstreamError, match="IncompleteRead"):
        fetch(server.url)


def test_a_compressed_body_that_was_not_asked_for_fails_cleanly(server):
    server.then_respond(200, b"\x1f\x8b...", {"Content-Encoding": "gzip"})
    with pytest.raises(UpstreamError, match="gzip-encoded body, which was not asked for"):
        fetch(server.url)


def test_a_byte_order_mark_is_allowed(server):
    server.then_respond(200, b"\xef\xbb\xbf" + json.dumps(make_posts(2)).encode())
    assert [len(p) for p in fetch(server.url)] == [2]


def test_records_are_decoded_one_at_a_time(server):
    server.then_respond(200, b'[{"id": 1}, {"id": 2}, oops]')
    [page] = fetch_pages(server.url, timeout=2, attempts=1, budget=10, max_page_bytes=1000)
    assert next(page) == {"id": 1}
    assert next(page) == {"id": 2}
    with pytest.raises(UpstreamError, match="not a JSON object"):
        next(page)


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
        ("Wed, 21 Oct 2015 07:28:00 GMT", upstream.MIN_DELAY_SECONDS),  # a date long past
    ],
)
def test_retry_after_is_honoured_within_bounds(header, expected):
    assert upstream._retry_after(header, 0.7) == expected


def test_retry_after_as_an_http_date_counts_from_now():
    delay = upstream._retry_after(formatdate(time.time() + 4, usegmt=True), 0.7)
    assert 2.0 <= delay <= 4.0


# Deadlines: the whole fetch ends within its budget, however slowly the upstream drips.

SLACK = 1.5  # seconds past a budget for threads to wake and sockets to close on a busy machine


def head_length(response: bytes) -> int:
    return response.index(b"\r\n\r\n") + 4


def ends_within(budget: float, **hostile):
    """Fetch from a hostile upstream with a per-read timeout longer than the budget: the budget must end it."""
    with HostileUpstream(*hostile.values()) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=f"ran out of its {budget:g} s budget") as failure:
            fetch(server.url, timeout=30, attempts=3, budget=budget)
        took = time.monotonic() - started
    assert took < budget + SLACK
    return failure.value


def test_a_status_line_and_headers_dripped_a_byte_at_a_time_end_at_the_budget():
    ends_within(1.0, answer=drip(http_response(body=b"[]"), every=0.05))


def test_a_body_dripped_a_byte_at_a_time_ends_at_the_budget():
    response = http_response(body=json.dumps(make_posts(5)).encode())
    ends_within(1.0, answer=drip(response, every=0.05, after=head_length(response)))


def test_a_body_without_a_length_dripped_until_the_upstream_closes_ends_at_the_budget():
    response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + json.dumps(make_posts(5)).encode()
    ends_within(1.0, answer=drip(response, every=0.05, after=head_length(response)))


def test_an_upstream_that_accepts_and_says_nothing_ends_at_the_budget():
    ends_within(1.0, answer=silence())


def test_a_connection_that_is_never_accepted_ends_at_the_budget():
    listener, queued, url = unaccepted_address()
    with listener, queued:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="budget"):
            fetch(url, timeout=30, budget=1.0)
    assert time.monotonic() - started < 1.0 + SLACK


def test_retries_and_their_back_off_stay_within_the_budget():
    with HostileUpstream(send(http_response(503, b"{}", {"Retry-After": "0.3"}))) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="HTTP 503"):
            fetch(server.url, timeout=30, attempts=10, budget=1.5)
    assert time.monotonic() - started < 1.5 + SLACK
    assert 2 <= server.connections < 10


def test_each_page_may_be_quick_yet_the_pages_together_end_at_the_budget():
    with SampleUpstream(1000) as server:
        server.delay = 0.2
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="budget"):
            fetch(server.url + "?_page=1&_limit=10", timeout=30, budget=1.0)
    assert time.monotonic() - started < 1.0 + SLACK


def test_decoding_a_page_is_within_the_budget_too():
    page = b"[" + b",".join([b"{}"] * 3_000_000) + b"]"
    with HostileUpstream(send(http_response(body=page))) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="budget"):
            fetch(server.url, timeout=30, budget=0.5, max_page_bytes=len(page))
    assert time.monotonic() - started < 0.5 + SLACK


def test_each_wait_for_bytes_is_also_bounded_by_the_timeout():
    with HostileUpstream(silence()) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"timed out after 0\.3 s"):
            fetch(server.url, timeout=0.3, budget=20)
    assert time.monotonic() - started < 0.3 + SLACK


def test_a_tls_handshake_that_never_comes_ends_at_the_budget():
    with HostileUpstream(silence()) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="budget"):
            fetch(server.url.replace("http://", "https://"), timeout=30, budget=1.0)
    assert time.monotonic() - started < 1.0 + SLACK


# HTTPS: the certificate is verified against the system's authorities (here, one the test trusts).


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    cert_file, key_file = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    return cert_file, key_file


def test_a_page_is_fetched_over_https(certificate):
    with HostileUpstream(send(http_response(body=json.dumps(make_posts(3)).encode())), tls=certificate) as server:
        assert [len(page) for page in fetch(server.url)] == [3]
    assert server.requests[0].startswith(b"GET /posts HTTP/1.1")


def test_a_certificate_that_is_not_trusted_fails_the_fetch(certificate, monkeypatch, tmp_path):
    (tmp_path / "other").mkdir()
    another, _ = self_signed_certificate(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(another))
    server = HostileUpstream(send(http_response(body=b"[]")), tls=certificate)
    with server, pytest.raises(UpstreamError, match="unreachable: SSLCertVerificationError"):
        fetch(server.url)


# Redirects obey the same-origin rule that Link pagination obeys.


def test_a_redirect_within_the_origin_is_followed(server):
    server.then_respond(302, "", {"Location": "/posts?_page=1&_limit=10"})
    pages = fetch(server.url)
    assert [len(p) for p in pages] == [10, 10, 5]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_port_is_refused_and_never_followed(server, status):
    with SampleUpstream(3) as other:
        server.then_respond(status, "", {"Location": other.url + "?token=abc"})
        with pytest.raises(UpstreamError, match="redirected to another origin") as failure:
            fetch(server.url)
        assert other.requests == 0
    assert str(failure.value) == "upstream redirected to another origin"
    assert "token=***" in failure.value.detail and "abc" not in failure.value.detail


@pytest.mark.parametrize("location", ["http://localhost:{port}/posts", "https://127.0.0.1:{port}/posts", "ftp://x/"])
def test_a_redirect_to_another_host_or_scheme_is_refused(server, location):
    server.then_respond(302, "", {"Location": location.format(port=urlsplit(server.url).port)})
    with pytest.raises(UpstreamError, match="redirected to another origin"):
        fetch(server.url)
    assert server.requests == 1


def test_redirects_are_bounded(server):
    for _ in range(10):
        server.then_respond(302, "", {"Location": "/posts"})
    with pytest.raises(UpstreamError, match="redirected more than 5 times"):
        fetch(server.url)
    assert server.requests == 6


def test_a_next_link_to_another_port_is_refused(server):
    with SampleUpstream(3) as other:
        server.then_respond(200, [], {"Link": f'<{other.url}>; rel="next"'})
        with pytest.raises(UpstreamError, match="leaves its origin"):
            fetch(server.url)
        assert other.requests == 0


# Secrets written into the URL are used, and named nowhere.


def test_credentials_in_the_url_are_sent_as_basic_auth():
    with HostileUpstream(send(http_response(body=b"[]"))) as server:
        fetch(server.url.replace("http://", "http://alice:s3cr%40t@"))
    assert f"Authorization: Basic {base64.b64encode(b'alice:s3cr@t').decode()}".encode() in server.requests[0]


def test_no_error_names_the_credentials_or_the_query_of_the_url(server):
    url = server.url.replace("http://", "http://alice:s3cret@") + "?api_key=k3y"
    server.then_respond(200, [], {"Link": f'<{url}>; rel="next"'})  # the page links back to itself
    with pytest.raises(UpstreamError, match="loops back") as failure:
        fetch(url)
    said = str(failure.value) + failure.value.detail
    assert "s3cret" not in said and "k3y" not in said and "alice" not in said
    assert "***@127.0.0.1" in failure.value.detail and "api_key=***" in failure.value.detail
