"""The same extension in Firefox (Debian's firefox-esr, driven by puppeteer-core), installed from
the zip `memory-layer extension --browser firefox` writes, on the ChatGPT and Claude stand-ins
against the real stack: prompt and answer stored once and linked, memories put into a prompt
automatically, captures made while the server is down delivered once when it is back,
Connect in one click from a fresh install, and a site the person withdrew named in the popup."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import Stack, gateway_process, token
from tests.support.extension import memories, stored, wait_for
from tests.support.firefox import DriverError, FirefoxExtension, new_firefox_extension
from tests.support.stack import GatewayProcess

SITE_IDS = ["chatgpt", "claude"]
KEY_SHAPE = re.compile(r"mlk_[A-Za-z0-9_-]{43}")
MEMORY = "My dog Biscuit is a golden retriever and she is terrified of thunderstorms."
RELATED = "How can I calm my dog Biscuit during thunderstorms?"
# Backoff is capped at 30 s; the batch that follows a restart may wait that long.
DELIVERY_TIMEOUT = 90.0

OpenFirefox = Callable[..., FirefoxExtension]


@pytest.fixture
def open_firefox(tmp_path: Path) -> Iterator[OpenFirefox]:
    """Writes the Firefox copy connected to a server for a user and starts firefox-esr with
    it installed; closed at the end of the test."""
    opened: list[FirefoxExtension] = []

    def open_(
        server_url: str, user: str, *, inject: str = "off", key: str | None = None
    ) -> FirefoxExtension:
        root = tmp_path / f"firefox-{len(opened)}"
        key = token(user) if key is None else key
        browser = new_firefox_extension(root, server_url, key, inject)
        opened.append(browser)
        return browser.launch()

    yield open_
    for browser in opened:
        browser.close()


@pytest.fixture
def gateway(stack: Stack) -> Iterator[GatewayProcess]:
    """A gateway of its own, on the stack's memory service, that a test stops and restarts."""
    own = gateway_process(stack.memory_addr).start()
    try:
        yield own
    finally:
        own.close()


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_prompt_and_answer_stored_once_linked(
    stack: Stack, user: str, open_firefox: OpenFirefox, site_id: str
) -> None:
    browser = open_firefox(stack.url, user)
    page = browser.open_site(site_id)
    typed = "How long should sourdough starter ferment before baking?"

    browser.send_prompt(page, typed, how="enter" if site_id == "chatgpt" else "click")

    with stack.client(user) as client:
        found = stored(client, 2)
        prompt = next(m for m in found if m["kind"] == "prompt")
        answer = next(m for m in found if m["kind"] == "response")
        assert browser.sent(page) == [typed]
        assert prompt["text"] == typed
        assert answer["text"] == f"Here is what I know about {typed}. That is all for now."
        assert prompt["provider"] == answer["provider"] == site_id
        assert answer["prompt_id"] == prompt["id"]
        assert prompt["response_id"] == answer["id"]
        address = browser.evaluate(page, "location.href")
        assert prompt["url"] == address
        assert prompt["conversation_id"] == address.rstrip("/").split("/")[-1]

        # The site renders the conversation again after a reload: nothing is stored twice.
        browser.reload(page)
        browser.wait_for_answers(page, 1)
        time.sleep(3)
        assert len(memories(client)) == 2


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_auto_puts_related_memories_above_the_prompt(
    stack: Stack, user: str, open_firefox: OpenFirefox, site_id: str
) -> None:
    with stack.client(user) as client:
        client.post(
            "/save-prompt", json={"prompt": MEMORY, "provider": "gemini", "message_id": "seed-1"}
        ).raise_for_status()
        # The first search of a fresh stack is slower than the submit's budget on a loaded machine.
        client.post("/context", json={"prompt": MEMORY}).raise_for_status()
        browser = open_firefox(stack.url, user, inject="auto")
        page = browser.open_site(site_id)

        browser.send_prompt(page, RELATED)

        first = wait_for(lambda: browser.sent(page), describe=lambda: browser.chat_state(page))[0]
        assert first.count(MEMORY) == 1
        assert first.rstrip().endswith(RELATED)
        found = stored(client, 3)
        assert [m["text"] for m in found if m["kind"] == "prompt" and m["provider"] == site_id] == [
            RELATED
        ]


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_captures_wait_for_the_server_and_arrive_once(
    stack: Stack, gateway: GatewayProcess, user: str, open_firefox: OpenFirefox, site_id: str
) -> None:
    browser = open_firefox(gateway.url, user, inject="auto")
    page = browser.open_site(site_id)
    gateway.stop()

    # The server is down: the page still sends what was typed, without delay or memories.
    browser.send_prompt(page, "Which trail should we hike on Saturday?")
    browser.wait_for_answers(page, 1)
    browser.send_prompt(page, "Is the lake trail open in winter?", how="click")
    browser.wait_for_answers(page, 2)
    assert browser.sent(page) == [
        "Which trail should we hike on Saturday?",
        "Is the lake trail open in winter?",
    ]
    time.sleep(2)

    gateway.start()
    with stack.client(user) as client:
        found = stored(client, 4, DELIVERY_TIMEOUT)
        prompts = {m["id"]: m for m in found if m["kind"] == "prompt"}
        answers = [m for m in found if m["kind"] == "response"]
        assert sorted(m["text"] for m in prompts.values()) == [
            "Is the lake trail open in winter?",
            "Which trail should we hike on Saturday?",
        ]
        assert sorted(answer["prompt_id"] for answer in answers) == sorted(prompts)
        time.sleep(5)
        assert len(memories(client)) == 4


