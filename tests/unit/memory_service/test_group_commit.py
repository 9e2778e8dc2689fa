"""Concurrent single saves share one store write, and each is answered only once stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory_service.group_commit import GroupCommit
from memory_service.models import Memory, MemoryKind, MemoryPoint, SparseVector
from memory_service.store import CollectionSpec, StoreError
from memory_service.store.embedded import EdgeMemoryStore

SPEC = CollectionSpec(model="test-model", dimension=4)


class CountingStore(EdgeMemoryStore):
    """The embedded store, recording the size of every insert it is asked for."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, SPEC)
        self.writes: list[int] = []

    async def insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        self.writes.append(len(points))
        return await super().insert_new(points)


def point(user: str, n: int, memory_id: str | None = None) -> MemoryPoint:
    memory = Memory(
        id=memory_id or str(uuid.uuid4()),
        user_id=user,
        kind=MemoryKind.PROMPT,
        text=f"note {n}",
        created_at=datetime.now(UTC),
    )
    return MemoryPoint(memory, [1.0, 0.0, 0.0, float(n % 3)], SparseVector([n], [1.0]))


async def test_concurrent_saves_go_out_together_and_all_are_stored(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    await store.open()
    commits = GroupCommit(store)
    points = [point("alice", n) for n in range(40)]

    stored = await asyncio.gather(*(commits.insert(p) for p in points))

    assert [m.id for m in stored] == [p.memory.id for p in points]
    assert store.writes == [40]
    await store.close()

    reopened = EdgeMemoryStore(tmp_path / "data", SPEC)
    await reopened.open()
    assert await reopened.count("alice") == 40
    await reopened.close()


async def test_saves_arriving_during_a_write_share_the_next(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    await store.open()
    commits = GroupCommit(store)

    first = asyncio.create_task(commits.insert(point("alice", 0)))
    while not store.writes:
        await asyncio.sleep(0)
    later = [asyncio.create_task(commits.insert(point("alice", n))) for n in range(1, 6)]
    await asyncio.gather(first, *later)

    assert store.writes == [1, 5]
    await store.close()


async def test_groups_are_bounded(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    await store.open()
    commits = GroupCommit(store, max_points=16)

    await asyncio.gather(*(commits.insert(point("alice", n)) for n in range(41)))

    assert store.writes == [16, 16, 9]
    await store.close()


async def test_same_id_in_one_group_is_stored_once(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    await store.open()
    commits = GroupCommit(store)
    memory_id = str(uuid.uuid4())

    first, again = await asyncio.gather(
        commits.insert(point("alice", 1, memory_id)), commits.insert(point("alice", 2, memory_id))
    )

    assert first.id == again.id == memory_id
    assert first.text == again.text == "note 1"
    assert await store.count("alice") == 1
    await store.close()


async def test_a_failed_write_fails_every_save_in_it(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    await store.open()
    commits = GroupCommit(store)
    alice = await seed(store)
    # An id held by another user fails the whole write it is in.
    group = [point("bob", n) for n in range(3)] + [point("mallory", 9, memory_id=alice.id)]

    results = await asyncio.gather(*(commits.insert(p) for p in group), return_exceptions=True)

    assert len(results) == 4
    assert all(isinstance(r, StoreError) for r in results)
    assert await store.count("bob") == 0
    await store.close()


async def test_a_save_arriving_after_a_failure_is_written(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "data")
    await store.open()
    commits = GroupCommit(store)
    with pytest.raises(StoreError):
        await commits.insert(point("mallory", 0, memory_id=(await seed(store)).id))

    stored = await commits.insert(point("alice", 1))

    assert await store.get("alice", stored.id) == stored
    await store.close()


async def seed(store: EdgeMemoryStore) -> Memory:
    (memory,) = await store.insert_new([point("alice", 0)])
    return memory
