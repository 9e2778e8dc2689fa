"""Fill a memory_service data dir with many memories quickly, straight through EdgeMemoryStore.

Embedding every memory through the model would take hours at ~230 texts/s, so a few thousand
distinct texts get real dense (all-MiniLM-L6-v2) and BM25 vectors once, and each user's
memories are drawn from that pool. The result is the layout memory_service itself writes:
same collection, payload and indexes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import qdrant_edge
from corpus import prompt_texts
from encoders import encode

from memory_service.embedding.model_dir import BUNDLED_MODEL_NAME
from memory_service.models import Memory, MemoryKind, MemoryPoint, SparseVector
from memory_service.store import CollectionSpec
from memory_service.store.embedded import EdgeMemoryStore

if TYPE_CHECKING:
    from memory_service.embedding.onnx_encoder import OnnxEncoder

SEED_MARKER = "bench-seed.json"
POINT_NAMESPACE = uuid.UUID("0c6f7a52-3b7e-4d0e-9a51-2f8e3c1d9b64")
PROVIDERS = ["chatgpt", "claude", "gemini", "perplexity"]
HEAVY_USER = "user-heavy"


@dataclass(frozen=True)
class SeedPlan:
    memories: int = 100_000
    users: int = 1_000
    distinct_texts: int = 3_000
    batch: int = 5_000
    seed: int = 3
    # One more user, HEAVY_USER, with this many memories of their own.
    heavy_user_memories: int = 0


def user_ids(users: int) -> list[str]:
    return [f"user-{i:05d}" for i in range(users)]


def seeded_memory_id(user: str, i: int) -> str:
    """The id of the i-th seeded memory: regular users count from 0 across all of them,
    the heavy user from 0 across their own."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{user}/{i}"))


def collection_spec(model: OnnxEncoder) -> CollectionSpec:
    """The collection memory_service opens for the bundled model."""
    return CollectionSpec(model=BUNDLED_MODEL_NAME, dimension=model.dimension)


def is_seeded(data_dir: Path, plan: SeedPlan) -> bool:
    marker = Path(data_dir) / SEED_MARKER
    return marker.exists() and json.loads(marker.read_text()) == asdict(plan)


def seed_data_dir(data_dir: Path, model: OnnxEncoder, plan: SeedPlan) -> float:
    """Write plan.memories memories into data_dir (skipped if already seeded); returns seconds."""
    if is_seeded(data_dir, plan):
        return 0.0
    started = time.perf_counter()
    texts = prompt_texts(plan.distinct_texts, seed=plan.seed)
    dense = encode(model, texts)
    bm25 = qdrant_edge.Bm25()
    sparse = []
    for text in texts:
        vec = bm25.embed_document(text)
        sparse.append(SparseVector(list(vec.indices), list(vec.values)))
    asyncio.run(_write(Path(data_dir), collection_spec(model), plan, texts, dense, sparse))
    (Path(data_dir) / SEED_MARKER).write_text(json.dumps(asdict(plan)))
    return time.perf_counter() - started


async def _write(
    data_dir: Path,
    spec: CollectionSpec,
    plan: SeedPlan,
    texts: list[str],
    dense: np.ndarray,
    sparse: list[SparseVector],
) -> None:
    rng = random.Random(plan.seed)
    users = user_ids(plan.users)
    now = datetime.now(UTC)
    dense_lists = dense.tolist()
    store = EdgeMemoryStore(data_dir, spec)
    await store.open()
    try:
        batch: list[MemoryPoint] = []
        owners = itertools.chain(
            ((users[i % plan.users], i) for i in range(plan.memories)),
            ((HEAVY_USER, j) for j in range(plan.heavy_user_memories)),
        )
        for user, i in owners:
            t = rng.randrange(len(texts))
            memory = Memory(
                id=seeded_memory_id(user, i),
                user_id=user,
                kind=MemoryKind.PROMPT if rng.random() < 0.8 else MemoryKind.RESPONSE,
                text=texts[t],
                created_at=now - timedelta(seconds=rng.randrange(90 * 24 * 3600)),
                provider=rng.choice(PROVIDERS),
                conversation_id=f"{user}-conv-{rng.randrange(20)}",
                url="https://chat.example.com/c/" + uuid.UUID(int=rng.getrandbits(128)).hex,
            )
            batch.append(MemoryPoint(memory, dense_lists[t], sparse[t]))
            if len(batch) >= plan.batch:
                await store.upsert(batch)
                batch = []
        if batch:
            await store.upsert(batch)
    finally:
        await store.close()
