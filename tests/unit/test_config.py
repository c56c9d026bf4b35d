import pytest

from aggregator.config import DEFAULT_UPSTREAM_URL, ConfigError, load


def test_defaults_when_nothing_is_set():
    settings = load({})
    assert settings.upstream_url == DEFAULT_UPSTREAM_URL
    assert settings.upstream_timeout == 10.0
    assert settings.queue_url == ""
    assert settings.aws_endpoint_url is None
    assert settings.max_receive_count == 3


def test_values_come_from_the_environment():
    settings = load(
        {
            "UPSTREAM_URL": "http://127.0.0.1:8001/posts",
            "UPSTREAM_TIMEOUT": "2.5",
            "DB_PATH": "/mnt/data/x.db",
            "QUEUE_URL": "http://q/1/jobs.fifo",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "MAX_RECEIVE_COUNT": "5",
        }
    )
    assert settings.upstream_timeout == 2.5
    assert settings.db_path == "/mnt/data/x.db"
    assert settings.aws_endpoint_url == "http://127.0.0.1:5000"
    assert settings.max_receive_count == 5


def test_an_empty_endpoint_means_the_real_aws():
    assert load({"AWS_ENDPOINT_URL": ""}).aws_endpoint_url is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("UPSTREAM_URL", "ftp://example.com/posts", "UPSTREAM_URL"),
        ("UPSTREAM_URL", "not a url", "UPSTREAM_URL"),
        ("UPSTREAM_URL", "http:///posts", "UPSTREAM_URL"),
        ("UPSTREAM_TIMEOUT", "ten", "UPSTREAM_TIMEOUT must be a number"),
        ("UPSTREAM_TIMEOUT", "0", "between"),
        ("UPSTREAM_TIMEOUT", "-1", "between"),
        ("UPSTREAM_TIMEOUT", "nan", "between"),
        ("UPSTREAM_TIMEOUT", "inf", "between"),
        ("UPSTREAM_TIMEOUT", "1e9", "between"),
        ("UPSTREAM_ATTEMPTS", "2.5", "whole number"),
        ("UPSTREAM_ATTEMPTS", "0", "between"),
        ("MAX_RECEIVE_COUNT", "three", "whole number"),
    ],
)
def test_a_malformed_setting_is_named_in_the_error(name, value, says):
    with pytest.raises(ConfigError, match=says):
        load({name: value})
