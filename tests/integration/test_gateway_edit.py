"""Editing a memory through the gateway: PATCH /memories/{id} over real sockets, in front of
a real MemoryService (real model, embedded store)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service_kit.limits import MAX_FIELD_CHARS, MAX_METADATA_ENTRIES, MAX_TEXT_CHARS
from tests.support.auth import Keys, bearer, new_user
from tests.support.stack import Gateway


async def _search_texts(client: httpx.AsyncClient, query: str, mode: str) -> list[str]:
    response = await client.post("/search", json={"query": query, "top_k": 10, "mode": mode})
    assert response.status_code == 200, response.text
    return [r["text"] for r in response.json()["results"]]


async def test_patch_changes_what_search_finds_and_keeps_the_id(
    gateway: Gateway, keys: Keys
) -> None:
    old_text = "My locker code at the climbing gym is 4471"
    new_text = "The dentist moved my appointment to the ninth of October"
    other_text = "I prefer window seats on long flights"
    async with gateway.client(headers=bearer(keys.es256(new_user()))) as client:
        saved = await client.post(
            "/save-prompt", json={"prompt": old_text, "metadata": {"tag": "gym"}}
        )
        assert saved.status_code == 200, saved.text
        original = saved.json()
        assert original["updated_at"] is None
        assert (await client.post("/save-prompt", json={"prompt": other_text})).status_code == 200

        edited = await client.patch(f"/memories/{original['id']}", json={"text": new_text})
        assert edited.status_code == 200, edited.text
        body = edited.json()
        assert body["id"] == original["id"]
        assert body["text"] == new_text
        assert body["created_at"] == original["created_at"]
        assert body["metadata"] == {"tag": "gym"}
        assert body["updated_at"] is not None and body["updated_at"] >= original["created_at"]

        # Both signals were rebuilt: the words and the meaning of the new text find it, and
        # the old text's words find nothing of it any more.
        assert await _search_texts(client, "dentist appointment October", "keyword") == [new_text]
        assert (await _search_texts(client, "when do I see the dentist", "semantic"))[0] == new_text
        assert (await _search_texts(client, "when do I see the dentist", "hybrid"))[0] == new_text
        assert await _search_texts(client, "locker climbing gym 4471", "keyword") == []
        assert old_text not in await _search_texts(client, "locker code climbing gym", "hybrid")

        fetched = await client.get(f"/memories/{original['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == body
        listed = (await client.get("/memories")).json()["memories"]
        assert sorted(m["text"] for m in listed) == sorted([new_text, other_text])

        retagged = await client.patch(
            f"/memories/{original['id']}", json={"metadata": {"tag": "dental"}}
        )
        assert retagged.status_code == 200, retagged.text
        assert retagged.json()["metadata"] == {"tag": "dental"}
        assert retagged.json()["text"] == new_text
        assert await _search_texts(client, "dentist appointment October", "keyword") == [new_text]
        cleared = await client.patch(f"/memories/{original['id']}", json={"metadata": {}})
        assert cleared.status_code == 200, cleared.text
        assert (await client.get(f"/memories/{original['id']}")).json()["metadata"] == {}


async def test_patch_of_another_users_memory_is_404_and_changes_nothing(
    gateway: Gateway, keys: Keys
) -> None:
    async with (
        gateway.client(headers=bearer(keys.es256(new_user()))) as owner,
        gateway.client(headers=bearer(keys.es256(new_user()))) as intruder,
    ):
        saved = await owner.post("/save-prompt", json={"prompt": "Our wifi password is owl-77"})
        assert saved.status_code == 200, saved.text
        memory_id = saved.json()["id"]

        refused = await intruder.patch(f"/memories/{memory_id}", json={"text": "overwritten"})
        assert refused.status_code == 404, refused.text
        assert (await intruder.patch("/memories/not-a-uuid", json={"text": "x"})).status_code == 404

        unchanged = (await owner.get(f"/memories/{memory_id}")).json()
        assert unchanged["text"] == "Our wifi password is owl-77"
        assert unchanged["updated_at"] is None
        assert await _search_texts(intruder, "overwritten", "keyword") == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "   "},
        {"text": "x" * (MAX_TEXT_CHARS + 1)},
        {"text": "ok", "user_id": "someone"},
        {"metadata": {f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES + 1)}},
        {"metadata": {"k": "v" * (MAX_FIELD_CHARS + 1)}},
    ],
)
async def test_patch_bodies_are_checked_like_saves(
    gateway: Gateway, keys: Keys, body: dict[str, Any]
) -> None:
    async with gateway.client(headers=bearer(keys.es256(new_user()))) as client:
        saved = await client.post("/save-prompt", json={"prompt": "something to edit"})
        assert saved.status_code == 200, saved.text
        response = await client.patch(f"/memories/{saved.json()['id']}", json=body)
        assert response.status_code == 422, response.text
        assert (await client.get(f"/memories/{saved.json()['id']}")).json()["updated_at"] is None
