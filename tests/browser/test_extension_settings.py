"""Settings as a person changes them: connecting on the options page (checked on save), and in
the popup, a site's capture switched off and the global pause."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack, gateway_process, token
from tests.support.extension import memories, send_prompt, sent, stored, wait_for


def test_options_checks_the_key_on_save(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, key="")
    assert browser.context is not None
    options = browser.context.new_page()
    options.goto(f"chrome-extension://{browser.extension_id}/options/options.html")
    result = options.get_by_role("status")

    options.get_by_label("Server URL").fill(stack.url)
    options.get_by_label("API key").fill("not-a-valid-key")
    options.get_by_role("button", name="Save and check").click()
    expect(result).to_have_text("Saved, but not connected: the server refused this key (401).")

    options.get_by_label("API key").fill(token(user))
    options.get_by_role("button", name="Save and check").click()
    expect(result).to_have_text(f"Saved: connected as {user}.")
    popup = browser.popup()
    expect(popup.get_by_role("status")).to_have_text(f"Connected as {user}")
    expect(popup.get_by_text(f"Server: {stack.url}")).to_be_visible()

    # An API key made for the extension, as the dashboard makes it.
    with stack.client(user) as client:
        created = client.post("/keys", json={"name": "Memory Layer extension"})
        created.raise_for_status()
    options.get_by_label("API key").fill(created.json()["key"])
    options.get_by_role("button", name="Save and check").click()
    expect(result).to_have_text("Saved: connected.")
    expect(popup.get_by_role("status")).to_have_text("Connected")
    # The key is never shown again.
    expect(options.get_by_label("API key")).to_have_value("")

    # A new URL with the key field left empty keeps the saved key, as the field says.
    other = gateway_process(stack.memory_addr).start()
    try:
        options.get_by_label("Server URL").fill(other.url)
        options.get_by_role("button", name="Save and check").click()
        expect(result).to_have_text("Saved: connected.")
        expect(popup.get_by_text(f"Server: {other.url}")).to_be_visible()

        page = browser.open_site("perplexity")
        send_prompt(page, "Which plants grow well on a north-facing balcony?")
        with stack.client(user) as client:
            stored(client, 2)
    finally:
        other.close()


def test_popup_switches_a_site_off_and_pauses_everything(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user)
    popup = browser.popup()
    popup.get_by_label("Capture on ChatGPT").uncheck()
    expect(popup.get_by_label("Capture on Claude")).to_be_checked()
    popup.get_by_label("Pause capture and memories").check()
    expect(popup.get_by_label("Memories on Gemini")).to_have_value("off")

    chatgpt = browser.open_site("chatgpt")
    claude = browser.open_site("claude")
    send_prompt(chatgpt, "A question on a site whose capture is off")
    send_prompt(claude, "A question while everything is paused")
    wait_for(lambda: sent(chatgpt) and sent(claude))
    time.sleep(3)
    with stack.client(user) as client:
        assert memories(client) == []

        popup.get_by_label("Pause capture and memories").uncheck()
        claude.reload()
        claude.get_by_role("textbox").wait_for()
        send_prompt(claude, "A question once capture is back on")
        found = stored(client, 2)
        assert [m["text"] for m in found if m["kind"] == "prompt"] == [
            "A question once capture is back on"
        ]
