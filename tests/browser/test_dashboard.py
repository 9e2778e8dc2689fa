"""A person using the dashboard at /app/: signing in, reading, searching, fixing, deleting,
exporting and importing their memories, in Chromium against the real stack."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from memory_layer_cli.importing import ExportItems
from tests.support.browser import (
    ANON_KEY,
    SCREENSHOT,
    SIGN_IN_DIALOG,
    Stack,
    Watched,
    expired_token,
    forged_token,
    open_signed_in,
    token,
    watch,
)
from tests.support.supabase_auth_stand_in import SupabaseAuthStandIn

EXPORTS = Path(__file__).resolve().parents[1] / "data" / "exports"


def batch_items(path: Path) -> list[dict[str, Any]]:
    """What `memory-layer import` sends for this file, item by item."""
    export = ExportItems(path)
    return [item for phase in export.phases() for unit in phase() for item in unit]


def same_instant(item: dict[str, Any]) -> dict[str, Any]:
    # The page writes times as JavaScript does, the CLI as Python does; the instant is what counts.
    if "created_at" in item:
        item = {**item, "created_at": datetime.fromisoformat(item["created_at"])}
    return item


def user() -> str:
    return f"person-{uuid.uuid4().hex[:8]}"


def save_exchange(client: httpx.Client, prompt: str, answer: str, provider: str = "chatgpt") -> str:
    message_id = uuid.uuid4().hex
    saved = client.post(
        "/save-prompt", json={"prompt": prompt, "provider": provider, "message_id": message_id}
    )
    assert saved.status_code == 200, saved.text
    replied = client.post(
        "/save-response",
        json={"response": answer, "message_id": message_id, "provider": provider},
    )
    assert replied.status_code == 200, replied.text
    return str(saved.json()["id"])


def cards(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_role("list", name="Memories, newest first").get_by_role("article")


def card_with(page: Page, text: str):  # type: ignore[no-untyped-def]
    return cards(page).filter(has_text=text)


def no_horizontal_scroll(page: Page) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def test_sign_in_by_fragment_shows_my_memories_and_never_anothers(
    stack: Stack, watched: Watched
) -> None:
    me, other = user(), user()
    with stack.client(me) as mine, stack.client(other) as theirs:
        save_exchange(mine, "Which trail runs along the Douro river?", "The Ecovia do Douro.")
        save_exchange(theirs, "Private note of someone else about their passport", "Noted.")
    page = watched.page
    open_signed_in(page, stack.sign_in_url(me))

    expect(card_with(page, "Douro river")).to_have_count(1)
    assert "access_token" not in page.url
    assert page.url == f"{stack.url}/app/"
    assert page.evaluate("sessionStorage.length") == 1
    # A prompt and its answer are one exchange.
    exchange = page.get_by_role("list", name="Memories, newest first").get_by_role("listitem")
    expect(exchange).to_have_count(1)
    expect(exchange.get_by_role("article")).to_have_count(2)
    expect(page.get_by_text("passport")).to_have_count(0)
    # The token survives a reload from sessionStorage, and only there.
    page.reload()
    expect(card_with(page, "Ecovia")).to_have_count(1)
    assert "access_token" not in page.url
    watched.assert_clean()


def test_an_expired_or_refused_token_sends_the_person_back_to_sign_in(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{stack.url}/app/#access_token={expired_token(user())}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("expired")
    assert "access_token" not in page.url

    open_signed_in(page, f"{stack.url}/app/#access_token={forged_token(user())}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("refused")
    assert page.evaluate("sessionStorage.length") == 0
    assert watched.foreign == []


def test_a_link_with_someone_elses_token_signs_in_only_once_the_person_confirms(
    stack: Stack, watched: Watched
) -> None:
    victim, attacker = user(), user()
    with stack.client(attacker) as theirs:
        save_exchange(theirs, "Attacker's planted note about a bank", "Noted.")
    page = watched.page
    # A link someone sent: the page does not sign in, and says whose account it would be.
    page.goto(f"{stack.url}/app/#access_token={token(attacker)}")
    dialog = page.get_by_role("dialog", name=SIGN_IN_DIALOG)
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(attacker)
    assert "access_token" not in page.url
    assert page.evaluate("sessionStorage.length") == 0
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("planted note")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0

    # Signed in as themselves, a link arriving by a fragment change swaps nothing.
    with stack.client(victim) as mine:
        save_exchange(mine, "My own note about the allotment", "Noted.")
    open_signed_in(page, stack.sign_in_url(victim))
    expect(card_with(page, "allotment")).to_have_count(1)
    mine_stored = page.evaluate("sessionStorage.getItem('memory-layer.access_token')")
    page.evaluate(f"location.hash = 'access_token={token(attacker)}'")
    expect(page.get_by_role("alert")).to_contain_text("already signed in")
    expect(dialog).to_be_hidden()
    assert "access_token" not in page.url
    assert page.evaluate("sessionStorage.getItem('memory-layer.access_token')") == mine_stored
    expect(card_with(page, "allotment")).to_have_count(1)
    expect(page.get_by_text("planted note")).to_have_count(0)
    # A reload keeps the person's own session.
    page.reload()
    expect(card_with(page, "allotment")).to_have_count(1)
    expect(page.get_by_text("planted note")).to_have_count(0)
    watched.assert_clean()


def test_the_timeline_pages_newest_first_until_all_are_shown(
    stack: Stack, watched: Watched
) -> None:
    me = user()
    with stack.client(me) as mine:
        for n in range(57):
            saved = mine.post("/save-prompt", json={"prompt": f"Numbered note {n:02d}"})
            assert saved.status_code == 200, saved.text
    page = watched.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(page.get_by_text("50 memories shown.")).to_be_visible()
    # Scrolling to the end of the list loads the next page.
    page.get_by_role("button", name="Load more").scroll_into_view_if_needed()
    expect(page.get_by_text("57 memories shown, that is all of them.")).to_be_visible()
    texts = cards(page).locator(".text").all_inner_texts()
    assert texts == [f"Numbered note {n:02d}" for n in reversed(range(57))]
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    watched.assert_clean()


def test_search_finds_a_memory_by_a_word_in_it_with_its_score(
    stack: Stack, watched: Watched
) -> None:
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "How long should sourdough proof overnight?", "About 12 hours cold.")
        save_exchange(mine, "Best way to learn Rust ownership?", "Read the book.", "claude")
    page = watched.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(cards(page)).to_have_count(4)

    page.get_by_role("searchbox").fill("sourdough")
    page.get_by_label("Mode").select_option("keyword")
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.get_by_role("list", name="Search results").get_by_role("article")
    expect(results.first).to_contain_text("sourdough")
    expect(results.first.locator(".score")).to_have_text(re.compile(r"^score \d+\.\d\d$"))
    expect(results.filter(has_text="Rust")).to_have_count(0)

    # Filters: the provider list comes from the overview; claude holds only the Rust exchange.
    page.get_by_role("searchbox").fill("learn Rust ownership")
    page.get_by_label("Mode").select_option("hybrid")
    page.get_by_label("Provider").select_option("claude")
    page.get_by_label("Kind").select_option("prompt")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("Best way to learn Rust ownership?")
    watched.assert_clean()


def test_edit_changes_a_memory_and_search_finds_the_new_text(
    stack: Stack, watched: Watched
) -> None:
    me = user()
    with stack.client(me) as mine:
        edited = save_exchange(mine, "My gym locker is number 118", "Noted.")
        page = watched.page
        open_signed_in(page, stack.sign_in_url(me))
        card = card_with(page, "locker is number 118")
        expect(card).to_have_count(1)

        card.get_by_role("button", name="Edit").click()
        editor = page.get_by_label("Edit text")
        expect(editor).to_be_focused()
        editor.fill("My gym locker is number 242 since March")
        page.get_by_role("button", name="Save").click()

        expect(card_with(page, "number 242 since March")).to_have_count(1)
        expect(card_with(page, "number 118")).to_have_count(0)
        assert mine.get(f"/memories/{edited}").json()["text"] == (
            "My gym locker is number 242 since March"
        )
        # Cancel leaves the text alone.
        card = card_with(page, "number 242")
        card.get_by_role("button", name="Edit").click()
        page.get_by_label("Edit text").fill("Something else entirely")
        page.get_by_role("button", name="Cancel").click()
        expect(card.locator(".text")).to_have_text("My gym locker is number 242 since March")
        assert "242" in mine.get(f"/memories/{edited}").json()["text"]

        page.get_by_role("searchbox").fill("March")
        page.get_by_label("Mode").select_option("keyword")
        page.get_by_role("button", name="Search", exact=True).click()
        results = page.get_by_role("list", name="Search results").get_by_role("article")
        expect(results.first).to_contain_text("number 242 since March")
    watched.assert_clean()


def test_delete_removes_a_memory_after_confirmation(stack: Stack, watched: Watched) -> None:
    me = user()
    with stack.client(me) as mine:
        doomed = save_exchange(mine, "Forget my old locker code 4512", "Forgotten.")
        save_exchange(mine, "Keep the bicycle shop address", "Kept.")
        page = watched.page
        open_signed_in(page, stack.sign_in_url(me))
        card = card_with(page, "locker code")
        expect(card).to_have_count(1)

        # Every memory card has its own Delete button.
        for each in cards(page).all():
            expect(each.get_by_role("button", name="Delete")).to_have_count(1)

        card.get_by_role("button", name="Delete").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("locker code 4512")
        dialog.get_by_role("button", name="Keep it").click()
        expect(card).to_have_count(1)
        assert mine.get(f"/memories/{doomed}").status_code == 200

        card.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Yes, delete it").click()
        expect(card).to_have_count(0)
        assert mine.get(f"/memories/{doomed}").status_code == 404
        expect(card_with(page, "bicycle shop")).to_have_count(1)
    watched.assert_clean()


def test_delete_all_needs_the_typed_phrase_and_empties_the_timeline(
    stack: Stack, watched: Watched
) -> None:
    me = user()
    with stack.client(me) as mine:
        for n in range(3):
            save_exchange(mine, f"Grocery list number {n}", f"Milk and {n} eggs.")
        page = watched.page
        open_signed_in(page, stack.sign_in_url(me))
        expect(cards(page)).to_have_count(6)

        page.get_by_role("button", name="Delete all my memories").click()
        dialog = page.get_by_role("dialog")
        confirm = dialog.get_by_role("button", name="Delete everything")
        expect(confirm).to_be_disabled()
        dialog.get_by_label("Type delete all to confirm").fill("delete")
        expect(confirm).to_be_disabled()
        dialog.get_by_label("Type delete all to confirm").fill("delete all")
        confirm.click()

        expect(cards(page)).to_have_count(0)
        expect(page.get_by_text("Deleted 6 memories.")).to_be_visible()
        expect(page.get_by_text("No memories yet.")).to_be_visible()
        assert mine.get("/memories").json()["memories"] == []
    watched.assert_clean()


def test_export_downloads_every_memory_as_ndjson(
    stack: Stack, watched: Watched, tmp_path: Path
) -> None:
    me = user()
    with stack.client(me) as mine:
        for n in range(4):
            save_exchange(
                mine, f"Export me, question {n}", f"Answer {n}", ("chatgpt", "claude")[n % 2]
            )
        expected = {
            m["id"] for m in mine.get("/memories", params={"limit": 200}).json()["memories"]
        }
    assert len(expected) == 8
    page = watched.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(cards(page)).to_have_count(8)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download export (NDJSON)").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".ndjson")
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    lines = [json.loads(line) for line in target.read_text().splitlines() if line.strip()]
    assert {m["id"] for m in lines} == expected
    assert all(m["user_id"] == me for m in lines)
    expect(page.get_by_text("Exported 8 memories.")).to_be_visible()
    watched.assert_clean()


def test_import_of_an_export_shows_progress_and_the_memories_appear(
    stack: Stack, watched: Watched, tmp_path: Path
) -> None:
    # A backup restored: the person's own export, after every memory was deleted.
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "Imported question about kayaks", "Sit-on-top ones are stable.")
        save_exchange(mine, "Imported question about tents", "Two-person, three-season.", "claude")
        export = tmp_path / "memories.ndjson"
        export.write_text(mine.get("/export").text)
        before = {
            m["id"]: m for m in (json.loads(line) for line in export.read_text().splitlines())
        }
        assert mine.delete("/memories").json() == {"deleted": 4}
    page = watched.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(page.get_by_text("No memories yet.")).to_be_visible()

    upload = page.get_by_label("Import a ChatGPT or Claude conversations.json, or an NDJSON export")
    upload.set_input_files(export)
    page.get_by_role("button", name="Import", exact=True).click()
    progress = page.get_by_role("progressbar", name="Import progress")
    expect(progress).to_be_visible()
    expect(page.get_by_text("Imported 4 of 4 messages.")).to_be_visible()
    assert progress.evaluate("bar => [bar.value, bar.max]") == [4, 4]
    expect(cards(page)).to_have_count(4)
    expect(card_with(page, "kayaks")).to_have_count(1)

    with stack.client(me) as mine:
        memories = mine.get("/memories").json()["memories"]
        restored = {m["id"]: m for m in memories}
        assert restored.keys() == before.keys()
        for memory_id, memory in restored.items():
            was = before[memory_id]
            assert (memory["text"], memory["prompt_id"], memory["response_id"]) == (
                was["text"],
                was["prompt_id"],
                was["response_id"],
            )
            assert datetime.fromisoformat(memory["created_at"]) == datetime.fromisoformat(
                was["created_at"]
            )

        # The same file again stores nothing twice; a ChatGPT export lands beside it.
        upload.set_input_files(export)
        page.get_by_role("button", name="Import", exact=True).click()
        expect(page.get_by_text("Imported 4 of 4 messages.")).to_be_visible()
        upload.set_input_files(EXPORTS / "chatgpt-conversations.json")
        page.get_by_role("button", name="Import", exact=True).click()
        expect(page.get_by_text(re.compile(r"Imported \d+ of \d+ messages"))).to_be_visible()
        total = len(mine.get("/memories", params={"limit": 200}).json()["memories"])
    expected_from_chatgpt = len(batch_items(EXPORTS / "chatgpt-conversations.json"))
    assert total == 4 + expected_from_chatgpt
    expect(cards(page)).to_have_count(total)
    watched.assert_clean()


def test_overview_counts_per_provider_and_per_day_and_admin_stats(
    stack: Stack, watched: Watched
) -> None:
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "Gemini question about tides", "Twice a day.", "gemini")
        save_exchange(mine, "Claude question about moons", "Many.", "claude")
        save_exchange(mine, "Another Claude question about rings", "Saturn.", "claude")
    page = watched.page
    asked: list[str] = []
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    open_signed_in(page, stack.sign_in_url(me))
    table = page.get_by_role("table", name="Memories per provider")
    expect(table.get_by_role("row", name="claude 4")).to_be_visible()
    expect(table.get_by_role("row", name="gemini 2")).to_be_visible()
    expect(page.get_by_text("6 in the last 30 days")).to_be_visible()
    expect(page.get_by_text("6 memories in all.")).to_be_visible()
    expect(page.get_by_role("heading", name="Server (admin)")).to_be_hidden()
    # Deleting one draws the overview again, from the counts, never from an export.
    card_with(page, "Twice a day.").get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete it").click()
    expect(table.get_by_role("row", name="gemini 1")).to_be_visible()
    expect(page.get_by_text("5 memories in all.")).to_be_visible()
    assert asked.count("/memories/stats") == 2
    assert "/export" not in asked

    page.get_by_role("button", name="Sign out").click()
    open_signed_in(page, stack.sign_in_url(f"admin-{me}", admin=True))
    expect(page.get_by_role("heading", name="Server (admin)")).to_be_visible()
    expect(page.get_by_text("Memories (all users)")).to_be_visible()
    watched.assert_clean()


def test_a_360px_phone_has_no_horizontal_scroll(stack: Stack, phone: Watched) -> None:
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "A long unbroken word " + "x" * 300, "And a short answer.")
    page = phone.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(cards(page)).to_have_count(2)
    assert page.evaluate("window.innerWidth") == 360
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="Delete all my memories").click()
    assert no_horizontal_scroll(page)
    phone.assert_clean()


def test_keyboard_reaches_search_and_a_cards_buttons(stack: Stack, watched: Watched) -> None:
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "Keyboard only person asks about tabs", "Tab moves focus.")
    page = watched.page
    open_signed_in(page, stack.sign_in_url(me))
    expect(cards(page)).to_have_count(2)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    reached = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate("document.activeElement.id || document.activeElement.textContent")
        )
    assert {"query", "Edit", "Delete", "export"} <= reached
    watched.assert_clean()


def test_the_dashboard_is_served_with_a_strict_content_security_policy(stack: Stack) -> None:
    for path in ("/app/", "/app/app.js", "/app/app.css"):
        response = httpx.get(f"{stack.url}{path}")
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
    assert httpx.get(f"{stack.url}/app").headers["location"].endswith("/app/")
    # Without Supabase sign-in configured the page is told nothing about it.
    assert httpx.get(f"{stack.url}/app/config.json").json() == {
        "supabase_url": None,
        "supabase_anon_key": None,
    }


def test_api_docs_render_offline_with_the_bearer_scheme(stack: Stack, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{stack.url}/docs")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() >= 10

    # The bearer scheme works from the Authorize button: a tried-out call is authenticated.
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "Swagger UI can call me", "Yes.")
    page.get_by_role("button", name="Authorize").first.click()
    expect(page.get_by_role("heading", name="SupabaseBearer (http, Bearer)")).to_be_visible()
    page.get_by_role("textbox", name="auth-bearer-value").fill(token(me))
    page.get_by_role("button", name="Apply credentials").click()
    page.get_by_role("button", name="Close", exact=True).click()
    listing = page.locator("#operations-memories-list_memories_memories_get")
    listing.locator(".opblock-summary").click()
    listing.get_by_role("button", name="Try it out").click()
    listing.get_by_role("button", name="Execute").click()
    expect(listing.locator(".live-responses-table td.response-col_status").last).to_have_text("200")
    expect(listing.locator(".live-responses-table")).to_contain_text("Swagger UI can call me")

    page.goto(f"{stack.url}/redoc")
    expect(page.get_by_text("/save-prompt").first).to_be_attached()
    assert watched.foreign == []
    # ReDoc asks for its vendor's logo; the page's policy keeps that request in the browser.
    assert all(url.startswith("https://cdn.redoc.ly/") for url in watched.stopped_by_policy)
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["SupabaseBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/memories"]["get"]["security"] == [{"SupabaseBearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_screenshot_of_the_dashboard(
    stack: Stack, watched: Watched, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    me = user()
    with stack.client(me) as mine:
        save_exchange(
            mine,
            "Plan a three day trip to Lisbon in spring",
            "Day 1: Alfama and the castle. Day 2: Belém. Day 3: Sintra.",
        )
        save_exchange(
            mine,
            "How do I configure pnpm workspaces?",
            "List packages in pnpm-workspace.yaml.",
            "claude",
        )
        save_exchange(
            mine, "Vegetarian lasagna for six", "Layer spinach, ricotta and tomato.", "gemini"
        )
    page = watched.page
    page.set_viewport_size({"width": 1100, "height": 1400})
    open_signed_in(page, stack.sign_in_url(me))
    expect(cards(page)).to_have_count(6)
    page.get_by_role("searchbox").fill("Lisbon")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(
        page.get_by_role("list", name="Search results").get_by_role("article").first
    ).to_contain_text("Lisbon")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=shot, full_page=False)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if request.config.getoption("--update-screenshot", default=False):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    watched.assert_clean()


def test_supabase_email_sign_in_comes_back_signed_in(
    browser: Browser, supabase_stack: tuple[Stack, SupabaseAuthStandIn]
) -> None:
    stack, auth = supabase_stack
    policy = httpx.get(f"{stack.url}/app/").headers["content-security-policy"]
    assert f"connect-src 'self' {auth.url};" in policy
    assert httpx.get(f"{stack.url}/app/config.json").json() == {
        "supabase_url": auth.url,
        "supabase_anon_key": ANON_KEY,
    }
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "Remember the Supabase project ref", "It is in the dashboard URL.")
    with watch(browser, stack.url) as watched:
        watched.origins.add(auth.url)
        page = watched.page
        page.goto(f"{stack.url}/app/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Email").fill("person@example.test")
        page.get_by_role("button", name="Send me a sign-in link").click()
        expect(page.get_by_text("Check your inbox")).to_be_visible()

        [sent] = auth.otp_requests
        assert sent.api_key == ANON_KEY
        assert sent.body == {"email": "person@example.test", "create_user": True}
        redirect = parse_qs(sent.query)["redirect_to"]
        assert redirect == [f"{stack.url}/app/"]
        # What the link in the email does: Supabase redirects with the session in the fragment.
        # The sign-in this tab started comes back for the address it was sent to: no question.
        page.goto(
            f"{redirect[0]}#access_token={token(me, email='person@example.test')}"
            "&expires_in=3600&refresh_token=r&token_type=bearer&type=magiclink"
        )
        expect(card_with(page, "Supabase project ref")).to_have_count(1)
        expect(page.get_by_role("dialog", name=SIGN_IN_DIALOG)).to_be_hidden()
        assert page.url == f"{stack.url}/app/"
        page.get_by_role("button", name="Sign out").click()

        # A link for another address, even after a sign-in was started, is asked about.
        page.get_by_label("Email").fill("person@example.test")
        page.get_by_role("button", name="Send me a sign-in link").click()
        expect(page.get_by_text("Check your inbox")).to_be_visible()
        page.goto(f"{redirect[0]}#access_token={token(user(), email='other@example.test')}")
        dialog = page.get_by_role("dialog", name=SIGN_IN_DIALOG)
        expect(dialog).to_contain_text("other@example.test")
        dialog.get_by_role("button", name="Cancel").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        watched.assert_clean()


def test_the_page_reads_exports_as_the_cli_importer_does(
    stack: Stack, watched: Watched, tmp_path: Path
) -> None:
    me = user()
    with stack.client(me) as mine:
        save_exchange(mine, "An exported question", "An exported answer", "claude")
        saved = mine.post("/save-prompt", json={"prompt": "No message id on this one"})
        assert saved.status_code == 200
        ndjson = tmp_path / "export.ndjson"
        ndjson.write_text(mine.get("/export").text)
    page = watched.page
    page.goto(f"{stack.url}/app/")
    for path in (
        EXPORTS / "chatgpt-conversations.json",
        EXPORTS / "claude-conversations.json",
        ndjson,
    ):
        parsed = page.evaluate(
            "async (text) => (await import('/app/imports.js')).itemsFromFile(text)",
            path.read_text(),
        )
        assert [same_instant(i) for i in parsed["items"]] == [
            same_instant(i) for i in batch_items(path)
        ], path.name
    watched.assert_clean()
