"""Connecting in one click, as a person does it: Connect on the options page opens the
dashboard; signed in there, they approve, and the extension holds a key of its own, named for
this browser, without anyone copying it. The key is never in a URL, in the page's storage, or
readable from the dashboard or a chat site afterwards."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack, gateway_process, open_signed_in, token
from tests.support.extension import (
    ExtensionBrowser,
    content_script_reads_storage,
    send_prompt,
    stored,
    wait_for,
)

KEY_NAME = "Memory Layer extension (Chromium on Linux)"
STORAGE_REFUSED = "error: Access to storage is not allowed from this context."


def readable_in(page: Page, secret: str) -> list[str]:
    """Where the page's own JavaScript finds secret: its document and fields, its storage,
    cookies, address, history entry and the addresses it loaded."""
    found: list[str] = page.evaluate(
        """(secret) => {
            const places = {
                document: document.documentElement.outerHTML,
                fields: JSON.stringify([...document.querySelectorAll("input, textarea")]
                    .map((field) => field.value)),
                localStorage: JSON.stringify({...localStorage}),
                sessionStorage: JSON.stringify({...sessionStorage}),
                cookie: document.cookie,
                address: location.href,
                history: JSON.stringify(history.state),
                loaded: JSON.stringify(performance.getEntries().map((e) => e.name)),
            };
            return Object.keys(places).filter((name) => places[name].includes(secret));
        }""",
        secret,
    )
    return found


def start_connect(browser: ExtensionBrowser, server_url: str) -> tuple[Page, Page]:
    """Connect pressed on the options page: that page and the dashboard it opened."""
    context = browser.context
    assert context is not None
    address = f"chrome-extension://{browser.extension_id}/options/options.html"
    # A fresh install without a key opens its options page by itself (a tab Playwright may
    # have missed at launch, so the worker is asked), and the person finds Connect there.
    tabs = "chrome.tabs.query({}).then((tabs) => tabs.map((tab) => tab.url || tab.pendingUrl))"
    wait_for(lambda: address in browser.worker.evaluate(tabs))
    options = context.new_page()
    options.goto(address)
    options.get_by_label("Server URL").fill(server_url)
    with context.expect_page() as opened:
        options.get_by_role("button", name="Connect", exact=True).click()
    expect(options.get_by_role("status")).to_have_text(
        "Approve the connection on the dashboard that just opened."
    )
    return options, opened.value


def test_connect_from_a_fresh_install_to_a_stored_capture(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, key="")
    options, dashboard = start_connect(browser, stack.url)

    # The dashboard opens in a tab of its own, signed out there: the person signs in with the
    # link `memory-layer open` gives.
    dashboard.wait_for_load_state()
    assert dashboard.url == f"{stack.url}/app/"
    expect(dashboard.get_by_role("heading", name="Sign in")).to_be_visible()
    open_signed_in(dashboard, stack.sign_in_url(user))
    region = dashboard.get_by_role("region", name="Connect the browser extension")
    expect(region.get_by_label("Key name")).to_have_value(KEY_NAME)
    expect(region.get_by_label("Read: memories in prompts")).to_be_checked()
    expect(region.get_by_label("Write: keep what you capture")).to_be_checked()
    region.get_by_role("button", name="Connect the extension").click()

    expect(region.get_by_role("status")).to_have_text(
        "Connected: the extension keeps your chats on this server now. You can close this tab."
    )
    expect(options.get_by_role("status")).to_have_text("Saved: connected.")
    popup = browser.popup()
    expect(popup.get_by_role("status")).to_have_text("Connected")
    # Chromium grants the sites and the server at install: the popup asks for nothing.
    expect(popup.get_by_text("Not allowed on every chat site")).to_be_hidden()
    # The new key is in the dashboard's list, by name and prefix only.
    listed = dashboard.get_by_role("article", name=f"API key {KEY_NAME}")
    expect(listed).to_contain_text("read, write")

    key = browser.storage()["apiKey"]
    assert re.fullmatch(r"mlk_[A-Za-z0-9_-]{43}", key)
    with stack.client(user) as client:
        keys = client.get("/keys").json()["keys"]
        assert [(k["name"], k["scopes"]) for k in keys] == [(KEY_NAME, ["read", "write"])]
        assert key.startswith(keys[0]["prefix"])

        chat = browser.open_site("claude")
        typed = "Which bulbs should I plant in October?"
        send_prompt(chat, typed)
        found = stored(client, 2)
        assert [m["text"] for m in found if m["kind"] == "prompt"] == [typed]
        assert client.get("/keys").json()["keys"][0]["last_used_at"] is not None

    # Nowhere the pages' own scripts or the extension's scripts in them can read the key.
    assert readable_in(dashboard, key) == []
    assert readable_in(chat, key) == []
    assert content_script_reads_storage(browser, dashboard) == STORAGE_REFUSED
    assert content_script_reads_storage(browser, chat) == STORAGE_REFUSED
    assert [url for url in browser.requests if key in url] == []

    # The offer was for one key: the dashboard opened again offers nothing.
    dashboard.reload()
    expect(dashboard.get_by_role("heading", name="Overview")).to_be_visible()
    dashboard.goto(stack.sign_in_url(user))
    expect(dashboard.get_by_role("heading", name="Overview")).to_be_visible()
    expect(region).to_be_hidden()


def test_only_the_awaited_dashboard_with_its_nonce_hands_over_a_key(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, key="")
    assert browser.context is not None
    other = gateway_process(stack.memory_addr).start()
    try:
        _, dashboard = start_connect(browser, stack.url)

        # Another server on the same host (another port): the extension's script may run
        # there, but the worker offers nothing to an origin it does not await.
        elsewhere = browser.context.new_page()
        open_signed_in(elsewhere, f"{other.url}/app/#access_token={token(user)}")
        expect(elsewhere.get_by_role("heading", name="Overview")).to_be_visible()
        time.sleep(2)
        expect(elsewhere.get_by_role("region", name="Connect the browser extension")).to_be_hidden()
    finally:
        other.close()

    open_signed_in(dashboard, stack.sign_in_url(user))
    region = dashboard.get_by_role("region", name="Connect the browser extension")
    expect(region.get_by_label("Key name")).to_have_value(KEY_NAME)
    # A key posted on the dashboard without the nonce the extension gave is not taken.
    with stack.client(user) as client:
        forged = client.post("/keys", json={"name": "not asked for"}).json()["key"]
    dashboard.evaluate(
        """(key) => window.postMessage(
            {type: "memory-layer:connect-key", nonce: "0".repeat(64), key}, location.origin)""",
        forged,
    )
    time.sleep(2)
    assert browser.storage().get("apiKey", "") == ""

    # Cancel: no key is made and the extension stops waiting.
    region.get_by_role("button", name="Cancel").click()
    expect(region.get_by_role("status")).to_have_text(
        "Not connected. Connect again from the extension's options."
    )
    pending = "() => chrome.storage.session.get(null)"
    wait_for(lambda: "connectPending" not in browser.worker.evaluate(pending))
    with stack.client(user) as client:
        assert [k["name"] for k in client.get("/keys").json()["keys"]] == ["not asked for"]
    assert browser.storage().get("apiKey", "") == ""
