"""The browsable API and CORS in a real browser: Debian's headless Chromium, driven by playwright,
against the real server (started with --enable_docs_url and --cors-allowed-origins).

- /docs and /redoc render from the server alone: every host but 127.0.0.1 is unresolvable, every
  proxied request goes to a dead port, and playwright aborts (and records) any request that is not
  for the server; none may be made. Swagger UI's "Try it out" runs a V2 infer and shows 200. The
  screenshots are kept under the test's tmp folder (the path is printed).
- CORS: pages served from two other local origins call the API with fetch(); the allowed origin
  gets the answer and may read its headers, the other gets a network error, as the Fetch standard
  has a browser refuse it.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, free_port, start_server

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)
MODEL = "review-sentiment"


class Page(http.server.ThreadingHTTPServer):
    """A page of its own origin (http://127.0.0.1:<port>), as another web application would be."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's name
                body = b"<!doctype html><title>another application</title><p>calling the model server</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def pages():
    allowed, other = Page(), Page()
    yield allowed, other
    for page in (allowed, other):
        page.shutdown()
        page.server_close()


@pytest.fixture(scope="module")
def docs_server(pages, demo_models, tmp_path_factory):
    allowed, _ = pages
    running = start_server(["--model_dir", str(MODELS_DIR / MODEL), "--model_name", MODEL, "--enable_docs_url", "true",
                            "--cors-allowed-origins", allowed.origin],
                           tmp_path_factory.mktemp("docs-server") / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (tools/install_system_deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            # the network limited to this machine's loopback: no name resolves, proxied requests go nowhere
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
        ])  # playwright gives each context a fresh profile (user data dir)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def offline_page(browser, server):
    """A page whose requests may only go to `server`: any other is aborted and recorded, and none may
    have been made when the test is done with the page."""
    context = browser.new_context(viewport={"width": 1280, "height": 1800})
    page = context.new_page()
    elsewhere: list[str] = []

    def only_the_server(route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    try:
        yield page
    finally:
        context.close()
    assert elsewhere == [], f"the page asked for more than the server: {elsewhere}"


def keep_screenshot(page, folder: Path, name: str) -> None:
    """The page as it is now, kept as the test's artifact (its path printed)."""
    screenshot = folder / name
    page.screenshot(path=str(screenshot))
    print(f"screenshot: {screenshot}")


def test_swagger_ui_renders_offline_and_try_it_out_answers_200(browser, docs_server, tmp_path):
    with offline_page(browser, docs_server) as page:
        page.goto(f"{docs_server.url}/docs")
        page.wait_for_selector(".opblock", timeout=60_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        for path in ("/v2/models/{model_name}/infer", "/openai/v1/embeddings", "/v2/repository/index"):
            assert any(path in s.replace("\u200b", "") for s in summaries), (path, summaries)
        infer = page.locator(".opblock-post", has_text="/v2/models/{model_name}/infer").first
        infer.locator(".opblock-summary").click()
        try_it = infer.locator("button.try-out__btn")
        if try_it.inner_text().strip() == "Try it out":  # open already where tryItOutEnabled applies
            try_it.click()
        assert infer.locator("input[placeholder='model_name']").input_value() == MODEL  # the served model's name
        infer.locator("button.execute").click()
        status = infer.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for(timeout=60_000)
        assert status.inner_text().strip() == "200"
        assert '"model_name": "review-sentiment"' in infer.locator(".live-responses-table .microlight").first.inner_text()
        infer.locator(".live-responses-table").scroll_into_view_if_needed()
        keep_screenshot(page, tmp_path, "swagger-ui-try-it-out.png")


def test_redoc_renders_offline(browser, docs_server, tmp_path):
    with offline_page(browser, docs_server) as page:
        page.goto(f"{docs_server.url}/redoc")
        # ReDoc renders each operation as a section headed by its summary
        page.locator("h2", has_text="Create embeddings (OpenAI-compatible)").first.wait_for(timeout=60_000)
        assert page.locator("h2", has_text="Infer").count() >= 1
        keep_screenshot(page, tmp_path, "redoc.png")


CALL = """async ([url, body]) => {
    try {
        const reply = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body});
        return {status: reply.status, body: await reply.json(), requestId: reply.headers.get("x-request-id"),
                timing: reply.headers.get("server-timing")};
    } catch (error) {
        return {error: String(error)};
    }
}"""


def test_cors_from_a_page_of_another_origin(browser, docs_server, pages):
    allowed, other = pages
    body = '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Tasty and fresh."]}]}'
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(allowed.origin)  # a JSON POST: the browser sends a preflight first
        answer = page.evaluate(CALL, [f"{docs_server.url}/v2/models/{MODEL}/infer", body])
        assert answer.get("status") == 200, answer
        assert answer["body"]["model_name"] == MODEL and answer["requestId"]  # exposed headers are readable
        assert "total;dur=" in answer["timing"]
        error = page.evaluate(CALL, [f"{docs_server.url}/v2/models/no-such-model/infer", body])
        assert error.get("status") == 404 and "no-such-model" in error["body"]["error"]  # refusals are readable too
        page.goto(other.origin)
        refused = page.evaluate(CALL, [f"{docs_server.url}/v2/models/{MODEL}/infer", body])
        assert "status" not in refused and "Failed to fetch" in refused["error"], refused
    finally:
        context.close()


def test_cors_is_off_without_the_flag(browser, server, pages):
    """The shared server runs without --cors-allowed-origins: no page of another origin may call it."""
    allowed, _ = pages
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(allowed.origin)
        refused = page.evaluate(CALL, [f"{server.url}/v2/models/{MODEL}/infer", '{"inputs": []}'])
        assert "Failed to fetch" in refused.get("error", ""), refused
    finally:
        context.close()
