"""Playwright driving Debian's Chromium (no browser download) against pytest-django's live server.

Tests here are marked `browser`. Without a Chromium binary they are skipped locally and
fail in CI (`make test` installs it when running as root). Screenshots of every page go
to artifacts/screenshots/ (desktop and 390 px phone width).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI

# Playwright's sync API runs an event loop in this thread; the ORM calls in test setup are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "pw-Secret-123"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (requirements-dev.txt)")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser`")
        pytest.skip("Chromium is not installed: run `make browser` (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(viewport=DESKTOP, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture
def screenshot():
    """Save the page as artifacts/screenshots/<name>.png, and at phone width as <name>-phone.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shoot(page, name: str, *, phone: bool = True) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        if phone:
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(150)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
            page.set_viewport_size(DESKTOP)
            page.wait_for_timeout(100)

    return shoot


def log_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("networkidle")


def wait_for_js(page, expression: str, timeout_ms: int = 10_000) -> None:
    """Wait until `expression` is truthy in the page. Playwright's wait_for_function evaluates its
    predicate with eval inside the page, which the Content-Security-Policy (rightly) refuses;
    page.evaluate goes through the DevTools protocol, which it does not govern."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout_ms} ms: {expression}")
        page.wait_for_timeout(50)
