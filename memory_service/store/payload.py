"""How a memory is kept in a point's payload, and read back from the points either backend
returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from memory_service import ranking
from memory_service.models import Memory, MemoryKind, ScoredMemory


class StoredPoint(Protocol):
    """A point as a backend's read returns it: its id and the payload fields asked for."""

    @property
    def id(self) -> Any: ...

    @property
    def payload(self) -> dict[str, Any] | None: ...


class ScoredPoint(StoredPoint, Protocol):
    """A point a query found, with its raw score."""

    @property
    def score(self) -> float: ...


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


def memory_of(point: StoredPoint) -> Memory:
    payload = point.payload or {}
    return Memory(
        id=str(point.id),
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


def scored(point: ScoredPoint) -> ScoredMemory:
    return ScoredMemory(memory_of(point), float(point.score))


def with_created_at(point: StoredPoint) -> tuple[float, Memory]:
    """The memory with its stored creation time, the exact value listings order by."""
    return float((point.payload or {}).get("created_at", 0.0)), memory_of(point)


def candidate(point: ScoredPoint, memory_id: str) -> ranking.Candidate:
    """The hit as the ranking reads it; `memory_id` is str(point.id), which the caller keeps."""
    # Hundreds per search: positional, and no conversions the stored types do not need.
    payload = point.payload or {}
    return ranking.Candidate(
        memory_id,
        point.score,
        payload.get("conversation_id") or "",
        payload.get("created_at") or 0.0,
        payload.get("text") or "",
        payload.get("kind") or "",
    )
