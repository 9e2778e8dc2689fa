"""Saving many memories at once (imports, bulk clients): each item is checked on its own, the
accepted ones are embedded together and written with one insert-only store update, and every
item gets its own result, so one bad item never costs the others. Every id an item brings is
read as the caller's: one of their memories, or scoped to them."""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from memory_service import metrics
from memory_service.memories import (
    Memories,
    NewMemory,
    _check_field,
    _check_metadata,
    _check_text,
    _timed,
)
from memory_service.models import (
    Memory,
    MemoryKind,
    MemoryPoint,
    in_users_space,
    memory_point_id,
    new_memory_id,
    normalised_text,
    scoped_client_id,
)
from memory_service.store import ownership
from service_kit.errors import InvalidArgumentError
from service_kit.identity import Identity
from service_kit.limits import MAX_BATCH_ITEMS, MAX_CREATED_AT_SKEW_SECONDS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SaveStatus(enum.StrEnum):
    STORED = "stored"
    ALREADY_PRESENT = "already_present"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class BatchItem:
    new: NewMemory
    # A response's prompt: its memory id or the client message id it was saved with.
    prompt_id: str = ""
    prompt_message_id: str = ""
    # When the message was first written; None: now.
    created_at: datetime | None = None
    # Only without a message id: the id a memory had in an export.
    id: str = ""
    # Why the item cannot be read at all (found while converting it).
    problem: str = ""


@dataclass(slots=True)
class SaveOutcome:
    status: SaveStatus
    memory: Memory | None = None
    reason: str = ""


@dataclass(slots=True)
class _Planned:
    """An accepted item on its way to the store."""

    index: int
    item: BatchItem
    memory: Memory
    # Prompt ids (already stored, not in this batch) that get this response as theirs.
    links: list[str] = field(default_factory=list)


class _Refused(Exception):
    pass


def check_created_at(value: datetime | None, now: datetime) -> datetime:
    if value is None:
        return now
    if value.tzinfo is None or value.utcoffset() is None:
        raise _Refused("created_at must carry a timezone")
    if value < EPOCH:
        raise _Refused(f"created_at {value.isoformat()} is before 1970")
    if value > now + timedelta(seconds=MAX_CREATED_AT_SKEW_SECONDS):
        raise _Refused(f"created_at {value.isoformat()} is in the future")
    return value.astimezone(UTC)


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _client_id(who: Identity, value: str, owned: set[str]) -> str:
    """Where an id the client brings points: an id of the caller's own (in their id space, as
    every id they were given since ids had spaces, or one of their stored memories) as it
    is, any other id scoped to the caller: taken by someone else or free, the answer is the
    same."""
    client_id = _uuid(value)
    if client_id is None:
        raise _Refused(f"id {value[:64]!r} is not a UUID")
    if client_id in owned or in_users_space(who.user_id, client_id):
        return client_id
    return scoped_client_id(who.user_id, client_id)


def _memory(
    who: Identity, item: BatchItem, now: datetime, owned: set[str], id_key: bytes
) -> Memory:
    new = item.new
    if item.problem:
        raise _Refused(item.problem)
    try:
        text = _check_text(new.text)
        for name in ("provider", "conversation_id", "message_id", "url", "prompt_message_id"):
            source = item if name == "prompt_message_id" else new
            _check_field(getattr(source, name), name)
        metadata = _check_metadata(new.metadata)
    except InvalidArgumentError as exc:
        raise _Refused(str(exc)) from None
    if new.kind is MemoryKind.RESPONSE and not (item.prompt_id or item.prompt_message_id):
        raise _Refused("a response names its prompt: prompt_id or prompt_message_id")
    if item.id and not new.message_id:
        memory_id = _client_id(who, item.id, owned)
    else:
        # As for a single save: the message id's point, or without one the text's.
        memory_id = memory_point_id(who.user_id, new.message_id, new.kind, text, text_key=id_key)
    return Memory(
        id=memory_id,
        user_id=who.user_id,
        kind=new.kind,
        text=text,
        created_at=check_created_at(item.created_at, now),
        provider=new.provider.strip().lower(),
        conversation_id=new.conversation_id,
        message_id=new.message_id,
        url=new.url,
        metadata=metadata,
    )


def _edited_since(p: _Planned, stored: Memory) -> bool:
    content_id = not p.memory.message_id and not p.item.id
    return content_id and normalised_text(stored.text) != normalised_text(p.memory.text)


def _prompt_id(who: Identity, item: BatchItem, owned: set[str]) -> str:
    """The memory id of a response's prompt, named as a client names memories: its id (as
    the prompt's own item in a batch brings it) or its client message id."""
    if item.prompt_id:
        try:
            return _client_id(who, item.prompt_id, owned)
        except _Refused:
            raise _Refused(f"prompt {item.prompt_id[:64]!r} not found") from None
    return memory_point_id(who.user_id, item.prompt_message_id)