def test_connect_in_one_click_from_a_fresh_install(
    stack: Stack, user: str, open_firefox: OpenFirefox
) -> None:
    browser = open_firefox(stack.url, user, key="")
    # Installed without a key, the extension opens its options page.
    options = browser.find_page("moz-extension://")
    assert browser.evaluate(options, "location.pathname") == "/options/options.html"
    field = "(id) => document.getElementById(id)"
    # The page fills its fields once the worker answers, after it has loaded.
    server_url = f"({field})('server-url').value"
    assert wait_for(lambda: browser.evaluate(options, server_url)) == stack.url
    browser.click(options, "#connect-dashboard")
    result = f"({field})('result').textContent"
    wait_for(
        lambda: (
            browser.evaluate(options, result)
            == "Approve the connection on the dashboard that just opened."
        )
    )

    dashboard = browser.find_page(f"{stack.url}/app/")
    browser.navigate(dashboard, stack.sign_in_url(user))
    # A link the dashboard did not ask for signs in once the person confirms the account.
    wait_for(lambda: browser.evaluate(dashboard, "document.getElementById('confirm-sign-in').open"))
    browser.click(dashboard, '#confirm-sign-in button[value="confirm"]')
    name = wait_for(lambda: browser.evaluate(dashboard, f"({field})('connect-name').value"))
    assert name == "Memory Layer extension (Firefox on Linux)"
    browser.click(dashboard, "#connect-approve")
    status = f"({field})('connect-status').textContent"
    wait_for(lambda: browser.evaluate(dashboard, status).startswith("Connected: "))
    wait_for(lambda: browser.evaluate(options, result) == "Saved: connected.")

    page = browser.open_site("claude")
    typed = "Which bulbs should I plant in October?"
    browser.send_prompt(page, typed)
    with stack.client(user) as client:
        found = stored(client, 2)
        assert [m["text"] for m in found if m["kind"] == "prompt"] == [typed]
        keys = client.get("/keys").json()["keys"]
        assert [(k["name"], k["scopes"]) for k in keys] == [(name, ["read", "write"])]

    # No whole key anywhere the dashboard's or the chat page's own scripts can look.
    places = """[document.documentElement.outerHTML,
        JSON.stringify([...document.querySelectorAll("input")].map((f) => f.value)),
        JSON.stringify({...localStorage}), JSON.stringify({...sessionStorage}),
        location.href, JSON.stringify(history.state)].join(" ")"""
    for shown in (dashboard, page):
        assert KEY_SHAPE.search(browser.evaluate(shown, places)) is None


def test_the_popup_names_a_withdrawn_site(
    stack: Stack, user: str, open_firefox: OpenFirefox
) -> None:
    browser = open_firefox(stack.url, user, key="")
    # The options page a fresh install opens becomes the popup (the same extension's page).
    page = browser.find_page("moz-extension://")
    notice = "document.getElementById('permissions')"

    def once_loaded(expression: str) -> Any:
        try:
            loaded = browser.evaluate(page, "document.readyState === 'complete'")
            return loaded and browser.evaluate(page, expression)
        except DriverError:  # the page was navigating
            return None

    browser.evaluate(page, "location.href = chrome.runtime.getURL('popup/popup.html')")
    wait_for(lambda: once_loaded("location.pathname") == "/popup/popup.html")
    time.sleep(1)
    assert once_loaded(f"{notice}.hidden") is True

    # Firefox lets a person withdraw a site (about:addons → Permissions).
    withdrawn = "chrome.permissions.remove({origins: ['https://claude.ai/*']})"
    assert browser.evaluate(page, withdrawn) is True
    browser.evaluate(page, "location.reload()")
    shown = wait_for(lambda: once_loaded(f"!{notice}.hidden && {notice}.innerText"))
    assert shown.startswith("Not allowed on every chat site and the server")
    assert once_loaded("document.getElementById('grant').innerText") == "Allow"
