"""A maintained copy takes over a shard: writes made while it was optimized reach it, in
slices, and a copy that never took over is dropped."""

from __future__ import annotations

import math
from pathlib import Path

import qdrant_edge

from memory_service.store.embedded import EdgeShardSlot, takeover
from memory_service.store.embedded import store as embedded_store
from memory_service.store.embedded.optimizer import optimize_in_child
from tests.support.embedded_store import (
    DIM,
    maintenance,
    neighbour,
    open_store,
    point,
)


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
