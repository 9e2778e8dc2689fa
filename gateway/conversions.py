"""HTTP bodies to protobuf messages and back; nothing past this module sees _pb2 types."""

from __future__ import annotations

from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp

from gateway import schemas
from protos.memory.v1 import memory_pb2 as pb

_KIND_TO_PB = {"prompt": pb.MEMORY_KIND_PROMPT, "response": pb.MEMORY_KIND_RESPONSE}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_MODE_TO_PB = {
    "hybrid": pb.SEARCH_MODE_HYBRID,
    "semantic": pb.SEARCH_MODE_SEMANTIC,
    "keyword": pb.SEARCH_MODE_KEYWORD,
}


def filters_to_pb(filters: schemas.Filters | None) -> pb.Filters:
    msg = pb.Filters()
    if filters is None:
        return msg
    msg.providers.extend(filters.providers)
    msg.conversation_id = filters.conversation_id or ""
    if filters.kind:
        msg.kind = _KIND_TO_PB[filters.kind]
    if filters.created_after:
        msg.created_after.FromDatetime(filters.created_after)
    if filters.created_before:
        msg.created_before.FromDatetime(filters.created_before)
    return msg


def save_prompt_to_pb(body: schemas.SavePrompt, message_id: str) -> pb.SaveMemoryRequest:
    return pb.SaveMemoryRequest(
        text=body.prompt,
        provider=body.provider,
        conversation_id=body.conversation_id or "",
        message_id=message_id,
        url=body.url or "",
        metadata=body.metadata or {},
        kind=pb.MEMORY_KIND_PROMPT,
    )


def save_response_to_pb(body: schemas.SaveResponse, message_id: str) -> pb.AttachResponseRequest:
    return pb.AttachResponseRequest(
        text=body.response,
        prompt_id=body.prompt_id or "",
        prompt_message_id=body.message_id or "",
        provider=body.provider or "",
        conversation_id=body.conversation_id or "",
        message_id=message_id,
        url=body.url or "",
        metadata=body.metadata or {},
    )


def search_to_pb(
    query: str, top_k: int, mode: str, filters: schemas.Filters | None
) -> pb.SearchRequest:
    return pb.SearchRequest(
        query=query, top_k=top_k, mode=_MODE_TO_PB[mode], filters=filters_to_pb(filters)
    )


def _fields(msg: pb.Memory) -> dict[str, object]:
    created: Timestamp = msg.created_at
    return {
        "id": msg.id,
        "user_id": msg.user_id,
        "kind": _KIND_FROM_PB.get(msg.kind, "prompt"),
        "text": msg.text,
        "provider": msg.provider,
        "conversation_id": msg.conversation_id,
        "message_id": msg.message_id,
        "url": msg.url,
        "metadata": dict(msg.metadata),
        "created_at": created.ToDatetime(tzinfo=UTC),
        "prompt_id": msg.prompt_id,
        "response_id": msg.response_id,
    }


def memory_from_pb(msg: pb.Memory) -> schemas.Memory:
    return schemas.Memory.model_validate(_fields(msg))


def scored_from_pb(msg: pb.SearchResponse) -> list[schemas.ScoredMemory]:
    return [
        schemas.ScoredMemory.model_validate({**_fields(r.memory), "score": r.score})
        for r in msg.results
    ]


def stats_from_pb(msg: pb.Stats) -> schemas.Stats:
    return schemas.Stats(
        total_memories=msg.total_memories,
        users=msg.users,
        collection=msg.collection,
        model=msg.model,
        dimension=msg.dimension,
        backend=msg.backend,
    )
