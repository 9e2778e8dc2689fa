"""Maintenance of the embedded store: seal appendable segments into on-disk ones, merge
segments and drop deleted points without stopping the service.

The engine's optimizer holds the GIL for its whole run (~5 s per 100,000 points here), so
it never runs in the serving process: a shard is copied, a child process optimizes the
copy, the service applies to it the writes made meanwhile and then serves from it, one
shard at a time. Searches are served from the old shard throughout; saves wait only while
files are copied.

    python -m memory_service.maintenance SHARD_DIR DIMENSION [WARM_TENANT_POINTS]
                                            # what the child runs
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import qdrant_edge

from memory_service import ranking
from memory_service.allocator import release_free_memory
from memory_service.store import base
from memory_service.store.edge import (
    EdgeMemoryStore,
    EdgeShardSlot,
    edge_config,
    ensure_payload_indexes,
    write_back,
)
from memory_service.store.payload import CANDIDATE_FIELDS

log = logging.getLogger(__name__)

# The child yields the CPU to the serving process, which shares the same cores: where the
# OS has it, it runs only on a core nothing else wants (SCHED_IDLE), else at nice 19.
CHILD_NICENESS = 19
# Users with at least this many memories in a shard have what their searches read left in
# the page cache by the child (see warm_large_tenants); at most this many of them.
WARM_TENANT_POINTS = 10_000
WARM_TENANTS = 16


@dataclass(frozen=True, slots=True)
class MaintenanceRun:
    seconds: float
    bytes_before: int
    bytes_after: int
    shards: int


def directory_bytes(path: Path) -> int:
    """Disk blocks in use under path (sparse and preallocated files count as stored)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


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
        slots = list(self.store.slots)
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
        target = self.store.next_copy_dir(slot)
        await self.store.copy_for_maintenance(slot, target)
        try:
            await optimize_in_child(target, self.store.spec.dimension, self.warm_tenant_points)
            await self.store.take_over(slot, target)
        except BaseException:
            self.store.abandon_copy(slot, target)
            raise


async def optimize_in_child(
    shard_dir: Path, dimension: int, warm_tenant_points: int = WARM_TENANT_POINTS
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memory_service.maintenance",
        str(shard_dir),
        str(dimension),
        str(warm_tenant_points),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await child.communicate()
    except BaseException:
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode != 0:
        raise RuntimeError(
            f"store optimization exited with {child.returncode}: {stderr.decode()[-2000:]}"
        )


def optimize(shard_dir: Path, dimension: int) -> None:
    """Seal the shard's appendable segments, merge segments and drop deleted points, in
    this process."""
    shard = qdrant_edge.EdgeShard.load(str(shard_dir), edge_config(dimension))
    try:
        # Before the optimizer runs, so that the segments it writes get indexes on disk.
        ensure_payload_indexes(shard, rebuild_misplaced=True)
        shard.optimize()
        shard.flush()
    finally:
        shard.close()
    # The service opens and writes to these files next: on disk first, so none of their
    # pages is still being written back then (a write to such a page waits for the disk,
    # holding the GIL).
    write_back(shard_dir)


def warm_large_tenants(shard_dir: Path, dimension: int, min_points: int) -> qdrant_edge.EdgeShard:
    """Open the shard and search as each of its largest users, so that what their searches
    read is in the page cache; returns the shard, which the caller must not close.

    The engine drops an on-disk segment's pages from the page cache when it closes it, and
    holds the GIL while a query reads: the service's first search of a user with 100,000
    memories would wait for the disk (~160 reads, ~0.4 s here) and stall every request
    meanwhile. Only large users, because a search maps the neighbouring pages of every page
    it touches that is in the page cache: with the whole shard there, the other users'
    searches left ~3x the pages resident. The page cache is shared, so what is read here
    is there for the service; closing the shard would drop it again."""
    shard = qdrant_edge.EdgeShard.load(str(shard_dir), edge_config(dimension))
    request = qdrant_edge.FacetRequest(key="user_id", limit=WARM_TENANTS, exact=False)
    probe = [1.0 / math.sqrt(dimension)] * dimension
    for hit in shard.facet(request).hits:
        if hit.count < min_points:
            break
        user = qdrant_edge.Filter(
            must=[qdrant_edge.FieldCondition("user_id", match=qdrant_edge.MatchValue(hit.value))]
        )
        # An exact search reads every one of the user's vectors, as the service's do.
        shard.query(
            qdrant_edge.QueryRequest(
                limit=ranking.CANDIDATE_DEPTH,
                query=qdrant_edge.Query.Nearest(probe, using=base.DENSE_VECTOR),
                filter=user,
                with_payload=qdrant_edge.PayloadSelector.Include(CANDIDATE_FIELDS),
            )
        )
    return shard


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    os.nice(CHILD_NICENESS)
    with contextlib.suppress(AttributeError, OSError):
        # The engine's worker threads, started later, inherit it.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    shard_dir, dimension = Path(argv[0]), int(argv[1])
    optimize(shard_dir, dimension)
    warm_tenant_points = int(argv[2]) if len(argv) == 3 else WARM_TENANT_POINTS
    # Held until the process ends: the warmed shard stays open (nothing was written to it
    # since it was flushed and closed above), because closing it, which dropping the last
    # reference or the interpreter's teardown would do, drops its pages from the page
    # cache again. os._exit skips that teardown.
    _warmed = warm_large_tenants(shard_dir, dimension, warm_tenant_points)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
