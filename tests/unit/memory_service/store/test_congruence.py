"""The two store adapters agree: the same random points loaded into the embedded engine and
into the server client (qdrant-client's local mode), the same searches in every mode, lists
and counts, and the answers compared (as qdrant-client's congruence tests compare local
mode against a server)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import qdrant_edge
from qdrant_client import AsyncQdrantClient

from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    ScoredMemory,
    SearchFilters,
    SearchMode,
    SparseVector,
)
from memory_service.search import search_memories
from memory_service.store import CollectionSpec, MemoryStore, paging
from memory_service.store.embedded import EdgeMemoryStore
from memory_service.store.remote import ServerMemoryStore

DIM = 16
SPEC = CollectionSpec(model="congruence-model", dimension=DIM)
USERS = ("ana", "ben", "chloe")
POINTS_PER_USER = 80
PROVIDERS = ("chatgpt", "claude", "gemini")
CONVERSATIONS = ("c1", "c2", "c3", "c4")
# A small vocabulary, so that queries share terms with many memories.
VOCABULARY = (
    "boat sail harbour wind tide anchor recipe lemon cake oven flour sugar deploy server "
    "error timeout kernel python rust garden tomato basil soil vet cat dog walk passport "
    "visa flight train ticket budget invoice salary tax meeting monday friday"
)
WORDS = VOCABULARY.split()
NOW = datetime(2026, 6, 1, tzinfo=UTC)
BM25 = qdrant_edge.Bm25()
# Both engines score in float32; the last digits of a score differ by summation order.
SCORE_TOLERANCE = 1e-4


def _sparse(vec: qdrant_edge.SparseVector) -> SparseVector:
    return SparseVector(list(vec.indices), list(vec.values))


def _dense(rng: random.Random) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(DIM)]


def _points(rng: random.Random) -> list[MemoryPoint]:
    points = []
    for user in USERS:
        # Every text of a user has its own length, so no two BM25 scores of one user's
        # memories tie: the engines order equal scores differently (each by its own internal
        # order), and rank fusion turns that into different scores. That is the engines'
        # business, not the adapters'.
        lengths = rng.sample(range(3, 3 + POINTS_PER_USER), POINTS_PER_USER)
        for length in lengths:
            text = " ".join(rng.choices(WORDS, k=length))
            memory = Memory(
                id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                user_id=user,
                kind=rng.choice(list(MemoryKind)),
                text=text,
                created_at=NOW - timedelta(minutes=rng.randint(0, 60 * 24 * 30)),
                provider=rng.choice(PROVIDERS),
                conversation_id=rng.choice(CONVERSATIONS),
                metadata={"n": str(rng.randint(0, 9))},
            )
            points.append(MemoryPoint(memory, _dense(rng), _sparse(BM25.embed_document(text))))
    return points


def _filters(rng: random.Random) -> SearchFilters:
    choice = rng.randrange(5)
    if choice == 0:
        return SearchFilters()
    if choice == 1:
        return SearchFilters(providers=tuple(rng.sample(PROVIDERS, 2)))
    if choice == 2:
        return SearchFilters(conversation_id=rng.choice(CONVERSATIONS), kind=MemoryKind.PROMPT)
    if choice == 3:
        return SearchFilters(created_after=NOW - timedelta(days=rng.randint(1, 20)))
    return SearchFilters(
        created_after=NOW - timedelta(days=25),
        created_before=NOW - timedelta(days=5),
        kind=MemoryKind.RESPONSE,
    )


@pytest.fixture(scope="module")
async def adapters(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[MemoryStore]]:
    stores: list[MemoryStore] = [
        # One shard, like the server's one collection: the engine takes BM25's IDF from the
        # shard's own points, so keyword scores agree to the last digits only over the
        # same points.
        EdgeMemoryStore(Path(tmp_path_factory.mktemp("congruence")), SPEC, shards=1),
        ServerMemoryStore(AsyncQdrantClient(location=":memory:"), SPEC),
    ]
    points = _points(random.Random(20260601))
    for store in stores:
        await store.open()
        for start in range(0, len(points), 64):
            await store.upsert(points[start : start + 64])
    yield stores
    for store in stores:
        await store.close()


def _ranked(hits: list[ScoredMemory], limit: int) -> list[tuple[float, frozenset[str]]]:
    """Results as groups of equal score, best first. Engines may order a tie either way, and
    when the list is cut at `limit` the last group may be cut differently, so it is left out."""
    groups: list[tuple[float, set[str]]] = []
    for hit in hits:
        if groups and abs(groups[-1][0] - hit.score) <= SCORE_TOLERANCE:
            groups[-1][1].add(hit.memory.id)
        else:
            groups.append((hit.score, {hit.memory.id}))
    if len(hits) == limit and groups:
        groups.pop()
    return [(score, frozenset(ids)) for score, ids in groups]


def _assert_same_ranking(
    edge: list[ScoredMemory], server: list[ScoredMemory], limit: int, what: str
) -> None:
    assert len(edge) == len(server), what
    a, b = _ranked(edge, limit), _ranked(server, limit)
    assert [ids for _, ids in a] == [ids for _, ids in b], what
    for (score_a, _), (score_b, _) in zip(a, b, strict=True):
        assert score_a == pytest.approx(score_b, abs=SCORE_TOLERANCE), what
    # The memory behind each id reads the same from both.
    by_id = {h.memory.id: h.memory for h in server}
    assert all(h.memory == by_id[h.memory.id] for h in edge if h.memory.id in by_id), what


@pytest.mark.parametrize("mode", list(SearchMode))
async def test_the_same_searches_find_the_same_memories(
    adapters: list[MemoryStore], mode: SearchMode
) -> None:
    rng = random.Random(f"queries-{mode.value}")
    compared = 0
    for _ in range(40):
        user = rng.choice(USERS)
        words = " ".join(rng.choices(WORDS, k=rng.randint(1, 4)))
        dense = _dense(rng) if mode is not SearchMode.KEYWORD else None
        sparse = _sparse(BM25.embed_query(words)) if mode is not SearchMode.SEMANTIC else None
        filters = _filters(rng)
        limit = rng.choice((1, 5, 10, 25))
        edge, server = [
            await search_memories(
                store, user, dense=dense, sparse=sparse, mode=mode, filters=filters, limit=limit
            )
            for store in adapters
        ]
        what = f"{mode.value} search for {user} ({words!r}, {filters}, limit {limit})"
        _assert_same_ranking(edge, server, limit, what)
        compared += len(edge)
    # The searches found things: an agreement on empty answers would prove nothing.
    assert compared > 200


async def test_the_same_lists_and_counts(adapters: list[MemoryStore]) -> None:
    rng = random.Random("lists")
    edge, server = adapters
    for _ in range(12):
        user = rng.choice(USERS)
        filters = _filters(rng)
        page_size = rng.choice((7, 20, 100))
        pages = []
        for store in adapters:
            seen: list[list[str]] = []
            cursor: str | None = None
            while True:
                page, cursor = await paging.scroll(store, user, filters, page_size, cursor)
                seen.append([m.id for m in page])
                if cursor is None:
                    break
            pages.append(seen)
        assert pages[0] == pages[1], f"pages of {user} ({filters}, page size {page_size})"
        assert sum(len(p) for p in pages[0]) > 0
    for user in USERS:
        assert await edge.count(user) == await server.count(user) == POINTS_PER_USER
    assert await edge.count(None) == await server.count(None) == len(USERS) * POINTS_PER_USER
    assert await edge.count_users() == await server.count_users() == len(USERS)
