"""The docs pages render in a real browser, headless and offline: Swagger UI and ReDoc list every operation."""

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.e2e
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
OPERATIONS = {  # each under its resource's tag
    "/data": ("tag/posts/operation/list_posts_data_get", "List stored posts"),
    "/fetch": ("tag/jobs/operation/fetch_fetch_post", "Fetch posts from the upstream"),
    "/fetch/status/{job_id}": ("tag/jobs/operation/job_status_fetch_status__job_id__get", "Read a fetch job's record"),
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
def test_swagger_ui_renders_every_operation_and_links_the_document(stack, tmp_path):
    dom = rendered(stack.url + "/docs", tmp_path)
    assert 'href="/openapi.json" rel="noopener noreferrer" class="link"><span class="url"> /openapi.json</span>' in dom
    for tag in ("posts", "jobs"):
        assert f'id="operations-tag-{tag}"' in dom
    for path, (_, summary) in OPERATIONS.items():
        assert f'class="opblock-summary-path" data-path="{path}"' in dom
        assert f'opblock-summary-description">{summary}' in dom


@pytest.mark.skipif(not BROWSER, reason="no Chromium found; .ci/run installs Debian's chromium")
def test_redoc_renders_every_operation(stack, tmp_path):
    dom = rendered(stack.url + "/redoc", tmp_path)
    for anchor, summary in OPERATIONS.values():
        assert f'href="#{anchor}" aria-label="{anchor}"></a>{summary}' in dom
