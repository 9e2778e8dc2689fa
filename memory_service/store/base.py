"""The store interface, the filter shapes both adapters translate, and the listing cursor."""

from __future__ import annotations

import abc
import base64
import binascii
import math
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from memory_service import ranking
from memory_service.models import (
    Memory,
    MemoryPoint,
    ScoredMemory,
    SearchFilters,
    SearchMode,
    SparseVector,
)
from memory_service.store.payload import (
    CANDIDATE_FIELDS,
    ScoredPoint,
    StoredPoint,
    candidate,
    memory_of,
    scored,
    with_created_at,
)
from service_kit.errors import UnavailableError

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
RRF_K = 60


class StoreError(UnavailableError):
    """A store operation failed; the caller may retry."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now."""


class DimensionMismatchError(StoreError):
    """The stored collection was built for another embedding dimension."""


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    model: str
    dimension: int
    prefix: str = "memories"

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.model.lower()).strip("-")
        return f"{self.prefix}_{slug}_{self.dimension}"


@dataclass(frozen=True, slots=True)
class Match:
    """The payload field `key` equals `value`."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class MatchAny:
    """The payload field `key` equals one of `values`."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """The numeric payload field `key` lies within [gte, lte]; None leaves that side open."""

    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class HasId:
    point_id: str


# What a store filter is made of; each adapter translates these into its backend's types.
Condition = Match | MatchAny | Range | HasId


def tenant_conditions(user_id: str, filters: SearchFilters | None = None) -> list[Condition]:
    """Every read and delete starts from the verified user; request filters only narrow it."""
    if not user_id:
        raise ValueError("a user id is required for every store read")
    conditions: list[Condition] = [Match("user_id", user_id)]
    if filters is None:
        return conditions
    if filters.providers:
        conditions.append(MatchAny("provider", tuple(filters.providers)))
    if filters.conversation_id:
        conditions.append(Match("conversation_id", filters.conversation_id))
    if filters.kind is not None:
        conditions.append(Match("kind", filters.kind.value))
    if filters.created_after is not None or filters.created_before is not None:
        conditions.append(
            Range(
                "created_at",
                gte=filters.created_after.timestamp() if filters.created_after else None,
                lte=filters.created_before.timestamp() if filters.created_before else None,
            )
        )
    return conditions


def memory_conditions(user_id: str, memory_id: str) -> list[Condition]:
    """One memory, and only if the verified user owns it."""
    return [*tenant_conditions(user_id), HasId(memory_id)]


@dataclass(frozen=True)
class ListCursor:
    """Where a newest-first listing stopped: the creation time of the last memory returned,
    and how many memories with exactly that time were returned (a batch can share one)."""

    created_at: float
    seen_at_time: int


def encode_cursor(cursor: ListCursor) -> str:
    raw = f"{cursor.created_at!r}/{cursor.seen_at_time}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListCursor:
    """The position a cursor stands for; ValueError for anything this store did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, seen = raw.split("/")
        decoded = ListCursor(float(created_at), int(seen))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("malformed cursor") from exc
    if not math.isfinite(decoded.created_at) or not 0 <= decoded.seen_at_time <= MAX_SKIP:
        raise ValueError("malformed cursor")
    return decoded


# Memories sharing one creation time that a page may have to step over; a batch save
# (at most 256 items) is the largest group with one time.
MAX_SKIP = 100_000


def scroll_window(limit: int, cursor: ListCursor | None) -> tuple[float | None, int]:
    """Where the next page starts (newest first) and how many records to ask for."""
    if cursor is None:
        return None, limit + 1
    return cursor.created_at, cursor.seen_at_time + limit + 1


def newest_first_page(
    records: Sequence[tuple[float, Memory]], limit: int, cursor: ListCursor | None
) -> tuple[list[Memory], str | None]:
    """One page from records ordered newest first starting at the cursor's time: those the
    previous pages returned are skipped, and the cursor says where this page stopped."""
    skip = 0
    if cursor is not None:
        while skip < min(cursor.seen_at_time, len(records)) and (
            records[skip][0] == cursor.created_at
        ):
            skip += 1
    rest = records[skip:]
    page = rest[:limit]
    if len(rest) <= limit or not page:
        return [m for _, m in page], None
    last = page[-1][0]
    seen = sum(1 for created, _ in page if created == last)
    if cursor is not None and last == cursor.created_at:
        seen += cursor.seen_at_time
    return [m for _, m in page], encode_cursor(ListCursor(last, seen))


