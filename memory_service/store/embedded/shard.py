"""One shard of the embedded store, and the thread pool its engine calls run on."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import qdrant_edge as qe

from memory_service.store.interface import StoreError

POOL_THREADS = 4


@dataclass(eq=False)
class EdgeShardSlot:
    """One of the store's shards: the directory in use and what maintenance keeps of it."""

    base: str
    name: str
    engine: qe.EdgeShard | None = None
    # While maintenance works on a copy of this shard, every write applied here is also
    # kept to be applied to the copy before it takes over.
    journal: list[qe.UpdateOperation] | None = None
    deleted_since_maintenance: int = 0
    # Of those, how many were deleted before the maintenance copy was taken: the ones after
    # it are still in the copy (applied to it as deletions) and count for the next run.
    deleted_before_copy: int = 0
    # Updates applied since its last flush.
    updates_since_flush: int = 0

    @property
    def written(self) -> bool:
        return self.updates_since_flush > 0

    @property
    def shard(self) -> qe.EdgeShard:
        if self.engine is None:
            raise StoreError("store is not open")
        return self.engine


class EnginePool:
    """Runs engine calls off the event loop, telling their failures as store errors; holds
    the lock every write to the engine takes."""

    def __init__(self) -> None:
        # The engine releases the GIL; a small pool lets reads overlap with a write.
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="edge-store")
        self.writes = asyncio.Lock()

    async def run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except StoreError:
            raise
        except Exception as exc:
            # The engine raises bare Exception for every failure (I/O, a closed shard), so
            # there is nothing narrower to catch; the caller learns the store failed.
            raise StoreError(f"embedded store failed: {exc}") from exc

    async def drain(self) -> None:
        """Wait for every call started before now to finish."""
        # Tasks leave the pool's queue in order: once every worker is inside the barrier,
        # nothing submitted earlier is still running.
        barrier = threading.Barrier(POOL_THREADS)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, barrier.wait) for _ in range(POOL_THREADS))
        )

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
