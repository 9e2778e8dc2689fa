"""The embedded store: persisted under its data dir and held by one process, users spread
over shards, no pages kept that opening read, by-id reads only for the owner, and shards
flushed every so many updates."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory_service.store import (
    CollectionSpec,
    DimensionMismatchError,
    StoreError,
)
from memory_service.store.embedded import EdgeMemoryStore, EdgeShardSlot
from memory_service.store.embedded import store as embedded_store
from tests.support import embedded_store as maintained
from tests.support.store_points import SPEC, point


async def test_embedded_store_persists_and_checks_dimension(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = EdgeMemoryStore(data, SPEC)
    await first.open()
    p = point("u", "durable", 0)
    await first.upsert([p])
    await first.close()

    again = EdgeMemoryStore(data, SPEC)
    await again.open()
    assert (await again.get("u", p.memory.id)) is not None
    await again.close()

    wider = EdgeMemoryStore(data, CollectionSpec(model="test-model", dimension=16))
    with pytest.raises(DimensionMismatchError, match=r"holds 8-dimensional .* produces 16"):
        await wider.open()
    await wider.close()


async def test_embedded_store_refuses_a_second_process(tmp_path: Path) -> None:
    first = EdgeMemoryStore(tmp_path / "data", SPEC)
    await first.open()
    second = EdgeMemoryStore(tmp_path / "data", SPEC)
    with pytest.raises(StoreError, match="in use"):
        await second.open()
    await second.close()
    await first.close()


async def test_embedded_store_spreads_users_over_shards_it_keeps(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path / "data", SPEC)
    await store.open()
    users = [f"user-{i}" for i in range(40)]
    await store.upsert([point(u, f"{u} note", i) for i, u in enumerate(users)])

    held = [await store.shard_points(slot) for slot in store.shards()]
    assert len(held) == 8 and sum(held) == 40 and min(held) > 0
    assert await store.count() == 40
    assert await store.count_users() == 40
    await store.close()
    # The shards a store was created with stay, whatever a later start asks for.
    again = EdgeMemoryStore(tmp_path / "data", SPEC, shards=2)
    await again.open()
    assert len(again.shards()) == 8
    assert await again.count("user-3") == 1
    await again.close()


def resident_kb_under(directory: Path) -> int:
    """This process's resident pages of files under directory."""
    total, inside = 0, False
    prefix = str(directory.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:
            inside = len(fields) > 5 and fields[5].startswith(prefix)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


async def test_embedded_store_keeps_no_pages_it_read_while_opening(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path / "data", SPEC)
    await store.open()
    points = [point(f"user-{i % 20}", f"note {i}", i) for i in range(2000)]
    await store.upsert(points)
    await store.close()

    reopened = EdgeMemoryStore(tmp_path / "data", SPEC)
    await reopened.open()
    # The engine read each shard's log and appendable indexes (megabytes) while opening.
    assert resident_kb_under(tmp_path / "data") < 1024
    assert await reopened.get("user-3", points[3].memory.id) == points[3].memory
    await reopened.close()


async def test_embedded_store_reads_and_deletes_by_id_only_for_the_owner(tmp_path: Path) -> None:
    store = EdgeMemoryStore(tmp_path / "data", SPEC)
    await store.open()
    # Two users whose memories share a shard, so the owner check is what keeps them apart.
    alice = "alice"
    neighbour = next(
        f"carol-{n}" for n in range(1000) if store.slot_of(f"carol-{n}") is store.slot_of(alice)
    )
    mine, theirs = point(alice, "alice note", 0), point(neighbour, "carol note", 1)
    await store.upsert([mine, theirs])

    assert await store.get(neighbour, mine.memory.id) is None
    assert not await store.delete(neighbour, mine.memory.id)
    assert await store.get(alice, mine.memory.id) == mine.memory
    assert await store.delete(neighbour, theirs.memory.id)
    assert await store.get(neighbour, theirs.memory.id) is None
    assert await store.count(alice) == 1 and await store.count(neighbour) == 0
    await store.close()


async def test_a_shard_is_flushed_every_so_many_updates(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embedded_store, "FLUSH_EVERY_UPDATES", 3)
    store = await maintained.open_store(tmp_path / "data")
    slot = store.slot_of("alice")
    points = [maintained.point("alice", n) for n in range(5)]
    flushed: list[int] = []
    flush = store._flush

    async def counted(s: EdgeShardSlot) -> None:
        flushed.append(s.updates_since_flush)
        await flush(s)

    monkeypatch.setattr(store, "_flush", counted)
    for p in points:
        await store.upsert([p])
    # The third update flushed the shard; two came after.
    assert flushed == [3] and slot.updates_since_flush == 2
    for p in points[:2]:
        await store.delete("alice", p.memory.id)
    assert flushed == [3, 3] and slot.updates_since_flush == 1
    assert await store.count("alice") == 3
    await store.close()
