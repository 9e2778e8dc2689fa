"""Protobuf messages to domain types and back; nothing past this module sees _pb2 types."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from memory_service.batch import BatchItem, SaveOutcome, SaveStatus
from memory_service.memories import NewMemory, StoreStats, UserStats
from memory_service.models import Memory, MemoryKind, ScoredMemory, SearchFilters, SearchMode
from protos.memory.v1 import memory_pb2 as pb
from service_kit.errors import InvalidArgumentError

# Fields that a message and the domain type spell and type alike, copied as they are.
_SOURCE_FIELDS = ("provider", "conversation_id", "message_id", "url")
_MEMORY_FIELDS = (
    "id",
    "user_id",
    "text",
    *_SOURCE_FIELDS,
    "metadata",
    "prompt_id",
    "response_id",
)

_KIND_TO_PB = {
    MemoryKind.PROMPT: pb.MEMORY_KIND_PROMPT,
    MemoryKind.RESPONSE: pb.MEMORY_KIND_RESPONSE,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_MODE_FROM_PB = {
    pb.SEARCH_MODE_UNSPECIFIED: SearchMode.HYBRID,
    pb.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
    pb.SEARCH_MODE_SEMANTIC: SearchMode.SEMANTIC,
    pb.SEARCH_MODE_KEYWORD: SearchMode.KEYWORD,
    pb.SEARCH_MODE_RRF: SearchMode.RRF,
}


def kind_from_pb(value: int, default: MemoryKind | None) -> MemoryKind | None:
    if value == pb.MEMORY_KIND_UNSPECIFIED:
        return default
    try:
        return _KIND_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgumentError(f"unknown memory kind {value}") from None


def mode_from_pb(value: int) -> SearchMode:
    try:
        return _MODE_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown search mode {value}; use hybrid, semantic or keyword"
        ) from None


def _time(ts: Timestamp, present: bool) -> datetime | None:
    if not present:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def filters_from_pb(msg: pb.Filters) -> SearchFilters:
    after = _time(msg.created_after, msg.HasField("created_after"))
    before = _time(msg.created_before, msg.HasField("created_before"))
    if after and before and after > before:
        raise InvalidArgumentError("created_after is later than created_before")
    return SearchFilters(
        providers=tuple(p.strip().lower() for p in msg.providers if p.strip()),
        conversation_id=msg.conversation_id,
        created_after=after,
        created_before=before,
        kind=kind_from_pb(msg.kind, None),
    )


def _new_memory(
    msg: pb.SaveMemoryRequest | pb.AttachResponseRequest, kind: MemoryKind
) -> NewMemory:
    return NewMemory(
        kind=kind,
        metadata=dict(msg.metadata),
        **{name: getattr(msg, name) for name in ("text", *_SOURCE_FIELDS)},
    )


def new_memory_from_pb(msg: pb.SaveMemoryRequest) -> NewMemory:
    return _new_memory(msg, kind_from_pb(msg.kind, MemoryKind.PROMPT) or MemoryKind.PROMPT)


def response_from_pb(msg: pb.AttachResponseRequest) -> NewMemory:
    return _new_memory(msg, MemoryKind.RESPONSE)


def update_from_pb(msg: pb.UpdateMemoryRequest) -> tuple[str | None, dict[str, str] | None]:
    """The new text and metadata of an update; None where the request leaves a field as is."""
    text = msg.text if msg.HasField("text") else None
    metadata = dict(msg.metadata.entries) if msg.HasField("metadata") else None
    return text, metadata


_STATUS_TO_PB = {
    SaveStatus.STORED: pb.SAVE_STATUS_STORED,
    SaveStatus.ALREADY_PRESENT: pb.SAVE_STATUS_ALREADY_PRESENT,
    SaveStatus.REFUSED: pb.SAVE_STATUS_REFUSED,
}


def batch_items_from_pb(msg: pb.SaveMemoriesRequest) -> list[BatchItem]:
    items = []
    for item in msg.items:
        problem = ""
        try:
            kind = kind_from_pb(item.kind, MemoryKind.PROMPT) or MemoryKind.PROMPT
        except InvalidArgumentError as exc:
            # Refused on its own; the other items go on.
            kind, problem = MemoryKind.PROMPT, str(exc)
        items.append(
            BatchItem(
                NewMemory(
                    text=item.text,
                    kind=kind,
                    provider=item.provider,
                    conversation_id=item.conversation_id,
                    message_id=item.message_id,
                    url=item.url,
                    metadata=dict(item.metadata),
                ),
                prompt_id=item.prompt_id,
                prompt_message_id=item.prompt_message_id,
                created_at=_time(item.created_at, item.HasField("created_at")),
                id=item.id,
                problem=problem,
            )
        )
    return items


def save_outcomes_to_pb(outcomes: list[SaveOutcome]) -> pb.SaveMemoriesResponse:
    return pb.SaveMemoriesResponse(
        results=[
            pb.SaveResult(
                status=_STATUS_TO_PB[o.status],
                memory=memory_to_pb(o.memory) if o.memory is not None else None,
                reason=o.reason,
            )
            for o in outcomes
        ]
    )


def memory_to_pb(memory: Memory) -> pb.Memory:
    created = Timestamp()
    created.FromDatetime(memory.created_at)
    updated = None
    if memory.updated_at is not None:
        updated = Timestamp()
        updated.FromDatetime(memory.updated_at)
    return pb.Memory(
        kind=_KIND_TO_PB[memory.kind],
        created_at=created,
        updated_at=updated,
        **{name: getattr(memory, name) for name in _MEMORY_FIELDS},
    )


def scored_to_pb(results: list[ScoredMemory]) -> pb.SearchResponse:
    return pb.SearchResponse(
        results=[
            pb.ScoredMemory(
                memory=memory_to_pb(r.memory), score=r.score, contributions=r.contributions
            )
            for r in results
        ]
    )


def stats_to_pb(stats: StoreStats) -> pb.Stats:
    return pb.Stats(**dataclasses.asdict(stats))


def user_stats_to_pb(stats: UserStats) -> pb.UserStats:
    return pb.UserStats(
        total=stats.total,
        providers=[pb.ProviderCount(provider=p, count=n) for p, n in stats.providers],
        span_counts=stats.span_counts,
    )
