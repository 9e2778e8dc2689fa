"""What the extension must never do on a chat site: put a memory into the page as HTML, let
the page's JavaScript read its key, or talk to anything but the configured server."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack, token
from tests.support.extension import (
    SITES,
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
