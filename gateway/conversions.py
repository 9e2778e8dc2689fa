"""HTTP bodies to protobuf messages and back; nothing past this module sees _pb2 types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from gateway import schemas
from protos.chat.v1 import chat_pb2
from protos.memory.v1 import memory_pb2 as pb
from service_kit.api_keys import KEY_SCOPES, KeyScope
from service_kit.llm_apis import ACCEPTED_NAMES

_KIND_TO_PB = {"prompt": pb.MEMORY_KIND_PROMPT, "response": pb.MEMORY_KIND_RESPONSE}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_ROLE_TO_PB = {"user": chat_pb2.ROLE_USER, "assistant": chat_pb2.ROLE_ASSISTANT}
# The LLM APIs a chat may name (service_kit.llm_apis). The extension sends the chat site the
# user is on as `provider`; "chatgpt" and "claude" name an API chat_service can call, so they
# choose it (and are refused if the server runs another one), while sites with no API here
# (gemini, perplexity, ...) leave the choice to the server's configured provider.
LLM_PROVIDERS = ACCEPTED_NAMES
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


def batch_item_to_pb(body: schemas.BatchPrompt | schemas.BatchResponse) -> pb.SaveItem:
    item = pb.SaveItem(
        provider=body.provider or "",
        conversation_id=body.conversation_id or "",
        url=body.url or "",
        metadata=body.metadata or {},
        id=body.id or "",
    )
    if isinstance(body, schemas.BatchPrompt):
        item.text = body.prompt
        item.kind = pb.MEMORY_KIND_PROMPT
        item.message_id = body.message_id or ""
    else:
        item.text = body.response
        item.kind = pb.MEMORY_KIND_RESPONSE
        item.message_id = body.response_message_id or ""
        item.prompt_id = body.prompt_id or ""
        item.prompt_message_id = body.message_id or ""
    if body.created_at is not None:
        item.created_at.FromDatetime(body.created_at)
    return item


_STATUS_FROM_PB = {
    pb.SAVE_STATUS_STORED: "stored",
    pb.SAVE_STATUS_ALREADY_PRESENT: "already_present",
    pb.SAVE_STATUS_REFUSED: "refused",
}


def save_result_from_pb(msg: pb.SaveResult) -> schemas.SaveResult:
    status = _STATUS_FROM_PB.get(msg.status, "refused")
    if status == "refused":
        return schemas.SaveResult(status="refused", reason=msg.reason or "refused")
    return schemas.SaveResult(status=status, id=msg.memory.id)  # type: ignore[arg-type]


def search_to_pb(
    query: str,
    top_k: int,
    mode: str,
    filters: schemas.Filters | None,
    *,
    min_score: float = 0.0,
    relevant_only: bool = False,
    explain: bool = False,
    time_zone: str | None = None,
) -> pb.SearchRequest:
    return pb.SearchRequest(
        query=query,
        top_k=top_k,
        mode=_MODE_TO_PB[mode],
        filters=filters_to_pb(filters),
        min_score=min_score,
        relevant_only=relevant_only,
        explain=explain,
        time_zone=time_zone or "",
    )


def query_to_pb(body: schemas.SearchQuery | schemas.ContextQuery) -> pb.SearchRequest:
    """A /search body as asked; a /context body's memories are about to be injected, so only
    those at or above the relevance floor."""
    if isinstance(body, schemas.ContextQuery):
        text, relevant_only, explain = body.prompt, True, False
    else:
        text, relevant_only, explain = body.query, False, body.explain
    return search_to_pb(
        text,
        body.top_k,
        body.mode,
        body.filters,
        min_score=body.min_score,
        relevant_only=relevant_only,
        explain=explain,
        time_zone=body.time_zone,
    )


def update_to_pb(memory_id: str, body: schemas.MemoryUpdate) -> pb.UpdateMemoryRequest:
    msg = pb.UpdateMemoryRequest(id=memory_id, text=body.text)
    if body.metadata is not None:
        msg.metadata.entries.update(body.metadata)
        # An empty map is still a change: it clears the metadata.
        msg.metadata.SetInParent()
    return msg


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
        "updated_at": (
            msg.updated_at.ToDatetime(tzinfo=UTC) if msg.HasField("updated_at") else None
        ),
    }


def memory_from_pb(msg: pb.Memory) -> schemas.Memory:
    return schemas.Memory.model_validate(_fields(msg))


def scored_from_pb(msg: pb.SearchResponse, explain: bool = False) -> list[schemas.ScoredMemory]:
    return [
        schemas.ScoredMemory.model_validate(
            {
                **_fields(r.memory),
                "score": r.score,
                "contributions": dict(r.contributions) if explain else None,
            }
        )
        for r in msg.results
    ]


def stats_from_pb(msg: pb.Stats) -> schemas.Stats:
    return schemas.Stats.model_validate({f: getattr(msg, f) for f in schemas.Stats.model_fields})


def llm_provider(requested: str | None) -> str | None:
    name = requested.strip().lower() if requested else ""
    return name if name in LLM_PROVIDERS else None


def chat_to_pb(body: schemas.ChatQuery) -> chat_pb2.ChatRequest:
    request = chat_pb2.ChatRequest(
        message=body.message,
        top_k=body.top_k,
        history=[
            chat_pb2.Turn(role=_ROLE_TO_PB[turn.role], content=turn.content)
            for turn in body.history
        ],
        time_zone=body.time_zone or "",
    )
    provider = llm_provider(body.provider)
    if provider is not None:
        request.provider = provider
    if body.model is not None:
        request.model = body.model
    return request


def _details(msg: chat_pb2.AnswerDetails) -> dict[str, object]:
    return {
        "context_used": [
            schemas.ChatMemory(
                id=memory.id,
                text=memory.text,
                score=memory.score,
                provider=memory.provider,
                created_at=(
                    memory.created_at.ToDatetime(tzinfo=UTC)
                    if memory.HasField("created_at")
                    else None
                ),
                truncated=memory.truncated,
            )
            for memory in msg.context_used
        ],
        "usage": schemas.ChatUsage(
            prompt_tokens=msg.usage.prompt_tokens,
            completion_tokens=msg.usage.completion_tokens,
            estimated=msg.usage.estimated,
        ),
        "offline": msg.offline,
        "context_unavailable": msg.context_unavailable,
        "notice": msg.notice,
        "provider": msg.provider,
        "model": msg.model,
        "finish_reason": msg.finish_reason,
        "timestamp": datetime.now(UTC),
    }


def chat_answer_from_pb(msg: chat_pb2.ChatResponse) -> schemas.ChatAnswer:
    return schemas.ChatAnswer.model_validate({"response": msg.response, **_details(msg.details)})


def chat_done_from_pb(msg: chat_pb2.AnswerDetails) -> schemas.ChatDone:
    return schemas.ChatDone.model_validate(_details(msg))


def _optional_time(msg: pb.ApiKey, field: str) -> datetime | None:
    return getattr(msg, field).ToDatetime(tzinfo=UTC) if msg.HasField(field) else None


def _scopes(msg: pb.ApiKey) -> list[KeyScope]:
    return [scope for scope in KEY_SCOPES if scope in msg.scopes]


def key_from_pb(msg: pb.ApiKey) -> schemas.ApiKeyInfo:
    return schemas.ApiKeyInfo(
        id=msg.id,
        name=msg.name,
        prefix=msg.prefix,
        scopes=_scopes(msg),
        created_at=msg.created_at.ToDatetime(tzinfo=UTC),
        last_used_at=_optional_time(msg, "last_used_at"),
        expires_at=_optional_time(msg, "expires_at"),
    )


def resolved_key_from_pb(msg: pb.ApiKey) -> schemas.ResolvedKey:
    return schemas.ResolvedKey(
        id=msg.id,
        user_id=msg.user_id,
        scopes=_scopes(msg),
        expires_at=_optional_time(msg, "expires_at"),
    )


def new_key_to_pb(
    body: schemas.NewApiKey, key_hash: bytes, prefix: str, now: datetime
) -> pb.CreateKeyRequest:
    msg = pb.CreateKeyRequest(name=body.name, key_hash=key_hash, prefix=prefix, scopes=body.scopes)
    if body.expires_in_days is not None:
        msg.expires_at.FromDatetime(now + timedelta(days=body.expires_in_days))
    return msg
