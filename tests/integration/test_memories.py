"""Saving and searching one user's memories: the real model and the embedded store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory_service.batch import BatchItem, save_batch
from memory_service.embedding.scheduler import Embedder
from memory_service.memories import WRITES_PER_USER, Memories, NewMemory
from memory_service.models import MemoryKind, SearchFilters, SearchMode
from memory_service.store import CollectionSpec
from memory_service.store.embedded import EdgeMemoryStore
from service_kit.errors import InvalidArgumentError
from service_kit.identity import Identity

ALICE = Identity("alice")


@pytest.fixture
async def memories(embedder: Embedder, tmp_path: Path) -> AsyncIterator[Memories]:
    store = EdgeMemoryStore(tmp_path, CollectionSpec(embedder.model_name, embedder.dimension))
    await store.open()
    yield Memories(embedder, store, id_key=b"memories-test-id-key", relevance_floor=0.3)
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


async def test_one_users_concurrent_deletes_run_a_few_at_a_time(
    memories: Memories, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = Identity("alice"), Identity("bob")
    mine = [await memories.save(alice, NewMemory(text=f"alice note {n}")) for n in range(12)]
    theirs = await memories.save(bob, NewMemory(text="bob's note"))
    running: dict[str, int] = {"alice": 0, "bob": 0}
    most: dict[str, int] = {"alice": 0, "bob": 0}
    delete = memories.store.delete

    async def observed(user_id: str, memory_id: str) -> bool:
        running[user_id] += 1
        most[user_id] = max(most[user_id], running[user_id])
        try:
            await asyncio.sleep(0.01)
            return await delete(user_id, memory_id)
        finally:
            running[user_id] -= 1

    monkeypatch.setattr(memories.store, "delete", observed)
    bob_done = asyncio.Event()

    async def bob_deletes() -> None:
        await memories.delete(bob, theirs.id)
        bob_done.set()

    alices = [asyncio.create_task(memories.delete(alice, m.id)) for m in mine]
    await asyncio.sleep(0)
    await bob_deletes()
    # Bob did not wait for Alice's burst to drain.
    assert sum(not task.done() for task in alices) > 0 and bob_done.is_set()
    await asyncio.gather(*alices)

    assert most["alice"] == WRITES_PER_USER and most["bob"] == 1
    assert await memories.store.count("alice") == 0
    assert len(memories.user_writes) == 0


async def test_yesterday_is_the_persons_own_day_in_their_time_zone(
    embedder: Embedder, tmp_path: Path
) -> None:
    # Asked on day D + 2 at 07:00 in Johannesburg (UTC+2 all year), 05:00 UTC.
    asked = datetime(2026, 3, 12, 5, 0, tzinfo=UTC)
    store = EdgeMemoryStore(tmp_path, CollectionSpec(embedder.model_name, embedder.dimension))
    await store.open()
    memories = Memories(embedder, store, id_key=b"memories-test-id-key", clock=lambda: asked)
    try:
        said = [
            # 23:30 UTC on D: 01:30 on D + 1 in Johannesburg, the day before D + 2 there.
            ("I booked a table at the Italian place", datetime(2026, 3, 10, 23, 30, tzinfo=UTC)),
            # 23:30 UTC on D + 1: the day before D + 2 in UTC, but D + 2 in Johannesburg.
            ("I booked a table at the Thai place", datetime(2026, 3, 11, 23, 30, tzinfo=UTC)),
        ]
        await save_batch(
            memories,
            ALICE,
            [BatchItem(NewMemory(text, message_id=text), created_at=at) for text, at in said],
        )

        async def dated(time_zone: str) -> set[str]:
            found = await memories.search(
                ALICE,
                "what did I book yesterday",
                5,
                SearchMode.HYBRID,
                SearchFilters(),
                explain=True,
                time_zone=time_zone,
            )
            assert len(found) == 2
            return {r.memory.text for r in found if "date" in (r.contributions or {})}

        assert await dated("Africa/Johannesburg") == {said[0][0]}
        assert await dated("") == {said[1][0]}
        with pytest.raises(InvalidArgumentError, match="unknown time zone 'Mars/Olympus'"):
            await dated("Mars/Olympus")
    finally:
        await store.close()
