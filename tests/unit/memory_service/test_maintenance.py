"""Maintenance of the embedded store: deleted points leave the disk, every acknowledged
write survives, and the store answers throughout."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import math
import mmap
import random
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import qdrant_edge

from memory_service import memory_release
from memory_service import server as memory_server
from memory_service.config import MemorySettings
from memory_service.embedder import Embedder
from memory_service.memories import NewMemory
from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    SearchFilters,
    SearchMode,
    SparseVector,
)
from memory_service.search import search_memories
from memory_service.server import create_server
from memory_service.store import CollectionSpec
from memory_service.store.embedded import EdgeMemoryStore, EdgeShardSlot, takeover
from memory_service.store.embedded import store as embedded_store
from memory_service.store.embedded.engine import edge_config, payload_indexes
from memory_service.store.embedded.files import directory_bytes
from memory_service.store.embedded.maintenance import StoreMaintenance
from memory_service.store.embedded.optimizer import optimize_in_child
from service_kit.identity import Identity

DIM = 32
SPEC = CollectionSpec(model="test-model", dimension=DIM)
BM25 = qdrant_edge.Bm25()


def point(user: str, n: int) -> MemoryPoint:
    text = f"note number {n} about topic {n % 7}"
    sparse = BM25.embed_document(text)
    # Distinct directions, so nearest-neighbour order has no ties to break either way.
    rng = random.Random(f"{user}/{n}")
    vec = [rng.gauss(0, 1) for _ in range(DIM)]
    memory = Memory(
        id=str(uuid.uuid4()),
        user_id=user,
        kind=MemoryKind.PROMPT,
        text=text,
        created_at=datetime.now(UTC),
    )
    return MemoryPoint(memory, vec, SparseVector(list(sparse.indices), list(sparse.values)))


async def open_store(data_dir: Path) -> EdgeMemoryStore:
    store = EdgeMemoryStore(data_dir, SPEC)
    await store.open()
    return store


async def search(store: EdgeMemoryStore, user: str, n: int) -> list[str]:
    q = point(user, n)
    results = await search_memories(
        store,
        user,
        dense=q.dense,
        sparse=None,
        # Dense scores do not depend on the other points, so they compare before and after.
        mode=SearchMode.SEMANTIC,
        filters=SearchFilters(),
        limit=5,
    )
    return [r.memory.id for r in results]


def neighbour(store: EdgeMemoryStore, user: str) -> str:
    """Another user whose memories are in the same shard as user's."""
    return next(
        name
        for name in (f"carol-{n}" for n in range(1000))
        if store.slot_of(name) is store.slot_of(user)
    )


