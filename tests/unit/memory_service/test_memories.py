"""Saving and searching one user's memories: the real model and the embedded store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory_service.embedder import Embedder
from memory_service.memories import Memories, NewMemory
from memory_service.models import MemoryKind, SearchFilters, SearchMode
from memory_service.store import CollectionSpec
from memory_service.store.edge import EdgeMemoryStore
from service_kit.identity import Identity

ALICE = Identity("alice")


@pytest.fixture
async def memories(embedder: Embedder, tmp_path: Path) -> AsyncIterator[Memories]:
    store = EdgeMemoryStore(tmp_path, CollectionSpec(embedder.model_name, embedder.dimension))
    await store.open()
    yield Memories(embedder, store, relevance_floor=0.3)
    await store.close()


async def test_the_same_text_saved_again_is_the_first_memory_seen_twice(
    memories: Memories,
) -> None:
    first = await memories.save(ALICE, NewMemory("The gym opens at 6am on weekdays."))
    again = await memories.save(ALICE, NewMemory("the gym opens at 6AM  on weekdays."))
    answer = await memories.save(
        ALICE, NewMemory("The gym opens at 6am on weekdays.", kind=MemoryKind.RESPONSE)
    )

    assert again.id == first.id and again.text == first.text
    assert again.created_at == first.created_at
    stored = await memories.get(ALICE, first.id)
    assert stored.seen_count == 2
    assert answer.id != first.id
    assert (await memories.save(Identity("bob"), NewMemory(first.text))).id != first.id


async def test_search_returns_one_copy_of_a_text_saved_under_two_message_ids(
    memories: Memories,
) -> None:
    for message_id in ("tab-1", "tab-2"):
        await memories.save(ALICE, NewMemory("My locker code is 3141.", message_id=message_id))
    await memories.save(ALICE, NewMemory("I parked on level 4."))

    # SearchMode.RRF is the earlier ranking, kept unchanged as a baseline.
    for mode in (SearchMode.HYBRID, SearchMode.SEMANTIC, SearchMode.KEYWORD):
        found = await memories.search(ALICE, "locker code", 5, mode, SearchFilters())
        texts = [r.memory.text for r in found]
        assert texts.count("My locker code is 3141.") == 1, mode


async def test_a_text_saved_again_after_its_memory_was_edited_is_a_memory_of_its_own(
    memories: Memories,
) -> None:
    first = await memories.save(ALICE, NewMemory("Dinner with Sam on Friday."))
    await memories.update(ALICE, first.id, text="Dinner with Sam moved to Saturday.")

    again = await memories.save(ALICE, NewMemory("Dinner with Sam on Friday."))

    assert again.id != first.id and again.text == "Dinner with Sam on Friday."
    assert (await memories.get(ALICE, first.id)).text == "Dinner with Sam moved to Saturday."
