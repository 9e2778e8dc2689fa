"""The child that optimizes a shard's copy: payload indexes end up on disk, and a large
user's vectors are in the page cache when the copy takes over."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from pathlib import Path

import pytest
import qdrant_edge

from memory_service.store.embedded.engine import edge_config, payload_indexes
from tests.support.embedded_store import (
    DIM,
    SPEC,
    maintenance,
    open_store,
    point,
    search,
)


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
