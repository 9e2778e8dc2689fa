"""How a maintained copy replaces a shard while the store serves: the copy is taken as of
one instant while writes go on, later writes are journaled, replayed into the copy in short
slices, and the manifest is switched to it with writes held only for the last few."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import qdrant_edge as qe

from memory_service.memory_release import release_mapped_pages
from memory_service.store.embedded.engine import edge_config
from memory_service.store.embedded.files import copy_modified, copy_sparse, write_back
from memory_service.store.embedded.shard import EdgeShardSlot, EnginePool
from memory_service.store.interface import StoreError

COARSE_CLOCK_SLACK_SECONDS = 1.0
# Writes made while maintenance worked on a copy are applied to it in slices of this long.
REPLAY_SLICE_SECONDS = 0.01


def replay(
    shard: qe.EdgeShard,
    ops: Sequence[qe.UpdateOperation],
    start: int = 0,
    budget_seconds: float = math.inf,
) -> int:
    """Apply ops[start:] in order until done or past budget_seconds; returns the index of
    the first op not applied."""
    started = time.perf_counter()
    # Writes on other threads may append to ops meanwhile: those are left for the next call.
    end = len(ops)
    for index in range(start, end):
        shard.update(ops[index])
        if time.perf_counter() - started >= budget_seconds:
            return index + 1
    return end


def flush_for_copy(shard: qe.EdgeShard, path: Path) -> float:
    """Flush the shard, its files written back first; returns a time before the flush that
    any later change to a file is stamped after."""
    write_back(path)
    # File times come from the kernel's coarse clock: step back a little, so a write just
    # after the flush cannot carry an earlier time.
    started = time.time() - COARSE_CLOCK_SLACK_SECONDS
    shard.flush()
    return started


def close_written_back(shard: qe.EdgeShard, path: Path) -> None:
    write_back(path)
    shard.close()


async def copy_shard(pool: EnginePool, slot: EdgeShardSlot, source: Path, target: Path) -> None:
    """Copy the shard at source to target as of one instant, then keep every later write for
    it in the slot's journal.

    A copy taken while the engine writes could be torn, so it goes in two passes. The
    first copies everything while writes go on, after a flush has written every
    mapped page back: from then on the first write to any page of a file marks the
    file modified. The second runs with writes held: flush again, then copy once more
    only what was modified since the first flush. Writes wait only for that second,
    short pass; reads never wait.
    """
    since = await pool.run(flush_for_copy, slot.shard, source)
    with contextlib.suppress(shutil.Error):
        # Files the engine replaces meanwhile fail to copy here; the second pass
        # copies whatever they became.
        await pool.run(shutil.copytree, source, target, False, None, copy_sparse)
    async with pool.writes:
        await pool.run(flush_for_copy, slot.shard, source)
        await pool.run(copy_modified, source, target, since)
        slot.journal = []
        slot.deleted_before_copy = slot.deleted_since_maintenance


def abandon_copy(slot: EdgeShardSlot, target: Path) -> None:
    """Drop a maintenance copy that will not take over (never the shard in use)."""
    slot.journal = None
    if target.name != slot.name:
        shutil.rmtree(target, ignore_errors=True)


async def take_over(
    pool: EnginePool,
    slot: EdgeShardSlot,
    target: Path,
    *,
    dimension: int,
    collections_dir: Path,
    write_manifest: Callable[[], None],
) -> None:
    """Serve the shard from the maintained copy at target: open it, apply the writes made
    since it was copied, switch the manifest (write_manifest names each slot's directory)
    to it, and release the old one."""
    journal = slot.journal
    if journal is None:
        raise StoreError("no maintenance copy is being kept up to date")
    # Opening writes to the copy's files: written back first, off the GIL, none of
    # their pages is still on its way to the disk then.
    await pool.run(write_back, target)
    shard = await pool.run(qe.EdgeShard.load, str(target), edge_config(dimension))
    try:
        # Catch up outside the write lock while writes keep coming, so the final step
        # under the lock is short. The engine holds the GIL for each update, and a loop
        # of them would leave every other thread waiting for it at each switch (a
        # search needs it dozens of times): replay in slices, with pauses as long.
        done = 0
        while len(journal) - done > 64:
            done = await pool.run(replay, shard, journal, done, REPLAY_SLICE_SECONDS)
            await asyncio.sleep(REPLAY_SLICE_SECONDS)
        async with pool.writes:
            await pool.run(replay, shard, journal, done)
            # No flush: what was replayed is in the copy's write-ahead log, like any
            # acknowledged write, and a flush here would hold the GIL.
            old, old_name = slot.shard, slot.name
            slot.name = target.name
            try:
                # fsync can take a while on a busy disk: off the event loop.
                await pool.run(write_manifest)
            except BaseException:
                # Writes go on to the old shard, so the manifest must name it.
                slot.name = old_name
                await pool.run(write_manifest)
                raise
            slot.engine, slot.journal = shard, None
    except BaseException:
        slot.journal = None
        await pool.run(shard.close)
        raise
    slot.deleted_since_maintenance -= slot.deleted_before_copy
    slot.deleted_before_copy = 0
    await pool.drain()
    await pool.run(close_written_back, old, collections_dir / old_name)
    await pool.run(shutil.rmtree, collections_dir / old_name)
    async with pool.writes:
        # Opening the copy read through its log; with writes held (and this the only
        # maintenance), nothing unmaps the store's files meanwhile.
        await pool.run(release_mapped_pages, collections_dir / slot.name)
