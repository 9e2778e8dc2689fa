"""Nothing lost: while the server cannot be reached, or answers 404 for a while, the chat goes
on as typed, captures wait in the extension's storage, and once the server is back each arrives
exactly once, also when the browser was closed and opened again in between, and also when the
backlog is larger than the server takes in one request; a busy server's Retry-After is
honoured."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack, gateway_process
from tests.support.extension import (
    BatchStandIn,
    ExtensionBrowser,
    NotFoundThenForward,
    memories,
    send_prompt,
    sent,
    stored,
    wait_for,
    wait_for_answers,
)
from tests.support.stack import GatewayProcess

# Backoff is capped at 30 s; the batch that follows a restart may wait that long.
DELIVERY_TIMEOUT = 90.0


@pytest.fixture
def gateway(stack: Stack) -> Iterator[GatewayProcess]:
    """A gateway of its own, on the stack's memory service, that a test stops and restarts
    on the same port."""
    own = gateway_process(stack.memory_addr).start()
    try:
        yield own
    finally:
        own.close()


def queued(browser: ExtensionBrowser, count: int) -> None:
    wait_for(lambda: len(browser.queue()) == count, 20)


def test_captures_wait_for_the_server_and_arrive_once(
    stack: Stack, gateway: GatewayProcess, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(gateway.url, user, inject="auto")
    page = browser.open_site("claude")
    gateway.stop()

    # The server is down: the page still sends what was typed, without delay or memories.
    send_prompt(page, "Which trail should we hike on Saturday?")
    wait_for_answers(page, 1)
    send_prompt(page, "Is the lake trail open in winter?", how="click")
    wait_for_answers(page, 2)
    assert sent(page) == [
        "Which trail should we hike on Saturday?",
        "Is the lake trail open in winter?",
    ]
    queued(browser, 4)
    popup = browser.popup()
    expect(popup.get_by_text("Queue: 4 waiting", exact=False)).to_be_visible()

    gateway.start()
    with stack.client(user) as client:
        found = stored(client, 4, DELIVERY_TIMEOUT)
        expect(popup.get_by_text("Queue: 0 waiting")).to_be_visible(timeout=10000)
        prompts = {m["id"]: m for m in found if m["kind"] == "prompt"}
        answers = [m for m in found if m["kind"] == "response"]
        assert sorted(m["text"] for m in prompts.values()) == [
            "Is the lake trail open in winter?",
            "Which trail should we hike on Saturday?",
        ]
        assert all(answer["prompt_id"] in prompts for answer in answers)
        assert len({answer["prompt_id"] for answer in answers}) == 2
        time.sleep(5)
        assert len(memories(client)) == 4


def test_captures_survive_a_browser_restart(
    stack: Stack, gateway: GatewayProcess, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(gateway.url, user, inject="off")
    page = browser.open_site("gemini")
    gateway.stop()
    send_prompt(page, "Remind me which tyres fit my bicycle")
    wait_for_answers(page, 1)
    queued(browser, 2)

    browser.close()
    gateway.start()
    browser.launch()

    with stack.client(user) as client:
        found = stored(client, 2, DELIVERY_TIMEOUT)
        assert sorted(m["kind"] for m in found) == ["prompt", "response"]
        wait_for(lambda: browser.queue() == [], 20)
        time.sleep(5)
        assert len(memories(client)) == 2


def test_a_busy_server_is_retried_no_sooner_than_it_asks(
    user: str, open_extension: OpenExtension
) -> None:
    with BatchStandIn(retry_after_seconds=5) as server:
        browser = open_extension(server.url, user, inject="off")
        page = browser.open_site("perplexity")
        send_prompt(page, "Which seeds can I sow in March?")
        wait_for_answers(page, 1)

        wait_for(lambda: sum(n for _, n, status in server.batches if status == 200) == 2, 40)
        (refused_at, _, status), *later = server.batches
        assert status == 429
        # Without Retry-After the first retry comes after about a second.
        assert all(at - refused_at >= 5 for at, _, _ in later)
        wait_for(lambda: browser.queue() == [], 10)


def test_captures_outlast_a_server_answering_404_and_arrive_once(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    with NotFoundThenForward(stack.url, seconds=15) as proxy:
        browser = open_extension(proxy.url, user, inject="off")
        page = browser.open_site("claude")
        send_prompt(page, "Which trail should we hike on Saturday?")
        wait_for_answers(page, 1)

        # A whole request's 404 is a connection problem to show, never a reason to drop.
        popup = browser.popup()
        expect(popup.get_by_role("status")).to_have_text(
            f"Not connected: the server at {proxy.url} answers 404 for /memories/batch"
            " — is the URL right?",
            timeout=10000,
        )
        send_prompt(page, "Is the lake trail open in winter?", how="click")
        wait_for_answers(page, 2)
        assert ("POST", "/memories/batch", 404) in proxy.seen

        with stack.client(user) as client:
            found = stored(client, 4, DELIVERY_TIMEOUT)
            prompts = {m["id"]: m["text"] for m in found if m["kind"] == "prompt"}
            assert sorted(prompts.values()) == [
                "Is the lake trail open in winter?",
                "Which trail should we hike on Saturday?",
            ]
            answers = [m for m in found if m["kind"] == "response"]
            assert sorted(prompts[a["prompt_id"]] for a in answers) == sorted(prompts.values())
            expect(popup.get_by_role("status")).to_have_text("Connected", timeout=10000)
            wait_for(lambda: browser.queue() == [], 20)
            time.sleep(5)
            assert len(memories(client)) == 4
            assert browser.queue("refused") == []


def long_line(n: int, chars: int) -> str:
    """One line of about `chars` characters (the stand-in answers about a prompt's last line)."""
    words = " ".join(f"grain{n}-{i}" for i in range(chars // 10))
    return f"Backlog question {n}: {words}"


def test_a_backlog_larger_than_the_body_cap_arrives_whole(
    stack: Stack, gateway: GatewayProcess, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(gateway.url, user, inject="off")
    page = browser.open_site("chatgpt")
    # A first capture: the worker learns what the gateway takes (bodies of 4 MiB).
    send_prompt(page, "A short first question")
    with stack.client(user) as client:
        stored(client, 2)

    # It comes back taking 32 KiB bodies, less than it said, less than what waits by then.
    gateway.stop()
    gateway.env["GATEWAY_MAX_BATCH_BODY_BYTES"] = str(32 * 1024)
    texts = [long_line(n, 12000) for n in range(4)]
    editor = page.get_by_role("textbox")
    for n, text in enumerate(texts):
        editor.click()
        page.keyboard.insert_text(text)
        editor.press("Enter")
        wait_for_answers(page, n + 2)
    queued(browser, 8)
    backlog = sum(
        len(record["item"].get("prompt") or record["item"]["response"])
        for record in browser.queue()
    )
    assert backlog > 3 * 32 * 1024

    gateway.start()
    with stack.client(user) as client:
        found = stored(client, 10, DELIVERY_TIMEOUT)
        prompts = {m["id"]: m["text"] for m in found if m["kind"] == "prompt"}
        assert sorted(texts) == sorted(t for t in prompts.values() if t.startswith("Backlog"))
        answers = [m for m in found if m["kind"] == "response"]
        assert all(prompts[a["prompt_id"]] in a["text"] for a in answers)
        assert all("part" not in m["metadata"] for m in found)
        wait_for(lambda: browser.queue() == [], 20)
        time.sleep(5)
        assert len(memories(client)) == 10
        assert browser.queue("refused") == []


def test_items_the_server_refuses_by_name_are_kept_and_exported(
    user: str, open_extension: OpenExtension
) -> None:
    reason = "prompt: this server keeps no prompts about seeds"
    with BatchStandIn(refuse=reason) as server:
        browser = open_extension(server.url, user, inject="off")
        page = browser.open_site("perplexity")
        send_prompt(page, "Which seeds can I sow in March?")
        wait_for_answers(page, 1)
        wait_for(lambda: len(browser.queue("refused")) == 2, 30)
        assert browser.queue() == []

        popup = browser.popup()
        expect(popup.get_by_text(f"2 refused by the server: {reason}")).to_be_visible()
        with popup.expect_download() as download:
            popup.get_by_role("button", name="Export refused").click()
        exported = json.loads(Path(download.value.path()).read_text())
        assert {r["reason"] for r in exported} == {reason}
        texts = sorted(r["item"].get("prompt") or r["item"]["response"] for r in exported)
        assert texts == [
            "Here is what I know about Which seeds can I sow in March?. That is all for now.",
            "Which seeds can I sow in March?",
        ]
        # Refused is an answer: nothing is sent again.
        batches = len(server.batches)
        time.sleep(5)
        assert len(server.batches) == batches
