"""Maintenance of the embedded store: seal appendable segments into on-disk ones, merge
segments and drop deleted points without stopping the service.

This module decides when and which shards: a shard is copied and its copy takes over
(takeover.py) once a child process has optimized the copy (optimizer.py), one shard at a
time. Searches are served from the old shard throughout; saves wait only while files are
copied.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from functools import partial

from memory_service.memory_release import release_free_memory
from memory_service.store.embedded.files import directory_bytes
from memory_service.store.embedded.optimizer import WARM_TENANT_POINTS, optimize_in_child
from memory_service.store.embedded.shard import EdgeShardSlot
from memory_service.store.embedded.store import EdgeMemoryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceRun:
    seconds: float
    bytes_before: int
    bytes_after: int
    shards: int


class StoreMaintenance:
    """Runs maintenance on the shards where enough points were deleted since the last run,
    or whose appendable segment holds enough points, checked every interval_seconds by the
    service itself.

    The engine keeps an appendable segment's payload indexes, sparse index and id tracker
    in memory (~1.5 KB per point here), and new points go to that segment: sealing it into
    an on-disk segment is what keeps resident memory from growing with the store, as
    Qdrant's own indexing optimizer does past its indexing threshold.
    """

    def __init__(
        self,
        store: EdgeMemoryStore,
        *,
        interval_seconds: float,
        min_deleted_share: float,
        min_appendable_points: int,
        warm_tenant_points: int = WARM_TENANT_POINTS,
    ) -> None:
        self.store = store
        self.warm_tenant_points = warm_tenant_points
        self.interval_seconds = interval_seconds
        self.min_deleted_share = min_deleted_share
        # Split evenly over the shards: a shard is sealed once it holds its share.
        self.min_appendable_points = min_appendable_points
        self.runs: list[MaintenanceRun] = []
        self._lock = asyncio.Lock()

    async def due_shards(self) -> list[EdgeShardSlot]:
        slots = self.store.shards()
        per_shard = math.ceil(self.min_appendable_points / max(1, len(slots)))
        due = []
        for slot in slots:
            if await self.store.appendable_points(slot) >= per_shard:
                due.append(slot)
                continue
            deleted = slot.deleted_since_maintenance
            if deleted == 0:
                continue
            remaining = await self.store.shard_points(slot)
            if deleted >= self.min_deleted_share * (remaining + deleted):
                due.append(slot)
        return due

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                if due := await self.due_shards():
                    await self.run(due)
                else:
                    async with self._lock:
                        await self.store.flush_written()
            except Exception:
                # The service goes on from the shards it has; the next interval tries again.
                log.exception("store maintenance failed")

    async def run(self, slots: list[EdgeShardSlot] | None = None) -> MaintenanceRun:
        """One maintenance pass over the given shards (None: those that are due), one after
        another; the service keeps serving throughout."""
        async with self._lock:
            started = time.perf_counter()
            chosen = await self.due_shards() if slots is None else slots
            # Walking a large store takes a while: off the event loop.
            before = await asyncio.to_thread(directory_bytes, self.store.collections_dir)
            for slot in chosen:
                await self._maintain(slot)
            # The old shards' in-memory indexes were freed with them: hand them to the OS.
            await asyncio.to_thread(release_free_memory)
            after = await asyncio.to_thread(directory_bytes, self.store.collections_dir)
            done = MaintenanceRun(time.perf_counter() - started, before, after, len(chosen))
            self.runs.append(done)
            log.info(
                "store maintenance of %d shards took %.1f s; store %d -> %d bytes",
                done.shards,
                done.seconds,
                done.bytes_before,
                done.bytes_after,
            )
            return done

    async def _maintain(self, slot: EdgeShardSlot) -> None:
        optimize = partial(
            optimize_in_child,
            dimension=self.store.spec.dimension,
            warm_tenant_points=self.warm_tenant_points,
        )
        await self.store.maintain(slot, optimize)
