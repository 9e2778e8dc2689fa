"""A person managing API keys on the dashboard at /app/: creating a key for an app, seeing it
once and copying it, finding it in the list with its last use, and revoking it, in Chromium
against the real stack."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import expect

from tests.support.browser import Stack, Watched, open_signed_in


def _post(stack: Stack, path: str, key: str, body: dict[str, str]) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{stack.url}{path}", json=body, headers=headers, timeout=60).status_code


def test_create_a_key_shown_once_list_it_and_revoke_it(stack: Stack, watched: Watched) -> None:
    me = f"person-{uuid.uuid4().hex[:8]}"
    page = watched.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    open_signed_in(page, stack.sign_in_url(me))
    page.get_by_role("link", name="API keys").click()
    keys = page.get_by_role("region", name="API keys")
    expect(keys.get_by_text("No keys yet.")).to_be_visible()

    keys.get_by_label("Key name").fill("Reading laptop")
    keys.get_by_label("Write: save, edit, delete").uncheck()
    keys.get_by_role("button", name="Create key").click()

    shown = page.get_by_role("region", name="Your new key")
    expect(shown).to_be_visible()
    expect(shown).to_contain_text("shown only this once")
    field = shown.get_by_label("New API key")
    expect(field).to_have_value(re.compile(r"^mlk_[A-Za-z0-9_-]{43}$"))
    key = field.input_value()
    shown.get_by_role("button", name="Copy").click()
    expect(shown.get_by_role("status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == key

    # The key works for what it was given, and only that.
    assert _post(stack, "/search", key, {"query": "anything"}) == 200
    assert _post(stack, "/save-prompt", key, {"prompt": "no"}) == 403

    listed = page.get_by_role("list", name="Your API keys").get_by_role("article")
    expect(listed).to_have_count(1)
    entry = listed.first
    expect(entry).to_contain_text("Reading laptop")
    expect(entry).to_contain_text(key[:12])
    expect(entry).to_contain_text("read")
    expect(entry).not_to_contain_text("write")

    # Shown once: after a reload the key is nowhere on the page, and its last use is listed.
    page.reload()
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("region", name="Your new key")).to_be_hidden()
    entry = page.get_by_role("article", name="API key Reading laptop")
    expect(entry).to_be_visible()
    assert key not in page.content()
    expect(entry.get_by_role("definition").nth(3)).not_to_have_text("Never")

    entry.get_by_role("button", name="Revoke Reading laptop").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Reading laptop")
    dialog.get_by_role("button", name="Keep it").click()
    expect(entry).to_be_visible()
    assert _post(stack, "/search", key, {"query": "anything"}) == 200

    entry.get_by_role("button", name="Revoke Reading laptop").click()
    page.get_by_role("dialog").get_by_role("button", name="Yes, revoke it").click()
    expect(entry).to_have_count(0)
    expect(page.get_by_text("No keys yet.")).to_be_visible()
    assert _post(stack, "/search", key, {"query": "anything"}) == 401
    watched.assert_clean()


def test_keys_fit_a_phone_screen(stack: Stack, phone: Watched) -> None:
    me = f"person-{uuid.uuid4().hex[:8]}"
    with stack.client(me) as mine:
        made = mine.post("/keys", json={"name": "A rather long name for a key " * 3})
        assert made.status_code == 201
    page = phone.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(page.get_by_role("list", name="Your API keys").get_by_role("article")).to_have_count(1)
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    phone.assert_clean()
