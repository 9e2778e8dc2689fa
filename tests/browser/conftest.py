"""Fixtures of the browser tests: the dashboard and the extension in a real Chromium (Debian's,
driven by Playwright) against the real stack."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.support.browser import (
    ANON_KEY,
    CHROMIUM,
    CHROMIUM_ARGS,
    Stack,
    Watched,
    gateway_process,
    process_stack,
    token,
    watch,
)
from tests.support.extension import ExtensionBrowser, new_extension
from tests.support.supabase_auth_stand_in import SupabaseAuthStandIn


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = process_stack(tmp_path_factory.mktemp("memory-data")).start()
    try:
        yield Stack(running.url, running.memory_addr)
    finally:
        running.stop()


# Module scope: while Playwright's sync API runs, its event loop is the thread's running
# loop, which the async tests of later modules could not start theirs under.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def watched(browser: Browser, stack: Stack) -> Iterator[Watched]:
    with watch(browser, stack.url) as watched:
        yield watched


@pytest.fixture
def phone(browser: Browser, stack: Stack) -> Iterator[Watched]:
    with watch(browser, stack.url, viewport={"width": 360, "height": 740}, is_mobile=True) as page:
        yield page


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-screenshot",
        action="store_true",
        help="write docs/dashboard.png, the screenshot docs/dashboard.md shows",
    )


@pytest.fixture(scope="module")
def supabase_stack(stack: Stack) -> Iterator[tuple[Stack, SupabaseAuthStandIn]]:
    """A second gateway, on the same memory service, configured for Supabase sign-in."""
    auth = SupabaseAuthStandIn().start()
    gateway = gateway_process(stack.memory_addr, supabase_url=auth.url, supabase_anon_key=ANON_KEY)
    try:
        gateway.start()
        yield Stack(gateway.url, stack.memory_addr), auth
    finally:
        gateway.close()
        auth.stop()


@pytest.fixture
def user() -> str:
    """A user of one test, so that its memories are its own."""
    return f"ext-{uuid.uuid4().hex[:12]}"


OpenExtension = Callable[..., ExtensionBrowser]


@pytest.fixture
def open_extension(playwright: Playwright, tmp_path: Path) -> Iterator[OpenExtension]:
    """Writes the extension connected to a server for a user (`memory-layer extension`) and
    launches Chromium with it; closed at the end of the test."""
    opened: list[ExtensionBrowser] = []

    def open_(
        server_url: str,
        user: str,
        *,
        inject: str = "off",
        broken: tuple[str, ...] = (),
        key: str | None = None,
    ) -> ExtensionBrowser:
        root = tmp_path / f"extension-{len(opened)}"
        key = token(user) if key is None else key
        browser = new_extension(playwright, root, server_url, key, inject)
        browser.broken.update(broken)
        opened.append(browser.launch())
        return browser

    yield open_
    for browser in opened:
        browser.close()
