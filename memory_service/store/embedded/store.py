"""Embedded store: the Qdrant engine in process (qdrant-edge), persisted under a data dir."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from memory_service.memory_release import release_mapped_pages
from memory_service.models import Memory, MemoryPoint
from memory_service.store.embedded import takeover
from memory_service.store.embedded.engine import (
    edge_config,
    edge_filter,
    edge_point,
    ensure_payload_indexes,
    newest_request,
    query_batch,
    rrf_request,
)
from memory_service.store.embedded.layout import DataDir
from memory_service.store.embedded.shard import EdgeShardSlot, EnginePool
from memory_service.store.interface import (
    CollectionSpec,
    Condition,
    Match,
    MemoryStore,
    NearestQuery,
    StoreError,
)
from memory_service.store.ownership import memory_conditions, stored_or_own, tenant_conditions
from memory_service.store.payload import memory_of

# Shards of a new store; opening one holds the GIL for ~0.3 s per million points here.
DEFAULT_SHARDS = 8
# A shard is flushed once this many updates reached it since its last flush. The engine
# holds the GIL while it flushes, for as long as it takes to write what changed, so many
# small flushes pause the service less than one after a burst of writes.
FLUSH_EVERY_UPDATES = 2_000


class EdgeMemoryStore(MemoryStore):
    """Users are spread over several shards by a hash of their id, and every query is one
    user's, so it goes to one shard. The engine holds the GIL while it opens a shard
    (~0.3 s per million points here), which stalls everything in the process: maintenance
    replaces one shard at a time, so each pause is a fraction of that."""

    backend = "embedded"

    def __init__(
        self, data_dir: Path, spec: CollectionSpec, *, shards: int = DEFAULT_SHARDS
    ) -> None:
        self.layout = DataDir(data_dir)
        self.spec = spec
        # For a new store; an existing one keeps the shards its manifest names.
        self.new_store_shards = shards
        self._slots: list[EdgeShardSlot] = []
        self._engine = EnginePool()

    @property
    def data_dir(self) -> Path:
        return self.layout.path

    @property
    def collections_dir(self) -> Path:
        return self.layout.collections

    def shards(self) -> list[EdgeShardSlot]:
        """The store's shards, in order. Maintenance changes the directory a shard serves
        from, never which shards there are."""
        return list(self._slots)

    def shard_dir(self, slot: EdgeShardSlot) -> Path:
        return self.collections_dir / slot.name

    @property
    def shard_dirs(self) -> list[Path]:
        return [self.shard_dir(slot) for slot in self._slots]

    def shard_copies(self, slot: EdgeShardSlot) -> list[Path]:
        """A shard's directories: the one in use and any maintenance copies."""
        return self.layout.copies(slot.base)

    def next_copy_dir(self, slot: EdgeShardSlot) -> Path:
        return self.layout.next_copy_dir(slot.base)

    @property
    def maintaining(self) -> bool:
        """Whether maintenance is working on a copy of one of the shards."""
        return any(slot.journal is not None for slot in self._slots)

    @property
    def deleted_since_maintenance(self) -> int:
        return sum(slot.deleted_since_maintenance for slot in self._slots)

    def _slot_index(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % len(self._slots)

    def slot_of(self, user_id: str) -> EdgeShardSlot:
        """The shard that holds the user's memories."""
        return self._slots[self._slot_index(user_id)]

    def _shard(self, user_id: str) -> qe.EdgeShard:
        return self.slot_of(user_id).shard

    def _shard_for(self, conditions: list[Condition]) -> qe.EdgeShard:
        """The shard of the user every read's conditions start from."""
        for cond in conditions:
            if isinstance(cond, Match) and cond.key == "user_id":
                return self._shard(cond.value)
        raise ValueError("a user id is required for every store read")

    async def open(self) -> None:
        await self._engine.run(self._open)

    def _open(self) -> None:
        self.layout.lock()
        names = self.layout.shard_names(self.spec, self.new_store_shards)
        self._slots = [EdgeShardSlot(base, name) for base, name in names]
        self.layout.remove_stale_copies(names)
        config = edge_config(self.spec.dimension)
        for slot in self._slots:
            path = self.shard_dir(slot)
            if (path / "segments").exists():
                try:
                    slot.engine = qe.EdgeShard.load(str(path), config)
                except Exception as exc:
                    raise StoreError(f"cannot open the store at {path}: {exc}") from exc
            else:
                path.mkdir(parents=True, exist_ok=True)
                slot.engine = qe.EdgeShard.create(str(path), config)
            ensure_payload_indexes(slot.engine, rebuild_misplaced=False)
        self._write_manifest()
        # Nothing else runs on the store yet.
        release_mapped_pages(self.collections_dir)

    def _write_manifest(self) -> None:
        self.layout.write_manifest(self.spec, [slot.name for slot in self._slots])

    async def close(self) -> None:
        for slot in self._slots:
            if slot.engine is not None:
                engine, slot.engine = slot.engine, None
                await self._engine.run(engine.close)
        self._engine.shutdown()
        self.layout.unlock()

    async def _write(self, fn: Any, *args: Any) -> Any:
        async with self._engine.writes:
            result = await self._engine.run(fn, *args)
        # Outside the write lock, as flush_written: other writes need not wait for the disk.
        # None while maintenance works on a copy: what it copied is in the copy, later
        # writes are in the log, and the optimizer writing the copy keeps the disk busy, so
        # a flush (which holds the GIL) would wait for the disk (~120 ms here) and stall the
        # service meanwhile. The first write after the copy takes over flushes again.
        if not self.maintaining:
            for slot in self._slots:
                if slot.updates_since_flush >= FLUSH_EVERY_UPDATES:
                    await self._flush(slot)
        return result

    async def _flush(self, slot: EdgeShardSlot) -> None:
        slot.updates_since_flush = 0
        await self._engine.run(takeover.flush_for_copy, slot.shard, self.shard_dir(slot))

    def _apply(self, slot: EdgeShardSlot, op: qe.UpdateOperation) -> None:
        # The update returns once the operation is in the shard's write-ahead log.
        slot.shard.update(op)
        slot.updates_since_flush += 1
        if slot.journal is not None:
            slot.journal.append(op)

    def _upsert(self, points: Sequence[MemoryPoint], mode: qe.UpdateMode | None = None) -> None:
        # One update per shard the points belong to; the call returns once every one is in
        # its shard's log. A failure part way fails the whole call, and a retry writes the
        # same ids again.
        groups: dict[int, list[MemoryPoint]] = {}
        for p in points:
            groups.setdefault(self._slot_index(p.memory.user_id), []).append(p)
        for index, group in groups.items():
            op = qe.UpdateOperation.upsert_points([edge_point(p) for p in group], update_mode=mode)
            self._apply(self._slots[index], op)

    async def upsert(self, points: Sequence[MemoryPoint]) -> None:
        await self._write(self._upsert, points)

    async def insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        return list(await self._write(self._insert_new, points))

    def _retrieve_everywhere(self, ids: list[qe.PointId], with_payload: bool) -> list[qe.Record]:
        # An id may be any user's, so every shard is asked.
        return [r for slot in self._slots for r in slot.shard.retrieve(ids, with_payload, False)]

    def _insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        # An id lookup in the same call as the write: no filtered scroll, no second thread
        # hop, and no other write in between.
        ids: list[qe.PointId] = list(dict.fromkeys(p.memory.id for p in points))
        fresh, result = stored_or_own(points, self._retrieve_everywhere(ids, True))
        if fresh:
            self._upsert(fresh, qe.UpdateMode.InsertOnly)
        return result

    async def maintain(
        self, slot: EdgeShardSlot, optimize: Callable[[Path], Awaitable[None]]
    ) -> None:
        """Serve the shard from an optimized copy: copy it, let optimize rewrite the copy
        (the shard serves meanwhile), then take over from it. A failure anywhere drops the
        copy and leaves the shard as it was."""
        target = self.next_copy_dir(slot)
        await self.copy_for_maintenance(slot, target)
        try:
            await optimize(target)
            await self.take_over(slot, target)
        except BaseException:
            self.abandon_copy(slot, target)
            raise

    async def copy_for_maintenance(self, slot: EdgeShardSlot, target: Path) -> None:
        """Copy the shard to target as of one instant, then keep every later write for it."""
        await takeover.copy_shard(self._engine, slot, self.shard_dir(slot), target)

    def abandon_copy(self, slot: EdgeShardSlot, target: Path) -> None:
        """Drop a maintenance copy that will not take over (never the shard in use)."""
        takeover.abandon_copy(slot, target)

    async def take_over(self, slot: EdgeShardSlot, target: Path) -> None:
        """Serve the shard from the maintained copy at target: open it, apply the writes
        made since it was copied, switch the manifest to it, and release the old one."""
        await takeover.take_over(
            self._engine,
            slot,
            target,
            dimension=self.spec.dimension,
            collections_dir=self.collections_dir,
            write_manifest=self._write_manifest,
        )

    async def flush_written(self) -> None:
        """Flush the shards written to since their last flush, files first written back off
        the GIL. Not needed for durability (writes are in the log); it keeps the work the
        engine does under the GIL at the next flush, e.g. when maintenance copies the
        shard, to what was written in between."""
        for slot in self._slots:
            if slot.written:
                await self._flush(slot)

    async def appendable_points(self, slot: EdgeShardSlot) -> int:
        """At least how many points the shard's appendable segments hold (maintenance
        seals them)."""
        info = await self._engine.run(slot.shard.info)
        # Every point has both vectors. The engine counts a sparse vector as indexed in any
        # segment and a dense one only in a sealed segment, where a deleted point still
        # counts until the segment is rewritten; hence "at least".
        return max(0, 2 * int(info.points_count) - int(info.indexed_vectors_count))

    async def shard_points(self, slot: EdgeShardSlot) -> int:
        # From the shard's info, which the engine keeps: an exact count walks every point
        # and holds the GIL while it does (~26 ms at 200,000 points).
        info = await self._engine.run(slot.shard.info)
        return int(info.points_count)

    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        # By id, then the owner checked here: a read filtered on both walks the user's
        # tenant index (~4 ms for a user with 100,000 memories), this takes ~0.03 ms.
        shard = self._shard(user_id)
        records = await self._engine.run(shard.retrieve, [memory_id], True, False)
        for record in records:
            if (record.payload or {}).get("user_id") == user_id:
                return memory_of(record)
        return None

    async def query(
        self, conditions: list[Condition], queries: Sequence[NearestQuery]
    ) -> list[list[qe.ScoredPoint]]:
        batch = query_batch(conditions, queries)
        return list(await self._engine.run(self._shard_for(conditions).query_batch, batch))

    async def retrieve(
        self, memory_ids: Sequence[str], owner: str | None = None
    ) -> list[qe.Record]:
        if owner is not None:
            # A search's hits and get_many's ids are checked against their owner anyway:
            # only the owner's shard can hold them. One engine call instead of one a shard.
            shard = self._shard(owner)
            return list(await self._engine.run(shard.retrieve, list(memory_ids), True, False))
        return list(await self._engine.run(self._retrieve_everywhere, list(memory_ids), True))

    async def rrf(
        self, conditions: list[Condition], prefetches: Sequence[NearestQuery], limit: int
    ) -> list[qe.ScoredPoint]:
        request = rrf_request(conditions, prefetches, limit)
        return list(await self._engine.run(self._shard_for(conditions).query, request))

    async def newest(
        self, conditions: list[Condition], start: float | None, window: int
    ) -> list[qe.Record]:
        request = newest_request(conditions, start, window)
        records, _ = await self._engine.run(self._shard_for(conditions).scroll, request)
        return list(records)

    async def count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return sum([await self.shard_points(slot) for slot in self._slots])
        request = qe.CountRequest(exact=True, filter=edge_filter(tenant_conditions(user_id)))
        return int(await self._engine.run(self._shard(user_id).count, request))

    async def count_matching(self, conditions: list[Condition]) -> int:
        request = qe.CountRequest(exact=True, filter=edge_filter(conditions))
        return int(await self._engine.run(self._shard_for(conditions).count, request))

    async def facet(self, conditions: list[Condition], key: str, limit: int) -> dict[str, int]:
        request = qe.FacetRequest(key=key, limit=limit, exact=True, filter=edge_filter(conditions))
        response = await self._engine.run(self._shard_for(conditions).facet, request)
        return {str(hit.value): int(hit.count) for hit in response.hits}

    async def count_users(self) -> int:
        # Each user's memories are in one shard only.
        request = qe.FacetRequest(key="user_id", limit=1_000_000, exact=False)
        total = 0
        for slot in self._slots:
            response = await self._engine.run(slot.shard.facet, request)
            total += len(response.hits)
        return total

    async def delete(self, user_id: str, memory_id: str) -> bool:
        if await self.get(user_id, memory_id) is None:
            return False
        # The memory is the user's, and an id never changes owner (a new memory never takes
        # an id in use): deleted by id, without the filter walking the user's index.
        slot = self.slot_of(user_id)
        await self._write(self._apply, slot, qe.UpdateOperation.delete_points([memory_id]))
        slot.deleted_since_maintenance += 1
        return True

    async def delete_user(self, user_id: str) -> int:
        slot = self.slot_of(user_id)
        flt = edge_filter(tenant_conditions(user_id))
        request = qe.CountRequest(exact=True, filter=flt)
        count = int(await self._engine.run(slot.shard.count, request))
        await self._write(self._apply, slot, qe.UpdateOperation.delete_points_by_filter(flt))
        slot.deleted_since_maintenance += count
        return count

    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        conditions = memory_conditions(user_id, memory_id)
        await self._write(
            self._apply,
            self.slot_of(user_id),
            qe.UpdateOperation.set_payload_by_filter(edge_filter(conditions), fields),
        )
