"""Memories as store points for the store tests: one-hot dense vectors, so that nearest-
neighbour order is known exactly, and BM25 sparse vectors of their text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import qdrant_edge

from memory_service.models import Memory, MemoryKind, MemoryPoint, SparseVector
from memory_service.store import CollectionSpec

DIM = 8


SPEC = CollectionSpec(model="test-model", dimension=DIM)


BM25 = qdrant_edge.Bm25()


def vector(seed: int) -> list[float]:
    # Distinct one-hot-ish directions so nearest-neighbour order is known exactly.
    v = [0.01] * DIM
    v[seed % DIM] = 1.0
    return v


def point(
    user: str,
    text: str,
    seed: int,
    *,
    provider: str = "chatgpt",
    conversation: str = "",
    created: datetime | None = None,
    kind: MemoryKind = MemoryKind.PROMPT,
) -> MemoryPoint:
    sparse = BM25.embed_document(text)
    memory = Memory(
        id=str(uuid.uuid4()),
        user_id=user,
        kind=kind,
        text=text,
        created_at=created or datetime.now(UTC),
        provider=provider,
        conversation_id=conversation,
    )
    return MemoryPoint(
        memory, vector(seed), SparseVector(list(sparse.indices), list(sparse.values))
    )


def sparse_query(text: str) -> SparseVector:
    vec = BM25.embed_query(text)
    return SparseVector(list(vec.indices), list(vec.values))


def conversation_points(user: str) -> list[MemoryPoint]:
    """A conversation where the turn after the best match answers it and shares none of the
    query's words."""
    start = datetime(2024, 5, 1, tzinfo=UTC)
    texts = [
        "which deploy target should we use for the staging cluster",
        "the deploy to staging failed with ERR_7731 after the migration, what now?",
        "roll back the schema change and retry",
        "unrelated: a recipe for lemon cake",
        "another deploy note about ERR_7731 on production",
    ]
    return [
        point(user, text, i, conversation="c1", created=start + timedelta(minutes=i))
        for i, text in enumerate(texts)
    ]