def stored_or_own(
    points: Sequence[MemoryPoint], records: Iterable[StoredPoint]
) -> tuple[list[MemoryPoint], list[Memory]]:
    """Split a write into the points to insert and what each point's id holds afterwards.

    records are the points already stored under the write's ids. Ids are UUIDv5 of
    (user, client message id), so a stored id of another user means the id was forged or
    collided, which no write may paper over.
    """
    stored = {str(record.id): record for record in records}
    fresh: list[MemoryPoint] = []
    held: dict[str, Memory] = {}
    result: list[Memory] = []
    for point in points:
        memory_id = point.memory.id
        if memory_id not in held:
            if memory_id in stored:
                record = stored[memory_id]
                if (record.payload or {}).get("user_id") != point.memory.user_id:
                    raise StoreError(f"point {memory_id} belongs to another user")
                held[memory_id] = memory_of(record)
            else:
                held[memory_id] = point.memory
                fresh.append(point)
        result.append(held[memory_id])
    return fresh, result


def prefetch_limit(limit: int) -> int:
    return min(max(limit * 4, 40), 400)


@dataclass(frozen=True, slots=True)
class NearestQuery:
    """One nearest-neighbour query of a search: which vector, the query vector, how many, and
    which payload fields each hit brings (None: all of them)."""

    using: str
    vector: list[float] | SparseVector
    limit: int
    fields: list[str] | None = None


