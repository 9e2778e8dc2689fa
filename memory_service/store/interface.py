"""The store interface every backend implements, and the shapes it speaks in: collection
spec, errors, filter conditions and nearest-neighbour queries."""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memory_service.models import Memory, MemoryPoint, SparseVector
from memory_service.store.payload import ScoredPoint, StoredPoint
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


@dataclass(frozen=True, slots=True)
class NotIds:
    """None of these points."""

    point_ids: tuple[str, ...]


# What a store filter is made of (all of them hold); each adapter translates these into its
# backend's types.
Condition = Match | MatchAny | Range | HasId | NotIds


@dataclass(frozen=True, slots=True)
class NearestQuery:
    """One nearest-neighbour query of a search: which vector, the query vector and how many.
    Each hit brings its whole payload."""

    using: str
    vector: list[float] | SparseVector
    limit: int


class MemoryStore(abc.ABC):
    """Memories of every user in one collection, every access scoped by user id.

    A backend runs queries and returns its own points; what a search ranks first
    (memory_service.search), how listings page (store.paging) and who may read an id
    (store.ownership) are decided beside it, the same for every backend. Reads take the
    conditions that store.ownership.tenant_conditions builds, which start from the user."""

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

    @abc.abstractmethod
    async def query(
        self, conditions: list[Condition], queries: Sequence[NearestQuery]
    ) -> Sequence[Sequence[ScoredPoint]]:
        """For each query, the nearest points that meet the conditions, with their raw scores,
        run together as one batch."""

    @abc.abstractmethod
    async def retrieve(
        self, memory_ids: Sequence[str], owner: str | None = None
    ) -> Sequence[StoredPoint]:
        """The points with these ids, whoever owns them; with an owner, a backend that keeps
        users apart (the embedded store's shards) looks only where that user's are."""

    @abc.abstractmethod
    async def rrf(
        self, conditions: list[Condition], prefetches: Sequence[NearestQuery], limit: int
    ) -> Sequence[ScoredPoint]:
        """The engine's own reciprocal-rank fusion of the prefetches' results."""

    @abc.abstractmethod
    async def newest(
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
    async def count_matching(self, conditions: list[Condition]) -> int:
        """Points that meet the conditions, counted exactly from the indexes."""

    @abc.abstractmethod
    async def facet(self, conditions: list[Condition], key: str, limit: int) -> dict[str, int]:
        """How many points that meet the conditions hold each value of the indexed keyword
        field `key`: the `limit` most common values, counted exactly."""

    @abc.abstractmethod
    async def delete(self, user_id: str, memory_id: str) -> bool: ...

    @abc.abstractmethod
    async def delete_user(self, user_id: str) -> int: ...

    @abc.abstractmethod
    async def set_fields(self, user_id: str, memory_id: str, fields: dict[str, Any]) -> None: ...
