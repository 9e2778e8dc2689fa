"""Memories going into a new prompt: `auto` puts the relevant ones above what was typed and
sends, a prompt no memory is about goes out as typed, `suggest` offers a chip that inserts on
click; what is stored is always the prompt as typed."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack
from tests.support.extension import chip, click_chip, send_prompt, sent, stored, wait_for

MEMORY = "My dog Biscuit is a golden retriever and she is terrified of thunderstorms."
RELATED = "How can I calm my dog Biscuit during thunderstorms?"
UNRELATED = "Explain how to configure a Rust cross compiler for ARM targets."


def remember(client: httpx.Client, text: str) -> None:
    saved = client.post(
        "/save-prompt", json={"prompt": text, "provider": "claude", "message_id": "seed-1"}
    )
    saved.raise_for_status()
    # The first search of a fresh stack is slower than the submit's budget on a loaded machine.
    client.post("/context", json={"prompt": text}).raise_for_status()


def test_auto_injects_related_memories_and_nothing_into_unrelated_prompts(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    with stack.client(user) as client:
        remember(client, MEMORY)
        browser = open_extension(stack.url, user, inject="auto")
        page = browser.open_site("chatgpt")

        send_prompt(page, RELATED)
        first = wait_for(lambda: sent(page))[0]
        assert MEMORY in first
        assert first.count(MEMORY) == 1
        assert first.rstrip().endswith(RELATED)
        found = stored(client, 3)
        prompts = [m["text"] for m in found if m["kind"] == "prompt" and m["provider"] == "chatgpt"]
        assert prompts == [RELATED]

        popup = browser.popup(tab_of=page)
        injected = popup.get_by_role("region", name="Memories in this tab's last prompt")
        expect(injected.get_by_role("listitem")).to_have_text([MEMORY])
        popup.close()

        send_prompt(page, UNRELATED, how="click")
        wait_for(lambda: len(sent(page)) == 2)
        assert sent(page)[1] == UNRELATED
        found = stored(client, 5)
        assert UNRELATED in [m["text"] for m in found if m["kind"] == "prompt"]


@pytest.mark.parametrize("site_id", ["gemini", "perplexity"])
def test_suggest_chip_inserts_memories_on_click(
    stack: Stack, user: str, open_extension: OpenExtension, site_id: str
) -> None:
    with stack.client(user) as client:
        remember(client, MEMORY)
        browser = open_extension(stack.url, user, inject="suggest")
        page = browser.open_site(site_id)
        editor = page.get_by_role("textbox")
        editor.click()
        editor.press_sequentially(RELATED)

        assert click_chip(page).startswith("Insert 1 memory")
        # Inserted once, through the editor's own input path, with the caret left in it.
        expect(editor).to_contain_text(MEMORY)
        assert page.evaluate("() => document.activeElement.getAttribute('role')") == "textbox"
        wait_for(lambda: chip(page) is None, 5)
        editor.press("Enter")

        first = wait_for(lambda: sent(page))[0]
        assert first.count(MEMORY) == 1
        assert first.rstrip().endswith(RELATED)
        found = stored(client, 3)
        assert [m["text"] for m in found if m["kind"] == "prompt" and m["provider"] == site_id] == [
            RELATED
        ]


def test_suggest_offers_nothing_for_an_unrelated_prompt(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    with stack.client(user) as client:
        remember(client, MEMORY)
    browser = open_extension(stack.url, user, inject="suggest")
    page = browser.open_site("claude")
    editor = page.get_by_role("textbox")
    editor.click()
    editor.press_sequentially(UNRELATED)
    page.wait_for_timeout(3000)
    assert chip(page) is None
    editor.press("Enter")
    wait_for(lambda: sent(page) == [UNRELATED])
