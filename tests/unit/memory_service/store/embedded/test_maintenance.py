"""Maintenance of the embedded store: deleted points leave the disk, every acknowledged
write survives, the store answers throughout, and the schedule runs when it is due."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from memory_service.store.embedded.files import directory_bytes
from tests.support.embedded_store import (
    maintenance,
    neighbour,
    open_store,
    point,
    search,
)


async def test_deleted_points_leave_the_disk_and_the_rest_stay(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    alice = [point("alice", n) for n in range(3000)]
    bob = [point("bob", n) for n in range(1000)]
    await store.upsert(alice + bob)
    for p in alice[::2]:
        await store.delete("alice", p.memory.id)
    before = directory_bytes(store.collections_dir)
    bob_results = await search(store, "bob", 3)
    untouched = [slot.name for slot in store.shards() if slot is not store.slot_of("alice")]

    run = await maintenance(store).run()

    assert run.bytes_before == before
    assert run.bytes_after < before
    assert directory_bytes(store.collections_dir) == run.bytes_after
    assert await store.count("alice") == 1500
    assert await store.count("bob") == 1000
    assert await search(store, "bob", 3) == bob_results
    assert await store.get("alice", alice[1].memory.id) == alice[1].memory
    assert await store.get("alice", alice[0].memory.id) is None
    # The optimized copy is alice's shard now; the old one is gone from the disk. Shards
    # where nothing was deleted were left as they were.
    alices = store.slot_of("alice")
    assert [p.name for p in store.shard_copies(alices)] == [alices.name]
    assert alices.name != alices.base
    assert [slot.name for slot in store.shards() if slot is not alices] == untouched
    assert run.shards == 1
    await store.close()


async def test_writes_during_maintenance_are_kept_across_a_restart(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    seeded = [point("alice", n) for n in range(3000)]
    await store.upsert(seeded)
    await store.delete_user("alice")
    await store.upsert([point("bob", n) for n in range(500)])
    # In the shard being maintained, so that these writes reach it through its journal.
    carol = neighbour(store, "alice")
    during = [point(carol, n) for n in range(200)]
    searches: list[list[str]] = []

    async def keep_writing() -> None:
        for p in during:
            await store.insert_new([p])
            searches.append(await search(store, "bob", len(searches)))
            await asyncio.sleep(0.002)

    run, _ = await asyncio.gather(maintenance(store).run(), keep_writing())

    assert run.bytes_after < run.bytes_before
    assert len(searches) == len(during) and all(len(found) == 5 for found in searches)
    await store.close()
    manifest = json.loads((tmp_path / "data" / "memory-layer.json").read_text())
    assert manifest["shards"] == [slot.name for slot in store.shards()]
    assert store.slot_of("alice").name in manifest["shards"]

    reopened = await open_store(tmp_path / "data")
    assert [slot.name for slot in reopened.shards()] == manifest["shards"]
    assert await reopened.count(carol) == 200
    assert await reopened.count("bob") == 500
    assert await reopened.count("alice") == 0
    for p in during[::37]:
        assert await reopened.get(carol, p.memory.id) == p.memory
    await reopened.close()


async def test_the_schedule_runs_once_enough_was_deleted(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    points = [point("alice", n) for n in range(1000)]
    await store.upsert(points)
    scheduled = maintenance(store)
    runner = asyncio.create_task(scheduled.run_forever())
    try:
        await asyncio.sleep(0.3)
        assert scheduled.runs == []
        # Nothing was due, but what was written got flushed, so that the next flush (when
        # a run copies the shard) has only what came after to write.
        assert not any(slot.written for slot in store.shards())
        await store.delete("alice", points[0].memory.id)
        await asyncio.sleep(0.3)
        # One deletion in a thousand is below the share worth a run.
        assert scheduled.runs == []
        await store.delete_user("alice")
        async with asyncio.timeout(60):
            while not scheduled.runs:
                await asyncio.sleep(0.05)
    finally:
        runner.cancel()
    assert store.deleted_since_maintenance == 0
    assert scheduled.runs[0].bytes_after < scheduled.runs[0].bytes_before
    await store.close()


async def test_the_schedule_seals_a_store_that_took_many_points(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    points = [point("alice", n) for n in range(1500)]
    await store.upsert(points[:100])
    scheduled = maintenance(store, min_appendable_points=1000)
    runner = asyncio.create_task(scheduled.run_forever())
    try:
        await asyncio.sleep(0.3)
        assert scheduled.runs == []
        await store.upsert(points[100:])
        async with asyncio.timeout(60):
            while not scheduled.runs:
                await asyncio.sleep(0.05)
        # Sealed: the points are in an on-disk segment, none are left to seal.
        assert [await store.appendable_points(slot) for slot in store.shards()] == [0] * 8
        await asyncio.sleep(0.3)
        assert len(scheduled.runs) == 1
    finally:
        runner.cancel()
    assert await store.count("alice") == 1500
    assert await store.get("alice", points[1234].memory.id) == points[1234].memory
    await store.upsert([point("alice", 1500)])
    assert await store.appendable_points(store.slot_of("alice")) == 1
    await store.close()
