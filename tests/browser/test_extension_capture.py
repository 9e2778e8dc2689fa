"""The extension on the four chat sites as a person uses them: what they type and the answer
they get are stored once, linked, with the site and the conversation; a page the adapter no
longer recognises keeps working and nothing is captured."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OpenExtension
from tests.support.browser import Stack
from tests.support.extension import SITES, memories, send_prompt, sent, stored

# One site sends with Enter, the next with its button, so both paths are covered.
HOW = {"chatgpt": "enter", "claude": "click", "gemini": "enter", "perplexity": "click"}


@pytest.mark.parametrize("site_id", list(SITES))
def test_prompt_and_answer_stored_once_linked(
    stack: Stack, user: str, open_extension: OpenExtension, site_id: str
) -> None:
    browser = open_extension(stack.url, user, inject="off")
    page = browser.open_site(site_id)
    typed = "How long should sourdough starter ferment before baking?"

    send_prompt(page, typed, how=HOW[site_id])

    with stack.client(user) as client:
        found = stored(client, 2)
        prompt = next(m for m in found if m["kind"] == "prompt")
        answer = next(m for m in found if m["kind"] == "response")
        assert sent(page) == [typed]
        assert prompt["text"] == typed
        assert answer["text"] == f"Here is what I know about {typed}. That is all for now."
        assert prompt["provider"] == answer["provider"] == site_id
        conversation = page.url.rstrip("/").split("/")[-1]
        assert prompt["conversation_id"] == answer["conversation_id"] == conversation
        assert prompt["url"] == page.url
        assert answer["prompt_id"] == prompt["id"]
        assert prompt["response_id"] == answer["id"]

        # The site renders the conversation again after a reload: nothing is stored twice.
        page.reload()
        page.get_by_role("textbox").wait_for()
        expect(page.get_by_text(answer["text"])).to_be_visible()
        time.sleep(3)
        assert len(memories(client)) == 2

        # A second message in the same conversation is a new pair in that conversation.
        follow_up = "And at what temperature?"
        send_prompt(page, follow_up, how="click" if HOW[site_id] == "enter" else "enter")
        found = stored(client, 4)
        second = next(m for m in found if m["text"] == follow_up)
        assert second["conversation_id"] == conversation
        assert second["message_id"] != prompt["message_id"]
        assert sent(page) == [typed, follow_up]


def test_unrecognised_page_pauses_capture_and_still_sends(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, inject="auto", broken=("claude",))
    page = browser.open_site("claude")
    popup = browser.popup()

    expect(popup.get_by_text("Claude: page not recognised — capture paused")).to_be_visible(
        timeout=15000
    )
    send_prompt(page, "What is a good name for a cat?", how="enter")
    expect(page.get_by_text("Here is what I know about What is a good name")).to_be_visible()
    assert sent(page) == ["What is a good name for a cat?"]
    time.sleep(3)
    with stack.client(user) as client:
        assert memories(client) == []
    # The other sites are not affected.
    expect(popup.get_by_text(re.compile("ChatGPT: page not recognised"))).to_have_count(0)


def test_temporary_chat_is_not_captured(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, inject="off")
    page = browser.open_site("chatgpt", "/?temporary-chat=true")
    send_prompt(page, "Something I do not want kept")
    expect(page.get_by_text("That is all for now.")).to_be_visible()
    time.sleep(3)
    assert sent(page) == ["Something I do not want kept"]
    with stack.client(user) as client:
        assert memories(client) == []


def test_a_thread_showing_only_its_last_turns_after_a_reload_gives_new_prompts_new_ids(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, inject="off")
    # After a reload the site renders only the thread's last two turns.
    browser.recent["claude"] = 2
    page = browser.open_site("claude")
    earlier = [
        "How long should sourdough starter ferment before baking?",
        "Can rye flour replace wheat in a starter?",
        "What hydration suits a spelt loaf?",
    ]
    with stack.client(user) as client:
        for n, text in enumerate(earlier, start=1):
            send_prompt(page, text, how="enter" if n % 2 else "click")
            stored(client, 2 * n)
        before = {m["id"]: m for m in memories(client)}

        page.reload()
        page.get_by_role("textbox").wait_for()
        expect(page.get_by_text(earlier[2], exact=True)).to_be_visible()
        expect(page.get_by_text(earlier[0], exact=True)).to_have_count(0)
        expect(page.get_by_text(earlier[1], exact=True)).to_have_count(0)

        follow_up = "And how warm should the kitchen be?"
        send_prompt(page, follow_up)
        found = stored(client, 8)
        prompt = next(m for m in found if m["text"] == follow_up)
        answer = next(
            m for m in found if m["kind"] == "response" and m["prompt_id"] == prompt["id"]
        )
        assert answer["text"] == f"Here is what I know about {follow_up}. That is all for now."
        assert prompt["response_id"] == answer["id"]
        assert prompt["conversation_id"] == answer["conversation_id"] == page.url.split("/")[-1]
        assert prompt["message_id"] not in {m["message_id"] for m in before.values()}
        # The earlier turns are as they were: same ids, texts and links.
        fields = ("text", "message_id", "prompt_id", "response_id")
        after = {m["id"]: m for m in found}
        for memory_id, memory in before.items():
            assert {f: after[memory_id][f] for f in fields} == {f: memory[f] for f in fields}


def test_an_answer_longer_than_the_server_takes_arrives_in_linked_parts(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, inject="off")
    page = browser.open_site("gemini")
    # One line: the stand-in's answer repeats it, so both are about 60,000 characters.
    typed = "Summarise this: " + " ".join(f"word{n}" for n in range(7500))
    assert 60_000 <= len(typed) < 100_000
    editor = page.get_by_role("textbox")
    editor.click()
    page.keyboard.insert_text(typed)
    editor.press("Enter")
    answer_text = f"Here is what I know about {typed}. That is all for now."

    with stack.client(user) as client:
        limit = client.get("/limits").json()["max_text_chars"]
        found = stored(client, 4, 90)

    def parts(kind: str) -> list[dict[str, Any]]:
        own = [m for m in found if m["kind"] == kind]
        return sorted(own, key=lambda m: int(m["metadata"]["part"]))

    prompts, answers = parts("prompt"), parts("response")
    assert all(len(m["text"]) <= limit for m in found)
    assert "".join(m["text"] for m in prompts) == typed
    assert "".join(m["text"] for m in answers) == answer_text
    assert {m["metadata"]["parts"] for m in found} == {"2"}
    first_prompt, first_answer = prompts[0], answers[0]
    assert prompts[1]["metadata"]["part_of"] == first_prompt["message_id"]
    # Every part of the answer answers the prompt; the prompt's answer is the first part.
    assert {m["prompt_id"] for m in answers} == {first_prompt["id"]}
    assert first_prompt["response_id"] == first_answer["id"]
    assert answers[1]["metadata"]["part_of"] == first_answer["message_id"]


def test_a_capture_keeps_the_browsers_time_zone(
    stack: Stack, user: str, open_extension: OpenExtension
) -> None:
    browser = open_extension(stack.url, user, inject="off")
    page = browser.open_site("claude")
    zone = page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")

    send_prompt(page, "Which bus goes to the old town?", how="enter")

    with stack.client(user) as client:
        found = stored(client, 2)
    assert zone
    assert [m["metadata"].get("time_zone") for m in found] == [zone, zone]
