"""Maintenance of the embedded store: merge segments and drop deleted points without
stopping the service.

The engine's optimizer holds the GIL for its whole run (~3.5 s per 100,000 points here), so
it never runs in the serving process: the shard is copied, a child process optimizes the
copy, the service applies to it the writes made meanwhile and then serves from it.
Searches are served from the old shard throughout; saves wait only while files are copied.

    python -m memory_service.maintenance SHARD_DIR DIMENSION   # what the child runs
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from memory_service.store.edge import EdgeMemoryStore, edge_config

log = logging.getLogger(__name__)

# The child yields the CPU to the serving process, which shares the same cores.
CHILD_NICENESS = 10


@dataclass(frozen=True, slots=True)
class MaintenanceRun:
    seconds: float
    bytes_before: int
    bytes_after: int


def directory_bytes(path: Path) -> int:
    """Disk blocks in use under path (sparse and preallocated files count as stored)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


class StoreMaintenance:
    """Runs maintenance when enough points were deleted since the last run, checked every
    interval_seconds by the service itself."""

    def __init__(
        self, store: EdgeMemoryStore, *, interval_seconds: float, min_deleted_share: float
    ) -> None:
        self.store = store
        self.interval_seconds = interval_seconds
        self.min_deleted_share = min_deleted_share
        self.runs: list[MaintenanceRun] = []
        self._lock = asyncio.Lock()

    async def due(self) -> bool:
        deleted = self.store.deleted_since_maintenance
        if deleted == 0:
            return False
        remaining = await self.store.count(None)
        return deleted >= self.min_deleted_share * (remaining + deleted)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                if await self.due():
                    await self.run()
            except Exception:
                # The service goes on from the shard it has; the next interval tries again.
                log.exception("store maintenance failed")

    async def run(self) -> MaintenanceRun:
        """One maintenance pass; the service keeps serving throughout."""
        async with self._lock:
            started = time.perf_counter()
            # Walking a large shard takes a while: off the event loop.
            before = await asyncio.to_thread(directory_bytes, self.store.shard_dir)
            target = self.store.next_copy_dir()
            await self.store.copy_for_maintenance(target)
            try:
                await optimize_in_child(target, self.store.spec.dimension)
                await self.store.take_over(target)
            except BaseException:
                self.store.abandon_copy(target)
                raise
            after = await asyncio.to_thread(directory_bytes, self.store.shard_dir)
            done = MaintenanceRun(time.perf_counter() - started, before, after)
            self.runs.append(done)
            log.info(
                "store maintenance took %.1f s; shard %d -> %d bytes",
                done.seconds,
                done.bytes_before,
                done.bytes_after,
            )
            return done


async def optimize_in_child(shard_dir: Path, dimension: int) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memory_service.maintenance",
        str(shard_dir),
        str(dimension),
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
    """Merge the shard's segments and drop deleted points, in this process."""
    import qdrant_edge

    shard = qdrant_edge.EdgeShard.load(str(shard_dir), edge_config(dimension))
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    os.nice(CHILD_NICENESS)
    optimize(Path(argv[0]), int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
