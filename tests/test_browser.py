"""The page in a real browser: headless Chromium (Debian's, driven by Playwright) uploads an
example, presses Submit and reads the same text TextRecognizer gives; an empty submit shows the
friendly message. Skips when Chromium is missing, except in CI (CI set), where that fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from lab_code.recognizer import TextRecognizer
from lab_code.serving import app, ports

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


def _need_browser() -> None:
    missing = None
    if not CHROMIUM.is_file():
        missing = f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed: pip install playwright"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but {missing}")
        pytest.skip(missing)


def _local_only(route) -> None:
    """Let the page load from the app on 127.0.0.1; refuse anything from the internet."""
    if urlparse(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    demo = app.make_frontend(app.PredictorBackend())
    port = ports.free_port("127.0.0.1")
    try:
        url, _ = app.launch(demo, "127.0.0.1", port)
        yield url
    finally:
        demo.close()
    assert not app.port_in_use("127.0.0.1", port), "the port is free again"


@pytest.fixture(scope="module")
def page(request):
    _need_browser()  # before starting the server, so a skip is quick
    served = request.getfixturevalue("served")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", _local_only)  # e.g. the theme's web fonts: tests stay offline
            page.goto(served)
            yield page
        finally:
            browser.close()


def test_upload_submit_and_read_the_text(page):
    example = next(p for p in app.example_paths() if p.name == "page_3_lines.png")
    expected = TextRecognizer().predict(example)
    page.reload()
    page.locator("input[type=file]").first.set_input_files(str(example))
    page.get_by_role("button", name="Submit").click()
    output = page.get_by_label("Recognized text")
    page.wait_for_function("el => el.value.length > 0", arg=output.element_handle())
    assert output.input_value() == expected


def test_submit_without_image_shows_the_message(page):
    page.reload()
    page.get_by_role("button", name="Submit").click()
    page.get_by_text(app.NO_IMAGE).first.wait_for()
    assert page.get_by_label("Recognized text").input_value() == ""
