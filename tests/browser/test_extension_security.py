"""What the extension must never do on a chat site: put a memory into the page as HTML, let
the page's JavaScript read its key or drive it (submits, typing, the shortcut and the chip count
only when a person makes them), or talk to anything but the configured server."""

from __future__ import annotations

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack, token
from tests.support.extension import (
    SITES,
    chip,
    content_script_reads_storage,
    origin,
    send_prompt,
    sent,
    stored,
    wait_for,
)

PAYLOAD = "Biscuit's vet chart says <img src=x onerror=\"document.title='pwned'\"> in red ink."
PROMPT = "What does Biscuit's vet chart say?"


def test_a_memory_holding_html_is_inserted_as_text(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    with stack.client(user) as client:
        client.post(
            "/save-prompt", json={"prompt": PAYLOAD, "message_id": "seed"}
        ).raise_for_status()
        browser = open_extension(stack.url, user, inject="auto")
        page = browser.open_site("claude")

        send_prompt(page, PROMPT)
        first = wait_for(lambda: sent(page))[0]
        assert PAYLOAD in first
        assert page.title() == "Claude"
        assert page.locator("img").count() == 0
        stored(client, 3)

        popup = browser.popup(tab_of=page)
        injected = popup.get_by_role("region", name="Memories in this tab's last prompt")
        expect(injected.get_by_role("listitem")).to_have_text([PAYLOAD])
        assert popup.locator("img").count() == 0
        assert popup.title() == "Memory Layer"


def test_the_page_cannot_read_the_key_and_only_the_server_is_called(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    key = token(user)
    with stack.client(user) as client:
        client.post(
            "/save-prompt", json={"prompt": PAYLOAD, "message_id": "seed"}
        ).raise_for_status()
        browser = open_extension(stack.url, user, inject="auto")
        page = browser.open_site("chatgpt")
        send_prompt(page, PROMPT)
        stored(client, 3)

    # Everything the page's own JavaScript can reach, searched for the key.
    seen = page.evaluate(
        """async ({key, id}) => {
            const places = [
                document.documentElement.outerHTML,
                JSON.stringify({...localStorage}),
                JSON.stringify({...sessionStorage}),
                document.cookie,
                JSON.stringify(Object.keys(window)),
                JSON.stringify(performance.getEntries().map((e) => e.name)),
            ];
            let config = "unreadable";
            try {
                config = await (await fetch(`chrome-extension://${id}/config.json`)).text();
            } catch (error) {}
            let runtime = "absent";
            try {
                runtime = await chrome.runtime.sendMessage(id, {type: "status"});
            } catch (error) {}
            return {
                leaked: places.some((place) => place.includes(key)),
                config,
                runtime,
                namespace: typeof window.MemoryLayer,
            };
        }""",
        {"key": key, "id": browser.extension_id},
    )
    assert seen == {
        "leaked": False,
        "config": "unreadable",
        "runtime": "absent",
        "namespace": "undefined",
    }

    # The extension's own code in the page (its content scripts' isolated world) cannot read
    # the extension's storage either: only the service worker holds the key.
    assert content_script_reads_storage(browser, page) == (
        "error: Access to storage is not allowed from this context."
    )

    # The gateway allows no CORS origin, the extension's included: its calls work through the
    # host permission for the server, which CORS does not apply to.
    extension_origin = f"chrome-extension://{browser.extension_id}"
    preflight = httpx.options(
        f"{stack.url}/memories/batch",
        headers={"Origin": extension_origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers

    allowed = {origin(stack.url), *(site.origin for site in SITES.values())}
    called = {origin(url) for url in browser.requests if url.startswith("http")}
    assert browser.foreign == []
    assert called <= allowed
    assert origin(stack.url) in called


MEMORY = "My dog Biscuit is a golden retriever and she is terrified of thunderstorms."
RELATED = "How can I calm my dog Biscuit during thunderstorms?"
# What a chat site's own scripts (or a script it loads, or an XSS there) can do without a person.
PAGE_TYPES = """(text) => {
    const editor = document.querySelector('[role="textbox"]');
    editor.focus();
    document.execCommand("insertText", false, text);
}"""
PAGE_PRESSES_ENTER = """() => document.querySelector('[role="textbox"]').dispatchEvent(
    new KeyboardEvent("keydown", {key: "Enter", code: "Enter", bubbles: true, cancelable: true}))"""
PAGE_CLICKS_SEND = """() => document.querySelector('button[aria-label="Send message"]').click()"""
PAGE_PRESSES_ALT_M = """() => document.querySelector('[role="textbox"]').dispatchEvent(
    new KeyboardEvent("keydown", {key: "µ", code: "KeyM", altKey: true, bubbles: true,
                                  cancelable: true}))"""
PAGE_CLICKS_CHIP = """() => {
    const host = document.querySelector("[data-memory-layer]");
    if (!host) return "no chip";
    host.click();
    const {x, y, width, height} = host.getBoundingClientRect();
    document.elementFromPoint(x + width / 2, y + height / 2)?.click();
    return host.shadowRoot === null ? "closed" : "open";
}"""


def claude_remembering(
    stack: Stack, user: str, open_extension: OpenExtension, inject: str
) -> tuple[Page, Locator]:
    """Claude's page and editor, in `inject` mode, for a user whose memory is about RELATED."""
    with stack.client(user) as client:
        client.post(
            "/save-prompt", json={"prompt": MEMORY, "provider": "chatgpt", "message_id": "seed"}
        ).raise_for_status()
        client.post("/context", json={"prompt": MEMORY}).raise_for_status()
    page = open_extension(stack.url, user, inject=inject).open_site("claude")
    return page, page.get_by_role("textbox")


def test_in_auto_mode_only_a_persons_submit_brings_memories(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    page, editor = claude_remembering(stack, user, open_extension, "auto")

    page.evaluate(PAGE_TYPES, RELATED)
    page.evaluate(PAGE_PRESSES_ENTER)
    wait_for(lambda: len(sent(page)) == 1)
    expect(page.get_by_text("That is all for now.")).to_have_count(1)
    page.get_by_role("button", name="Send message").wait_for()
    page.evaluate(PAGE_TYPES, RELATED)
    page.evaluate(PAGE_CLICKS_SEND)
    wait_for(lambda: len(sent(page)) == 2)
    expect(page.get_by_text("That is all for now.")).to_have_count(2)
    page.get_by_role("button", name="Send message").wait_for()
    assert sent(page) == [RELATED, RELATED]
    expect(editor).to_have_text("")

    # A person's Enter, through the browser's own input: trusted, so the memory goes in.
    send_prompt(page, RELATED)
    wait_for(lambda: len(sent(page)) == 3)
    assert MEMORY in sent(page)[2]
    assert sent(page)[2].rstrip().endswith(RELATED)
    with stack.client(user) as client:
        # The page's own submits are not the person's: not captured either.
        found = stored(client, 3)
        assert [
            m["text"] for m in found if m["provider"] == "claude" and m["kind"] == "prompt"
        ] == [RELATED]


def test_in_suggest_mode_a_page_script_cannot_insert_memories(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    page, editor = claude_remembering(stack, user, open_extension, "suggest")

    # Text put in by a script is not typing: no suggestion is asked for.
    page.evaluate(PAGE_TYPES, RELATED)
    page.wait_for_timeout(3000)
    assert chip(page) is None
    page.evaluate(PAGE_PRESSES_ALT_M)

    # Once the person types, the chip is offered; the page can neither click it nor press
    # its shortcut.
    editor.press("End")
    editor.press_sequentially(" ")
    wait_for(lambda: chip(page), 15, lambda: "no chip")
    assert page.evaluate(PAGE_CLICKS_CHIP) == "closed"
    page.evaluate(PAGE_PRESSES_ALT_M)
    page.wait_for_timeout(1000)
    assert MEMORY not in editor.inner_text()
    page.evaluate(PAGE_PRESSES_ENTER)
    wait_for(lambda: sent(page) == [RELATED])
    expect(page.get_by_text("That is all for now.")).to_have_count(1)

    # The person's own Alt+M inserts, by the key's place whatever character it gives.
    editor.click()
    editor.press_sequentially(RELATED)
    wait_for(lambda: chip(page), 15, lambda: "no chip")
    editor.press("Alt+m")
    expect(editor).to_contain_text(MEMORY)
    editor.press("Enter")
    wait_for(lambda: len(sent(page)) == 2)
    assert sent(page)[1].count(MEMORY) == 1
    assert sent(page)[1].rstrip().endswith(RELATED)
