import pytest

from aggregator.scrub import scrub


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("https://alice:s3cret@api.example.com/posts", "https://***@api.example.com/posts"),
        ("https://token@api.example.com/posts", "https://***@api.example.com/posts"),
        ("https://api.example.com/posts?api_key=k3y&_page=2", "https://api.example.com/posts?api_key=***&_page=***"),
        ("https://api.example.com/posts?k3y", "https://api.example.com/posts?***"),
        ("https://api.example.com/posts#access_token=k3y", "https://api.example.com/posts"),
        (
            "ConnectionError: GET http://a:b@127.0.0.1:8080/x then 'https://h/'",
            "ConnectionError: GET http://***@127.0.0.1:8080/x then 'https://h/'",
        ),
        # Once a query begins, it runs to the end of the text: whitespace, quotes and other URLs do not end it.
        ("GET http://a:b@127.0.0.1:8080/x?t=1 then 'https://h/?s=2'", "GET http://***@127.0.0.1:8080/x?t=***"),
        ("http://user:secretpw@127.0.0.1:47012/po sts?k=secretq", "http://***@127.0.0.1:47012/po sts?k=***"),
        ("http://h/p?k=secret q&x=y z", "http://h/p?k=***&x=***"),
        ("GET http://h/p?k=sec\tret\nq (after 1 s)", "GET http://h/p?k=***"),
        ("http://h/login?next=http://x/&token=secret", "http://h/login?next=***&token=***"),
        # User info runs to the last `@` before the query, whitespace and `/` included.
        ("http://user:secret pw@h/p", "http://***@h/p"),
        ("http://user:pa/ss@host/posts", "http://***@host/posts"),
        ("http://[::1/broken?key=k3y", "http://[::1/broken?key=***"),
        ("no address here; user:pass is not a URL", "no address here; user:pass is not a URL"),
        ("https://api.example.com/posts", "https://api.example.com/posts"),
    ],
)
def test_a_url_keeps_its_scheme_host_and_path_and_loses_its_secrets(text, scrubbed):
    assert scrub(text) == scrubbed
