"""Every access is the caller's: the conditions each read starts from, and the rule that an
id never changes owner."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from memory_service.models import Memory, MemoryPoint, SearchFilters
from memory_service.store.interface import (
    Condition,
    HasId,
    Match,
    MatchAny,
    MemoryStore,
    Range,
    StoreError,
)
from memory_service.store.payload import StoredPoint, memory_of


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


@dataclass(frozen=True, slots=True)
class UserScope:
    """What one request may read: the verified user's memories, narrowed by its filters. Built
    once per request; every store call of it starts from these conditions."""

    user_id: str
    conditions: tuple[Condition, ...]

    @classmethod
    def of(cls, user_id: str, filters: SearchFilters | None = None) -> UserScope:
        return cls(user_id, tuple(tenant_conditions(user_id, filters)))

    def where(self, *narrower: Condition) -> list[Condition]:
        """The scope's conditions, and these besides."""
        return [*self.conditions, *narrower]

    def owns(self, memory: Memory) -> bool:
        return memory.user_id == self.user_id


def memory_conditions(user_id: str, memory_id: str) -> list[Condition]:
    """One memory, and only if the verified user owns it."""
    return [*tenant_conditions(user_id), HasId(memory_id)]


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


async def fetch(
    store: MemoryStore, memory_ids: Sequence[str], owner: str | None = None
) -> dict[str, Memory]:
    """The memories with these ids (looked for where owner's memories are kept, given
    one), whoever owns them: callers check the owner."""
    return {str(p.id): memory_of(p) for p in await store.retrieve(memory_ids, owner)}


async def get_many(
    store: MemoryStore, user_id: str, memory_ids: Sequence[str]
) -> dict[str, Memory]:
    """The user's memories among memory_ids, by id, in one read."""
    if not memory_ids:
        return {}
    found = await fetch(store, memory_ids, user_id)
    return {i: memory for i, memory in found.items() if memory.user_id == user_id}
