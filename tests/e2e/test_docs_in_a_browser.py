"""The docs pages render in a real browser, headless and offline: Swagger UI and ReDoc list every operation."""

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.e2e
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
OPERATIONS = {
    "/data": ("list_posts_data_get", "List stored posts"),
    "/fetch": ("fetch_fetch_post", "Fetch posts from the upstream"),
    "/fetch/status/{job_id}": ("job_status_fetch_status__job_id__get", "Read a fetch job's record"),
}


def rendered(url: str, tmp_path) -> str:
    """The page's DOM after its scripts ran; the browser may reach nothing but loopback."""
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        f"--user-data-dir={tmp_path}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(not BROWSER, reason="no Chromium found; .ci/run installs Debian's chromium")
def test_swagger_ui_renders_every_operation(stack, tmp_path):
    dom = rendered(stack.url + "/docs", tmp_path)
    for path, (_, summary) in OPERATIONS.items():
        assert f'class="opblock-summary-path" data-path="{path}"' in dom
        assert f'opblock-summary-description">{summary}' in dom


@pytest.mark.skipif(not BROWSER, reason="no Chromium found; .ci/run installs Debian's chromium")
def test_redoc_renders_every_operation(stack, tmp_path):
    dom = rendered(stack.url + "/redoc", tmp_path)
    for operation_id, summary in OPERATIONS.values():
        assert f'href="#operation/{operation_id}" aria-label="operation/{operation_id}"></a>{summary}' in dom