async def _owned_client_ids(memories: Memories, who: Identity, items: list[BatchItem]) -> set[str]:
    """Which of the ids the items bring (their own, their prompts') are the caller's
    memories already; only the caller's are looked at."""
    values = {value for item in items for value in (item.id, item.prompt_id) if value}
    named = sorted(filter(None, map(_uuid, values)))
    with _timed("get"):
        return set(await ownership.get_many(memories.store, who.user_id, named))


async def save_batch(
    memories: Memories, who: Identity, items: list[BatchItem]
) -> list[SaveOutcome]:
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidArgumentError(
            f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}"
        )
    now = datetime.now(UTC)
    outcomes: list[SaveOutcome | None] = [None] * len(items)
    planned: dict[str, _Planned] = {}
    # Later items repeating an earlier one's id, and that earlier item's index.
    repeats: dict[int, int] = {}
    owned = await _owned_client_ids(memories, who, items)
    for index, item in enumerate(items):
        try:
            memory = _memory(who, item, now, owned, memories.id_key)
        except _Refused as exc:
            outcomes[index] = SaveOutcome(SaveStatus.REFUSED, reason=str(exc))
            continue
        if memory.id in planned:
            repeats[index] = planned[memory.id].index
        else:
            planned[memory.id] = _Planned(index, item, memory)

    with _timed("get"):
        stored = await ownership.get_many(memories.store, who.user_id, list(planned))
    for memory_id, memory in stored.items():
        p = planned.pop(memory_id)
        if _edited_since(p, memory):
            # The text's point holds a memory edited since: this text is new again.
            p.memory.id = new_memory_id(who.user_id)
            planned[p.memory.id] = p
            continue
        outcomes[p.index] = SaveOutcome(SaveStatus.ALREADY_PRESENT, memory)

    await _link_responses(memories, who, planned, stored, outcomes, owned)

    accepted = sorted(planned.values(), key=lambda p: p.index)
    if accepted:
        vectors = await asyncio.gather(*(memories.embedder.embed(p.memory.text) for p in accepted))
        points = [
            MemoryPoint(p.memory, dense, memories._sparse_document(p.memory.text))
            for p, dense in zip(accepted, vectors, strict=True)
        ]
        # Insert-only: a save that stored one of these ids since they were looked up above
        # (a retry in flight, the same text saved alone) keeps its memory, which is then
        # this item's answer; nothing is overwritten.
        with _timed("upsert"):
            held = await memories.store.insert_new(points)
        for p, memory in zip(accepted, held, strict=True):
            if memory is not p.memory:
                outcomes[p.index] = SaveOutcome(SaveStatus.ALREADY_PRESENT, memory)
        accepted = [p for p in accepted if outcomes[p.index] is None]
        with _timed("set_payload"):
            for p in accepted:
                for prompt_id in p.links:
                    await memories.store.set_fields(
                        who.user_id, prompt_id, {"response_id": p.memory.id}
                    )
    for p in accepted:
        outcomes[p.index] = SaveOutcome(SaveStatus.STORED, p.memory)
        metrics.MEMORIES_SAVED.labels(p.memory.kind.value).inc()

    for index, first_index in repeats.items():
        first = outcomes[first_index]
        assert first is not None
        outcomes[index] = (
            first
            if first.status is SaveStatus.REFUSED
            else SaveOutcome(SaveStatus.ALREADY_PRESENT, first.memory)
        )
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


async def _link_responses(
    memories: Memories,
    who: Identity,
    planned: dict[str, _Planned],
    stored: dict[str, Memory],
    outcomes: list[SaveOutcome | None],
    owned: set[str],
) -> None:
    """Point each response at its prompt, in this batch or stored before; a response whose
    prompt is in neither is refused."""
    responses: dict[str, str] = {}
    for memory_id, p in list(planned.items()):
        if p.memory.kind is not MemoryKind.RESPONSE:
            continue
        try:
            responses[memory_id] = _prompt_id(who, p.item, owned)
        except _Refused as exc:
            outcomes[planned.pop(memory_id).index] = SaveOutcome(
                SaveStatus.REFUSED, reason=str(exc)
            )
    elsewhere = [pid for pid in set(responses.values()) if pid not in planned and pid not in stored]
    with _timed("get"):
        earlier = {**stored, **await ownership.get_many(memories.store, who.user_id, elsewhere)}
    for memory_id, prompt_id in responses.items():
        p = planned[memory_id]
        if prompt_id in planned and planned[prompt_id].memory.kind is MemoryKind.PROMPT:
            prompt = planned[prompt_id].memory
            prompt.response_id = memory_id
        elif prompt_id in earlier:
            prompt = earlier[prompt_id]
            p.links.append(prompt_id)
        else:
            named = p.item.prompt_id or p.item.prompt_message_id
            outcomes[planned.pop(memory_id).index] = SaveOutcome(
                SaveStatus.REFUSED, reason=f"prompt {named[:64]!r} not found"
            )
            continue
        p.memory = replace(
            p.memory,
            prompt_id=prompt_id,
            conversation_id=p.memory.conversation_id or prompt.conversation_id,
            provider=p.memory.provider or prompt.provider,
        )
