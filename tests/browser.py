"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium;
.ci/run installs it when missing) against pytest-django's live server
(a plugin, see the root conftest.py).

- `browser`: one headless Chromium for the session.
- `page`: a fresh browser context and page per test, closed after it; what
  goes wrong in it is collected in `page_problems` (console errors, uncaught
  script errors, requests that failed or were answered with 400 or more).
  When a test fails, the page is saved as `failed-<test>.png`.
- `screenshot(page, name)`: a full-page PNG under the artifacts folder,
  `test-artifacts/screenshots/` in the var folder (CONSILIUM_VAR_DIR), or
  `screenshots/` in CONSILIUM_TEST_ARTIFACTS when that is set.
- `logged_in(page, live_server, user, password)`: signs in through the
  real login form.

Tests using `live_server` are transactional: the server thread sees only
committed rows. The Playwright sync API marks an event loop as running in the
test thread while the browser is up, which Django's ORM would take for an
async context; Django is told that this thread is synchronous for that time
(DJANGO_ALLOW_ASYNC_UNSAFE), and the browser tests run after all the others,
so that no other test runs in that state."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import reverse
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, ViewportSize, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# A step that takes longer than this has failed (the pages answer in well under a second).
TIMEOUT_MS = 10_000
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
ARTIFACTS_ENV = "CONSILIUM_TEST_ARTIFACTS"
_ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
_SCREENSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
_CALL_FAILED = pytest.StashKey[bool]()


def artifacts_dir() -> Path:
    configured = os.environ.get(ARTIFACTS_ENV, "").strip()
    return Path(configured) if configured else Path(settings.VAR_DIR) / "test-artifacts"


def screenshots_dir() -> Path:
    return artifacts_dir() / "screenshots"


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as <screenshots folder>/<name>.png; returns the path."""
    if not _SCREENSHOT_NAME.match(name):
        raise ValueError(f"screenshot name {name!r}: use letters, digits, '.', '_' and '-' (at most 120)")
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@dataclass
class PageProblems:
    """What went wrong in a test's page, in the order it happened."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if urlsplit(where).path == "/favicon.ico" and message.text.startswith("Failed to load resource"):
            return  # the browser's own guess at an icon, which no page asks for
        self.console_errors.append(f"{message.text} ({where})" if where else message.text)

    def on_page_error(self, error: PlaywrightError) -> None:
        self.page_errors.append(f"{error.name}: {error.message}")

    def on_request_failed(self, request: Request) -> None:
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure or 'failed'}")

    def on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed_requests.append(f"{response.request.method} {response.url} → {response.status}")

    def describe(self) -> str:
        lines = [
            *(f"console error: {text}" for text in self.console_errors),
            *(f"page error: {text}" for text in self.page_errors),
            *(f"failed request: {text}" for text in self.failed_requests),
        ]
        return "\n".join(lines) or "no problem"

    def assert_none(self) -> None:
        assert not (self.console_errors or self.page_errors or self.failed_requests), (
            "the page had problems:\n" + self.describe()
        )


def logged_in(page: Page, live_server: Any, user: Any, password: str) -> Page:
    """Sign `user` in through the login form; the page then shows where the
    login led (the home page unless the form said otherwise)."""
    login_path = reverse("login")
    page.goto(f"{live_server.url}{login_path}")
    page.get_by_label("Username").fill(user.get_username())
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    if urlsplit(page.url).path == login_path:
        alerts = page.locator("[role=alert]").all_inner_texts()
        raise AssertionError(f"{user.get_username()} could not sign in: {' '.join(alerts) or 'no message shown'}")
    return page


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. "
            "Install it with `apt-get install chromium` (.ci/run does so when it is missing).",
            pytrace=False,
        )
    previous = os.environ.get(_ASYNC_UNSAFE)
    os.environ[_ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop(_ASYNC_UNSAFE, None)
        else:
            os.environ[_ASYNC_UNSAFE] = previous


@pytest.fixture
def page_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Browser, page_problems: PageProblems, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", page_problems.on_console)
    page.on("pageerror", page_problems.on_page_error)
    page.on("requestfailed", page_problems.on_request_failed)
    page.on("response", page_problems.on_response)
    try:
        yield page
        if request.node.stash.get(_CALL_FAILED, False):
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:100]
            # Evidence for the failure already reported; a page that cannot be
            # captured any more (a crashed tab) adds nothing to it.
            with contextlib.suppress(PlaywrightError):
                screenshot(page, f"failed-{name}")
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests last (the order within each group kept)."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))
