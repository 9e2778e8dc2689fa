"""Editing a memory through the gateway: PATCH /memories/{id} over real sockets, in front of
a real MemoryService (real model, embedded store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import MAX_FIELD_CHARS, MAX_METADATA_ENTRIES, MAX_TEXT_CHARS
from tests.reliability.stack import (
    GatewayServer,
    LoopThread,
    gateway_settings,
    start_memory_in_process,
    stop_memory_in_process,
)


@pytest.fixture(scope="module")
def gateway(
    sentence_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    model, name = sentence_model
    loop = LoopThread()
    memory, embedder = start_memory_in_process(
        loop, model, name, Path(tmp_path_factory.mktemp("edit"))
    )
    running = GatewayServer(loop, gateway_settings(memory.port)).start()
    yield running
    running.stop()
    stop_memory_in_process(loop, memory, embedder)
    loop.close()


def _search_texts(client: Any, query: str, mode: str) -> list[str]:
    response = client.post("/search", json={"query": query, "top_k": 10, "mode": mode})
    assert response.status_code == 200, response.text
    return [r["text"] for r in response.json()["results"]]


def test_patch_changes_what_search_finds_and_keeps_the_id(gateway: GatewayServer) -> None:
    old_text = "My locker code at the climbing gym is 4471"
    new_text = "The dentist moved my appointment to the ninth of October"
    with gateway.client("editor") as client:
        saved = client.post("/save-prompt", json={"prompt": old_text, "metadata": {"tag": "gym"}})
        assert saved.status_code == 200, saved.text
        original = saved.json()
        assert original["updated_at"] is None
        client.post("/save-prompt", json={"prompt": "I prefer window seats on long flights"})

        edited = client.patch(f"/memories/{original['id']}", json={"text": new_text})
        assert edited.status_code == 200, edited.text
        body = edited.json()
        assert body["id"] == original["id"]
        assert body["text"] == new_text
        assert body["created_at"] == original["created_at"]
        assert body["metadata"] == {"tag": "gym"}
        assert body["updated_at"] is not None and body["updated_at"] >= original["created_at"]

        # Both signals were rebuilt: the words and the meaning of the new text find it, and
        # the old text's words find nothing of it any more.
        assert _search_texts(client, "dentist appointment October", "keyword") == [new_text]
        assert _search_texts(client, "when do I see the dentist", "semantic")[0] == new_text
        assert _search_texts(client, "when do I see the dentist", "hybrid")[0] == new_text
        assert _search_texts(client, "locker climbing gym 4471", "keyword") == []
        assert old_text not in _search_texts(client, "locker code at the climbing gym", "hybrid")

        fetched = client.get(f"/memories/{original['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == body
        listed = client.get("/memories").json()["memories"]
        assert sorted(m["text"] for m in listed) == sorted(
            [new_text, "I prefer window seats on long flights"]
        )

        retagged = client.patch(f"/memories/{original['id']}", json={"metadata": {"tag": "dental"}})
        assert retagged.status_code == 200, retagged.text
        assert retagged.json()["metadata"] == {"tag": "dental"}
        assert retagged.json()["text"] == new_text
        assert _search_texts(client, "dentist appointment October", "keyword") == [new_text]
        cleared = client.patch(f"/memories/{original['id']}", json={"metadata": {}})
        assert cleared.status_code == 200, cleared.text
        assert client.get(f"/memories/{original['id']}").json()["metadata"] == {}


def test_patch_of_another_users_memory_is_404_and_changes_nothing(gateway: GatewayServer) -> None:
    with gateway.client("owner") as owner, gateway.client("intruder") as intruder:
        saved = owner.post("/save-prompt", json={"prompt": "Our wifi password is hunter2-owl"})
        assert saved.status_code == 200, saved.text
        memory_id = saved.json()["id"]

        refused = intruder.patch(f"/memories/{memory_id}", json={"text": "overwritten"})
        assert refused.status_code == 404, refused.text
        assert intruder.patch("/memories/not-a-uuid", json={"text": "x"}).status_code == 404

        unchanged = owner.get(f"/memories/{memory_id}").json()
        assert unchanged["text"] == "Our wifi password is hunter2-owl"
        assert unchanged["updated_at"] is None
        assert _search_texts(intruder, "overwritten", "keyword") == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"text": "   "}, 422),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 422),
        ({"text": "ok", "user_id": "someone"}, 422),
        ({"metadata": {f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES + 1)}}, 422),
        ({"metadata": {"k": "v" * (MAX_FIELD_CHARS + 1)}}, 422),
    ],
)
def test_patch_bodies_are_checked_like_saves(
    gateway: GatewayServer, body: dict[str, Any], status: int
) -> None:
    with gateway.client("validator") as client:
        saved = client.post("/save-prompt", json={"prompt": "something to edit"})
        assert saved.status_code == 200, saved.text
        response = client.patch(f"/memories/{saved.json()['id']}", json=body)
        assert response.status_code == status, response.text
