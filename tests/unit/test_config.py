import pytest

from aggregator.config import DEFAULT_UPSTREAM_URL, ConfigError, load


def test_defaults_when_nothing_is_set():
    settings = load({})
    assert settings.upstream_url == DEFAULT_UPSTREAM_URL
    assert settings.upstream_timeout == 10.0
    assert settings.queue_url == ""
    assert settings.aws_endpoint_url is None
    assert settings.max_receive_count == 3
    assert (settings.worker_timeout, settings.queue_visibility_timeout, settings.db_max_mb) == (60, 360, 1024)
    assert settings.store_backend == "sqlite"


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


def test_an_upstream_page_may_hold_a_64th_of_the_functions_memory():
    assert load({}).max_page_bytes == 8 * 2**20  # the template's 512 MB
    assert load({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}).max_page_bytes == 32 * 2**20


def test_a_sync_fetch_has_25_seconds_so_api_gateway_gets_its_answer_within_29():
    assert load({}).sync_fetch_budget == 25.0


def test_a_malformed_upstream_url_is_named_without_its_credentials():
    with pytest.raises(ConfigError, match="UPSTREAM_URL") as failure:
        load({"UPSTREAM_URL": "ftp://alice:s3cret@example.com/posts?api_key=k3y"})
    assert "s3cret" not in str(failure.value) and "k3y" not in str(failure.value)


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\r", "\x00", "\x7f", "\u00a0", "\u200b", "\u2028"])
def test_an_upstream_url_holding_whitespace_or_a_control_character_is_refused_without_its_secrets(space):
    url = f"http://user:secretpw@127.0.0.1:47012/po{space}sts?k=secretq"
    with pytest.raises(ConfigError) as failure:
        load({"UPSTREAM_URL": url})
    assert str(failure.value) == (
        f"UPSTREAM_URL must be a URL without whitespace or control characters; character 40 is U+{ord(space):04X}"
    )


def test_an_empty_endpoint_means_the_real_aws():
    assert load({"AWS_ENDPOINT_URL": ""}).aws_endpoint_url is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("UPSTREAM_URL", "ftp://example.com/posts", "UPSTREAM_URL"),
        ("UPSTREAM_URL", "not a url", "UPSTREAM_URL"),
        ("UPSTREAM_URL", "http:///posts", "UPSTREAM_URL"),
        ("UPSTREAM_URL", "http://example.com:99999/posts", "UPSTREAM_URL"),
        ("UPSTREAM_URL", "http://example.com:0/posts", "UPSTREAM_URL"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots", "whole number"),
        ("UPSTREAM_TIMEOUT", "ten", "UPSTREAM_TIMEOUT must be a number"),
        ("UPSTREAM_TIMEOUT", "0", "between"),
        ("UPSTREAM_TIMEOUT", "-1", "between"),
        ("UPSTREAM_TIMEOUT", "nan", "between"),
        ("UPSTREAM_TIMEOUT", "inf", "between"),
        ("UPSTREAM_TIMEOUT", "1e9", "between"),
        ("UPSTREAM_ATTEMPTS", "2.5", "whole number"),
        ("UPSTREAM_ATTEMPTS", "0", "between"),
        ("MAX_RECEIVE_COUNT", "three", "whole number"),
        ("WORKER_TIMEOUT", "0", "between"),
        ("QUEUE_VISIBILITY_TIMEOUT", "-5", "between"),
        ("DB_MAX_MB", "0.5", "whole number"),
        ("STORE_BACKEND", "postgres", "STORE_BACKEND must be one of sqlite, dynamodb, got 'postgres'"),
        ("STORE_BACKEND", "DynamoDB", "STORE_BACKEND must be one of"),
        ("STORE_BACKEND", "dynamodb", "POSTS_TABLE must name a DynamoDB table"),
    ],
)
def test_a_malformed_setting_is_named_in_the_error(name, value, says):
    with pytest.raises(ConfigError, match=says):
        load({name: value})


def test_with_dynamodb_both_tables_are_named():
    settings = load({"STORE_BACKEND": "dynamodb", "POSTS_TABLE": "app-Posts-1", "JOBS_TABLE": "app-Jobs-1"})
    assert (settings.store_backend, settings.posts_table, settings.jobs_table) == (
        "dynamodb",
        "app-Posts-1",
        "app-Jobs-1",
    )
    with pytest.raises(ConfigError, match="JOBS_TABLE must name a DynamoDB table"):
        load({"STORE_BACKEND": "dynamodb", "POSTS_TABLE": "app-Posts-1"})
