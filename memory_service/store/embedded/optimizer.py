"""The child process maintenance runs a shard's copy through: the engine's optimizer seals
appendable segments, merges segments and drops deleted points, then the largest users'
vectors are read into the page cache. The optimizer holds the GIL for its whole run (~5 s
per 100,000 points here), so it never runs in the serving process.

    python -m memory_service.store.embedded.optimizer SHARD_DIR DIMENSION [WARM_TENANT_POINTS]
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
from pathlib import Path

import qdrant_edge

from memory_service import ranking
from memory_service.store.embedded.engine import edge_config, ensure_payload_indexes
from memory_service.store.embedded.files import write_back
from memory_service.store.interface import DENSE_VECTOR

# The child yields the CPU to the serving process, which shares the same cores: where the
# OS has it, it runs only on a core nothing else wants (SCHED_IDLE), else at nice 19.
CHILD_NICENESS = 19
# Users with at least this many memories in a shard have what their searches read left in
# the page cache by the child (see warm_large_tenants); at most this many of them.
WARM_TENANT_POINTS = 10_000
WARM_TENANTS = 16


async def optimize_in_child(
    shard_dir: Path, dimension: int, warm_tenant_points: int = WARM_TENANT_POINTS
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memory_service.store.embedded.optimizer",
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
                limit=ranking.DEFAULT.candidate_depth,
                query=qdrant_edge.Query.Nearest(probe, using=DENSE_VECTOR),
                filter=user,
                with_payload=True,
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
