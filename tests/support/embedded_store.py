"""An embedded store to maintain in tests: numbered points with random directions, opening,
searching and scheduling maintenance the way the service does."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import qdrant_edge

from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    SearchFilters,
    SearchMode,
    SparseVector,
)
from memory_service.search import search_memories
from memory_service.store import CollectionSpec
from memory_service.store.embedded import EdgeMemoryStore
from memory_service.store.embedded.maintenance import StoreMaintenance

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
