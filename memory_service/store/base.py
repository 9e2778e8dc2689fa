"""The store interface, and the payload and filter shapes both adapters share."""

from __future__ import annotations

import abc
import base64
import binascii
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from memory_service import ranking
from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    ScoredMemory,
    SearchFilters,
    SearchMode,
    SparseVector,
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


def to_payload(memory: Memory) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "user_id": memory.user_id,
        "kind": memory.kind.value,
        "text": memory.text,
        "provider": memory.provider,
        "conversation_id": memory.conversation_id,
        "message_id": memory.message_id,
        "url": memory.url,
        "metadata": dict(memory.metadata),
        "created_at": memory.created_at.timestamp(),
        "prompt_id": memory.prompt_id,
        "response_id": memory.response_id,
        "seen_count": memory.seen_count,
    }
    if memory.updated_at is not None:
        payload["updated_at"] = memory.updated_at.timestamp()
    return payload


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if value is not None else None


def from_payload(point_id: Any, payload: dict[str, Any]) -> Memory:
    return Memory(
        id=str(point_id),
        user_id=payload["user_id"],
        kind=MemoryKind(payload.get("kind", MemoryKind.PROMPT.value)),
        text=payload.get("text", ""),
        created_at=datetime.fromtimestamp(float(payload.get("created_at", 0.0)), tz=UTC),
        provider=payload.get("provider", ""),
        conversation_id=payload.get("conversation_id", ""),
        message_id=payload.get("message_id", ""),
        url=payload.get("url", ""),
        metadata={str(k): str(v) for k, v in (payload.get("metadata") or {}).items()},
        prompt_id=payload.get("prompt_id", ""),
        response_id=payload.get("response_id", ""),
        updated_at=_time(payload.get("updated_at")),
        seen_count=int(payload.get("seen_count", 1)),
    )


def with_created_at(point_id: Any, payload: dict[str, Any]) -> tuple[float, Memory]:
    """The memory with its stored creation time, the exact value listings order by."""
    return float(payload.get("created_at", 0.0)), from_payload(point_id, payload)


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
    points: Sequence[MemoryPoint], stored: dict[str, tuple[Any, dict[str, Any]]]
) -> tuple[list[MemoryPoint], list[Memory]]:
    """Split a write into the points to insert and what each point's id holds afterwards.

    stored maps the ids already in the store to (point id, payload). Ids are UUIDv5 of
    (user, client message id), so a stored id of another user means the id was forged or
    collided, which no write may paper over.
    """
    fresh: list[MemoryPoint] = []
    held: dict[str, Memory] = {}
    result: list[Memory] = []
    for point in points:
        memory_id = point.memory.id
        if memory_id not in held:
            if memory_id in stored:
                point_id, payload = stored[memory_id]
                if payload.get("user_id") != point.memory.user_id:
                    raise StoreError(f"point {memory_id} belongs to another user")
                held[memory_id] = from_payload(point_id, payload)
            else:
                held[memory_id] = point.memory
                fresh.append(point)
        result.append(held[memory_id])
    return fresh, result


def prefetch_limit(limit: int) -> int:
    return min(max(limit * 4, 40), 400)


# The payload fields fusion reads from every candidate; the rest only for results kept.
CANDIDATE_FIELDS = ["conversation_id", "created_at"]


def candidate(point_id: Any, score: float, payload: dict[str, Any] | None) -> ranking.Candidate:
    payload = payload or {}
    return ranking.Candidate(
        id=str(point_id),
        score=score,
        conversation_id=str(payload.get("conversation_id", "")),
        created_at=float(payload.get("created_at", 0.0)),
    )


@dataclass(frozen=True, slots=True)
class NearestQuery:
    """One nearest-neighbour query of a search: which vector, the query vector, how many."""

    using: str
    vector: list[float] | SparseVector
    limit: int


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
        found = await self._fetch(memory_ids)
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
            return await self._rrf(user_id, filters, dense, sparse, limit)
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
            memories = await self._fetch([memory_id for memory_id, _ in ranked])
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

    @abc.abstractmethod
    async def _nearest(
        self, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
    ) -> list[list[ScoredMemory]]:
        """For each query, the user's nearest memories with their raw scores (cosine, BM25),
        run together as one batch."""

    @abc.abstractmethod
    async def _candidates(
        self, user_id: str, filters: SearchFilters, queries: Sequence[NearestQuery]
    ) -> list[list[ranking.Candidate]]:
        """Like _nearest, with only what fusion needs of each hit (CANDIDATE_FIELDS)."""

    @abc.abstractmethod
    async def _fetch(self, memory_ids: Sequence[str]) -> dict[str, Memory]:
        """The memories with these ids, whoever owns them: callers check the owner."""

    @abc.abstractmethod
    async def _rrf(
        self,
        user_id: str,
        filters: SearchFilters,
        dense: list[float],
        sparse: SparseVector,
        limit: int,
    ) -> list[ScoredMemory]:
        """The engine's own reciprocal-rank fusion of dense and BM25 prefetches."""

    async def scroll(
        self, user_id: str, filters: SearchFilters, limit: int, cursor: str | None
    ) -> tuple[list[Memory], str | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        position = decode_cursor(cursor) if cursor else None
        start, window = scroll_window(limit, position)
        records = await self._newest(user_id, filters, start, window)
        return newest_first_page(records, limit, position)

    @abc.abstractmethod
    async def _newest(
        self, user_id: str, filters: SearchFilters, start: float | None, window: int
    ) -> list[tuple[float, Memory]]:
        """Up to `window` of the user's memories, newest first from creation time `start`
        (None: the newest), each with its stored creation time."""

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