class MemoryStore(abc.ABC):
    """Memories of every user in one collection, every access scoped by user id."""

    backend: str
    spec: CollectionSpec

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the collection and indexes if missing; check the embedding dimension."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def upsert(self, points: Sequence[MemoryPoint]) -> None:
        """Store points durably before returning."""

    @abc.abstractmethod
    async def insert_new(self, points: Sequence[MemoryPoint]) -> list[Memory]:
        """Store, durably and in one write, the points whose ids are not stored yet; return
        for each point the memory its id now holds: its own, or the one stored before."""

    @abc.abstractmethod
    async def get(self, user_id: str, memory_id: str) -> Memory | None: ...

    async def get_many(self, user_id: str, memory_ids: Sequence[str]) -> dict[str, Memory]:
        """The user's memories among memory_ids, by id, in one read."""
        if not memory_ids:
            return {}
        found = await self._fetch(memory_ids, user_id)
        return {i: memory for i, memory in found.items() if memory.user_id == user_id}

    async def taken_ids(self, memory_ids: Sequence[str]) -> set[str]:
        """Which of memory_ids any user's memory already has. The one read whose answer is
        not scoped to a user: a save that brings its own id must not land on someone else's
        point, and only the ids come back."""
        if not memory_ids:
            return set()
        return set(await self._fetch(memory_ids))

    async def search(
        self,
        user_id: str,
        *,
        dense: list[float] | None,
        sparse: SparseVector | None,
        mode: SearchMode,
        filters: SearchFilters,
        limit: int,
    ) -> list[ScoredMemory]:
        """Ranked and scored as ranking.py says, the same for every backend; adapters only
        run the queries."""
        wanted = limit + ranking.DUPLICATE_MARGIN
        if mode is SearchMode.RRF:
            if dense is None or sparse is None:
                raise ValueError("rrf search needs both vectors")
            depth = prefetch_limit(limit)
            prefetches = [
                NearestQuery(DENSE_VECTOR, dense, depth),
                NearestQuery(SPARSE_VECTOR, sparse, depth),
            ]
            points = await self._rrf(tenant_conditions(user_id, filters), prefetches, limit)
            return [scored(p) for p in points]
        if mode is SearchMode.HYBRID:
            if dense is None or sparse is None:
                raise ValueError("hybrid search needs both vectors")
            depth = max(ranking.CANDIDATE_DEPTH, wanted)
            dense_hits, sparse_hits = await self._candidates(
                user_id,
                filters,
                [
                    NearestQuery(DENSE_VECTOR, dense, depth),
                    NearestQuery(SPARSE_VECTOR, sparse, depth),
                ],
            )
            ranked = ranking.fuse(dense_hits, sparse_hits)[:wanted]
            memories = await self._fetch([memory_id for memory_id, _ in ranked], user_id)
            # The ids come from a search scoped to the user; checking the owner again keeps
            # "every read is the caller's" true of this by-id read too.
            return ranking.collapse_duplicates(
                (
                    ScoredMemory(memories[i], score)
                    for i, score in ranked
                    if i in memories and memories[i].user_id == user_id
                ),
                limit,
            )
        if mode is SearchMode.SEMANTIC:
            if dense is None:
                raise ValueError("semantic search needs its vector")
            (nearest,) = await self._nearest(
                user_id, filters, [NearestQuery(DENSE_VECTOR, dense, wanted)]
            )
            return ranking.semantic(nearest, limit)
        if sparse is None:
            raise ValueError("keyword search needs its vector")
        queries = [NearestQuery(SPARSE_VECTOR, sparse, wanted)]
        if dense is not None:
            # Only the best dense match, to put keyword scores on the same scale.
            queries.append(NearestQuery(DENSE_VECTOR, dense, 1))
        hits = await self._nearest(user_id, filters, queries)
        best = max((h.score for h in hits[1]), default=0.0) if dense is not None else None
        return ranking.keyword(hits[0], best, limit)

    async def _nearest(
        self, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
    ) -> list[list[ScoredMemory]]:
        """For each query, the user's nearest memories with their raw scores (cosine, BM25),
        run together as one batch."""
        batches = await self._query(tenant_conditions(user_id, filters), queries)
        return [[scored(p) for p in points] for points in batches]

    async def _candidates(
        self, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
    ) -> list[list[ranking.Candidate]]:
        """Like _nearest, with only what fusion needs of each hit."""
        slim = [replace(q, fields=CANDIDATE_FIELDS) for q in queries]
        batches = await self._query(tenant_conditions(user_id, filters), slim)
        return [[candidate(p) for p in points] for points in batches]

    async def _fetch(
        self, memory_ids: Sequence[str], owner: str | None = None
    ) -> dict[str, Memory]:
        """The memories with these ids (looked for where owner's memories are kept, given
        one), whoever owns them: callers check the owner."""
        return {str(p.id): memory_of(p) for p in await self._retrieve(memory_ids, owner)}

    @abc.abstractmethod
    async def _query(
        self, conditions: list[Condition], queries: Sequence[NearestQuery]
    ) -> Sequence[Sequence[ScoredPoint]]:
        """For each query, the nearest points that meet the conditions, with their raw scores,
        run together as one batch."""

    @abc.abstractmethod
    async def _retrieve(
        self, memory_ids: Sequence[str], owner: str | None = None
    ) -> Sequence[StoredPoint]:
        """The points with these ids, whoever owns them; with an owner, a backend that keeps
        users apart (the embedded store's shards) looks only where that user's are."""

    @abc.abstractmethod
    async def _rrf(
        self, conditions: list[Condition], prefetches: Sequence[NearestQuery], limit: int
    ) -> Sequence[ScoredPoint]:
        """The engine's own reciprocal-rank fusion of the prefetches' results."""

    async def scroll(
        self, user_id: str, filters: SearchFilters, limit: int, cursor: str | None
    ) -> tuple[list[Memory], str | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        position = decode_cursor(cursor) if cursor else None
        start, window = scroll_window(limit, position)
        records = await self._newest(tenant_conditions(user_id, filters), start, window)
        return newest_first_page([with_created_at(r) for r in records], limit, position)

    @abc.abstractmethod
    async def _newest(
        self, conditions: list[Condition], start: float | None, window: int
    ) -> Sequence[StoredPoint]:
        """Up to `window` of the points that meet the conditions, newest first from creation
        time `start` (None: the newest)."""

    @abc.abstractmethod
    async def count(self, user_id: str | None = None) -> int:
        """Memories of one user, or of everyone when user_id is None (admin figures)."""

    @abc.abstractmethod
    async def count_users(self) -> int: ...

    @abc.abstractmethod
    async def delete(self, user_id: str, memory_id: str) -> bool: ...

    @abc.abstractmethod
    async def delete_user(self, user_id: str) -> int: ...

    @abc.abstractmethod
    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None: ...

    async def iterate(
        self, user_id: str, filters: SearchFilters, page_size: int = 256
    ) -> AsyncIterator[Memory]:
        cursor: str | None = None
        while True:
            page, cursor = await self.scroll(user_id, filters, page_size, cursor)
            for memory in page:
                yield memory
            if cursor is None:
                return
