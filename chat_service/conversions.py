"""Protobuf messages to the chat service's domain types and back; nothing else sees _pb2."""

from __future__ import annotations

import dataclasses
from datetime import UTC
from typing import Any

from chat_service.errors import InvalidChatRequestError
from chat_service.models import (
    AnswerDetails,
    ChatAnswer,
    ChatQuestion,
    ContextMemory,
    Role,
    Turn,
)
from protos.chat.v1 import chat_pb2
from protos.memory.v1 import memory_pb2

ROLES = {chat_pb2.ROLE_USER: Role.USER, chat_pb2.ROLE_ASSISTANT: Role.ASSISTANT}


def chat_question(request: chat_pb2.ChatRequest) -> ChatQuestion:
    history = []
    for turn in request.history:
        role = ROLES.get(turn.role)
        if role is None:
            raise InvalidChatRequestError("every history turn needs a role: user or assistant")
        history.append(Turn(role, turn.content))
    return ChatQuestion(
        message=request.message,
        top_k=request.top_k,
        history=tuple(history),
        provider=request.provider if request.HasField("provider") else None,
        model=request.model if request.HasField("model") else None,
        time_zone=request.time_zone,
    )


def search_request(query: str, top_k: int, time_zone: str = "") -> memory_pb2.SearchRequest:
    # Only memories at or above the memory service's relevance floor go into a prompt.
    return memory_pb2.SearchRequest(
        query=query,
        top_k=top_k,
        mode=memory_pb2.SEARCH_MODE_HYBRID,
        relevant_only=True,
        time_zone=time_zone,
    )


def context_memories(response: memory_pb2.SearchResponse) -> list[ContextMemory]:
    return [
        ContextMemory(
            id=scored.memory.id,
            text=scored.memory.text,
            score=scored.score,
            provider=scored.memory.provider,
            created_at=(
                scored.memory.created_at.ToDatetime(tzinfo=UTC)
                if scored.memory.HasField("created_at")
                else None
            ),
        )
        for scored in response.results
    ]


def _scalar_fields(value: Any, *nested: str) -> dict[str, Any]:
    """A domain dataclass's fields by name, for a message whose fields have the same names
    and types; the `nested` ones are left for the caller to convert."""
    return {
        f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in nested
    }


def context_memory_pb(memory: ContextMemory) -> chat_pb2.ContextMemory:
    message = chat_pb2.ContextMemory(**_scalar_fields(memory, "created_at"))
    if memory.created_at is not None:
        message.created_at.FromDatetime(memory.created_at)
    return message


def answer_details_pb(details: AnswerDetails) -> chat_pb2.AnswerDetails:
    return chat_pb2.AnswerDetails(
        context_used=[context_memory_pb(memory) for memory in details.context_used],
        usage=chat_pb2.Usage(**_scalar_fields(details.usage)),
        **_scalar_fields(details, "context_used", "usage"),
    )


def chat_response(answer: ChatAnswer) -> chat_pb2.ChatResponse:
    return chat_pb2.ChatResponse(response=answer.text, details=answer_details_pb(answer.details))


def delta_event(text: str) -> chat_pb2.ChatStreamEvent:
    return chat_pb2.ChatStreamEvent(delta=text)


def done_event(details: AnswerDetails) -> chat_pb2.ChatStreamEvent:
    return chat_pb2.ChatStreamEvent(done=answer_details_pb(details))
