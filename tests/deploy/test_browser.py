"""The web page in a real browser: Playwright drives Chromium, uploads an image and sees the predicted label.

Needs Chromium (Debian's `chromium` package, or IMGCLS_CHROMIUM=/path) and the playwright package.
Without them the test is skipped with the reason, unless IMGCLS_REQUIRE_BROWSER=1 (as in CI): then
it fails.
"""

from __future__ import annotations

import os
import shutil

import pytest

from imgcls.deploy.serve import create_app
from imgcls.predict import Predictor
from tests.deploy.conftest import live_server

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return os.environ.get("IMGCLS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def need_browser():
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    exe = chromium_path()
    if not exe:
        missing.append("Chromium (apt-get install chromium, or IMGCLS_CHROMIUM=/path/to/chrome)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("IMGCLS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (IMGCLS_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return exe


@pytest.fixture
def server(trained):
    with live_server(create_app(trained[0])) as url:
        yield url


def test_page_predicts_an_uploaded_image(server, trained):
    exe = need_browser()
    from playwright.sync_api import expect, sync_playwright

    ckpt, root, _ = trained
    image = root / "test" / "green" / "002.png"
    expected = Predictor.load(ckpt, device="cpu").predict(str(image))["label"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            expect(page.locator("#info")).to_contain_text("simple_cnn", timeout=20_000)
            page.set_input_files("#file", str(image))
            expect(page.locator("#top-label")).to_have_text(expected, timeout=30_000)
            expect(page.locator("#results .row")).to_have_count(3)
            expect(page.locator("#overlay")).to_be_visible(timeout=30_000)  # the Grad-CAM overlay
            assert page.locator("#error").inner_text() == ""
        finally:
            browser.close()