def maintenance(
    store: EdgeMemoryStore, *, min_appendable_points: int = 1_000_000
) -> StoreMaintenance:
    return StoreMaintenance(
        store,
        interval_seconds=0.05,
        min_deleted_share=0.05,
        min_appendable_points=min_appendable_points,
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


async def test_deletes_during_maintenance_reach_the_copy_in_slices(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    # Every update its own slice: the catch-up goes back to the event loop after each one.
    monkeypatch.setattr(takeover, "REPLAY_SLICE_SECONDS", 0.0)
    slices: list[int] = []
    replay = takeover.replay

    def counted(shard, ops, start=0, budget_seconds=math.inf):  # type: ignore[no-untyped-def]
        slices.append(start)
        return replay(shard, ops, start, budget_seconds)

    monkeypatch.setattr(takeover, "replay", counted)
    store = await open_store(tmp_path / "data")
    alice = [point("alice", n) for n in range(2000)]
    carol = neighbour(store, "alice")
    theirs = [point(carol, n) for n in range(400)]
    await store.upsert(alice + theirs)
    await store.delete_user("alice")
    slot = store.slot_of("alice")
    target = store.next_copy_dir(slot)
    await store.copy_for_maintenance(slot, target)
    # Made after the copy was taken: they reach it through the journal.
    for p in theirs[::2]:
        assert await store.delete(carol, p.memory.id)
    await optimize_in_child(target, DIM)
    await store.take_over(slot, target)

    assert len(slices) > 100
    assert await store.count(carol) == 200
    # The copy still holds those 200 as deleted points: they count for the next run.
    assert slot.deleted_since_maintenance == 200
    assert await maintenance(store).due_shards() == [slot]
    assert await store.get(carol, theirs[0].memory.id) is None
    assert await store.get(carol, theirs[1].memory.id) == theirs[1].memory
    await store.close()
    reopened = await open_store(tmp_path / "data")
    assert await reopened.count(carol) == 200 and await reopened.count("alice") == 0
    await reopened.close()


async def test_a_write_journaled_while_a_slice_replays_reaches_the_copy(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    store = await open_store(tmp_path / "data")
    alice = [point("alice", n) for n in range(300)]
    await store.upsert(alice)
    slot = store.slot_of("alice")
    target = store.next_copy_dir(slot)
    await store.copy_for_maintenance(slot, target)
    for p in alice[:100]:
        assert await store.delete("alice", p.memory.id)
    late = point("alice", 1000)
    replay = takeover.replay

    class WrittenMeanwhile:
        """The copy, and a save on the store's other thread while its first update runs
        (the catch-up is outside the write lock): that save goes to the shard in use and
        into the journal being replayed."""

        def __init__(self, shard: qdrant_edge.EdgeShard) -> None:
            self.shard, self.saved = shard, False

        def update(self, op: qdrant_edge.UpdateOperation) -> None:
            if not self.saved:
                self.saved = True
                store._upsert([late])
            self.shard.update(op)

    def written_meanwhile(shard, ops, start=0, budget_seconds=math.inf):  # type: ignore[no-untyped-def]
        return replay(WrittenMeanwhile(shard), ops, start, budget_seconds)

    monkeypatch.setattr(takeover, "replay", written_meanwhile)
    await optimize_in_child(target, DIM)
    await store.take_over(slot, target)

    assert await store.get("alice", late.memory.id) == late.memory
    assert await store.count("alice") == 201
    await store.close()
    reopened = await open_store(tmp_path / "data")
    assert await reopened.count("alice") == 201
    await reopened.close()


def resident_share(path: Path) -> float:
    """The share of a file's pages that are in the page cache."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    with open(path, "rb") as f:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        try:
            vec = ctypes.create_string_buffer(pages)
            assert libc.mincore(address, size, vec) == 0, ctypes.get_errno()
        finally:
            libc.munmap(address, size)
    return sum(b & 1 for b in vec.raw) / pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the page cache by mincore")
async def test_a_large_users_vectors_are_in_the_page_cache_when_the_copy_takes_over(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path / "data")
    small = next(
        f"bob-{n}" for n in range(1000) if store.slot_of(f"bob-{n}") is not store.slot_of("alice")
    )
    await store.upsert([point("alice", n) for n in range(3000)])
    await store.upsert([point(small, n) for n in range(3000, 3300)])
    scheduled = maintenance(store)
    scheduled.warm_tenant_points = 1000
    await scheduled.run([store.slot_of("alice"), store.slot_of(small)])

    def dense_files(user: str) -> list[Path]:
        shard_dir = store.shard_dir(store.slot_of(user))
        return list(shard_dir.glob("segments/*/vector_storage-*/matrix.dat"))

    # The engine dropped the optimized segments' pages when the child closed them. The
    # first search of a large user would have read them from the disk, holding the GIL:
    # the child left them in the page cache. A small user's, read a few pages at a time,
    # stay on disk.
    assert dense_files("alice") and all(resident_share(f) > 0.9 for f in dense_files("alice"))
    assert dense_files(small) and all(resident_share(f) < 0.5 for f in dense_files(small))
    await store.close()


async def test_a_copy_left_by_an_interrupted_run_is_dropped_at_open(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    kept = point("alice", 1)
    await store.upsert([kept])
    slot = store.slot_of("alice")
    target = store.next_copy_dir(slot)
    await store.copy_for_maintenance(slot, target)
    await store.upsert([point("alice", 2)])
    await store.close()
    assert target.exists()

    reopened = await open_store(tmp_path / "data")

    assert not target.exists()
    assert reopened.slot_of("alice").name == slot.base
    assert await reopened.count("alice") == 2
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


async def test_a_shard_is_flushed_every_so_many_updates(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embedded_store, "FLUSH_EVERY_UPDATES", 3)
    store = await open_store(tmp_path / "data")
    slot = store.slot_of("alice")
    points = [point("alice", n) for n in range(5)]
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


async def test_no_shard_is_flushed_while_maintenance_works_on_a_copy(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embedded_store, "FLUSH_EVERY_UPDATES", 3)
    store = await open_store(tmp_path / "data")
    slot = store.slot_of("alice")
    other = next(s for s in store.shards() if s is not slot)
    bob = next(f"bob-{n}" for n in range(1000) if store.slot_of(f"bob-{n}") is other)
    await store.upsert([point("alice", n) for n in range(2)])
    target = store.next_copy_dir(slot)
    await store.copy_for_maintenance(slot, target)
    flushed: list[EdgeShardSlot] = []
    flush = store._flush

    async def counted(s: EdgeShardSlot) -> None:
        flushed.append(s)
        await flush(s)

    monkeypatch.setattr(store, "_flush", counted)
    assert store.maintaining
    # Past the flush count on the shard being copied and on another one.
    for n in range(2, 8):
        await store.upsert([point("alice", n), point(bob, n)])
    assert flushed == []
    await optimize_in_child(target, DIM)
    await store.take_over(slot, target)
    assert not store.maintaining
    await store.upsert([point(bob, 8)])
    assert set(flushed) == {slot, other}
    assert await store.count("alice") == 8 and await store.count(bob) == 7
    await store.close()
    reopened = await open_store(tmp_path / "data")
    assert await reopened.count("alice") == 8 and await reopened.count(bob) == 7
    await reopened.close()


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


async def test_maintenance_moves_payload_indexes_kept_in_memory_to_disk(tmp_path: Path) -> None:
    # A store whose indexes were created without a placement, which in a sealed segment
    # the engine keeps in memory.
    shard_dir = tmp_path / "data" / "collections" / SPEC.name
    shard_dir.mkdir(parents=True)
    shard = qdrant_edge.EdgeShard.create(str(shard_dir), edge_config(DIM))
    shard.update(
        qdrant_edge.UpdateOperation.create_field_index(
            "user_id", qdrant_edge.KeywordIndexParams(is_tenant=True)
        )
    )
    shard.update(
        qdrant_edge.UpdateOperation.create_field_index(
            "kind", qdrant_edge.PayloadSchemaType.Keyword
        )
    )
    shard.close()
    store = await open_store(tmp_path / "data")
    points = [point("alice", n) for n in range(300)]
    await store.upsert(points)
    before = await search(store, "alice", 7)

    # A store from before shards had their own directories is one shard.
    assert [slot.name for slot in store.shards()] == [SPEC.name]
    await maintenance(store).run(store.shards())

    schema = store.shards()[0].shard.info().payload_schema
    assert set(schema) == set(payload_indexes())
    assert all(index.params.memory == qdrant_edge.Memory.Cold for index in schema.values())
    assert await search(store, "alice", 7) == before
    assert await store.count("alice") == 300
    await store.close()


def service_settings(tmp_path: Path, **settings: float) -> MemorySettings:
    return MemorySettings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "data",
        service_token="maintenance-test-token",
        metrics_port=-1,
        **settings,
    )


async def test_the_service_maintains_its_embedded_store(embedder: Embedder, tmp_path: Path) -> None:
    server = await create_server(
        service_settings(
            tmp_path, maintenance_interval_seconds=0.1, maintenance_min_deleted_share=0.2
        )
    )
    await server.start_serving(embedder)
    try:
        assert server.memories is not None and server.maintenance is not None
        alice, bob = Identity("alice"), Identity("bob")
        for n in range(30):
            await server.memories.save(alice, NewMemory(text=f"alice wrote note {n}"))
        kept = await server.memories.save(bob, NewMemory(text="bob's only note about kyoto"))
        await server.memories.delete_user(alice)
        async with asyncio.timeout(60):
            while not server.maintenance.runs:
                await asyncio.sleep(0.05)

        found = await server.memories.search(bob, "kyoto", 5, SearchMode.HYBRID, SearchFilters())
        assert [r.memory.id for r in found] == [kept.id]
        later = await server.memories.save(bob, NewMemory(text="bob again"))
        assert (await server.memories.get(bob, later.id)).text == "bob again"
    finally:
        await server.stop(0)


async def test_the_service_returns_free_heap_to_the_os_while_it_runs(
    embedder: Embedder, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    trims: list[float] = []
    monkeypatch.setattr(memory_server, "HEAP_TRIM_SECONDS", 0.05)
    monkeypatch.setattr(memory_release, "release_free_memory", lambda: trims.append(0.0) or True)
    server = await create_server(service_settings(tmp_path))
    await server.start_serving(embedder)
    try:
        async with asyncio.timeout(30):
            while len(trims) < 3:
                await asyncio.sleep(0.05)
    finally:
        await server.stop(0)
    stopped = len(trims)
    await asyncio.sleep(0.2)
    assert len(trims) == stopped
