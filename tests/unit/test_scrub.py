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
            "ConnectionError: GET http://a:b@127.0.0.1:8080/x?t=1 then 'https://h/?s=2'",
            "ConnectionError: GET http://***@127.0.0.1:8080/x?t=*** then 'https://h/?s=***'",
        ),
        ("http://[::1/broken?key=k3y", "***"),
        ("no address here; user:pass is not a URL", "no address here; user:pass is not a URL"),
        ("https://api.example.com/posts", "https://api.example.com/posts"),
    ],
)
def test_a_url_keeps_its_scheme_host_and_path_and_loses_its_secrets(text, scrubbed):
    assert scrub(text) == scrubbed
