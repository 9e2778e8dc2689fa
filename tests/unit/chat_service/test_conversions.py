"""Protobuf to domain and back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chat_service import conversions
from chat_service.errors import (
    InvalidChatRequestError,
)
from chat_service.models import AnswerDetails, ChatAnswer, ContextMemory, Role, Turn, Usage
from protos.chat.v1 import chat_pb2


def test_request_conversion_keeps_order_and_rejects_roleless_turns() -> None:
    request = chat_pb2.ChatRequest(
        message="q",
        top_k=3,
        history=[
            chat_pb2.Turn(role=chat_pb2.ROLE_USER, content="first"),
            chat_pb2.Turn(role=chat_pb2.ROLE_ASSISTANT, content="second"),
        ],
        model="m",
    )
    question = conversions.chat_question(request)
    assert question.history == (Turn(Role.USER, "first"), Turn(Role.ASSISTANT, "second"))
    assert (question.provider, question.model, question.top_k) == (None, "m", 3)
    request.history.append(chat_pb2.Turn(content="no role"))
    with pytest.raises(InvalidChatRequestError):
        conversions.chat_question(request)


def test_the_askers_time_zone_goes_on_to_the_memory_search() -> None:
    request = chat_pb2.ChatRequest(message="q", time_zone="Asia/Tokyo")
    question = conversions.chat_question(request)
    assert question.time_zone == "Asia/Tokyo"
    search = conversions.search_request(question.message, 5, question.time_zone)
    assert (search.time_zone, search.relevant_only) == ("Asia/Tokyo", True)
    assert conversions.chat_question(chat_pb2.ChatRequest(message="q")).time_zone == ""


def test_response_conversion_carries_memories_usage_and_flags() -> None:
    when = datetime(2025, 5, 4, 12, 30, tzinfo=UTC)
    answer = ChatAnswer(
        text="hello",
        details=AnswerDetails(
            context_used=[ContextMemory("m1", "text", 0.5, "claude", when, truncated=True)],
            usage=Usage(10, 2, estimated=True),
            offline=True,
            context_unavailable=False,
            notice="n",
            provider="offline",
        ),
    )
    message = conversions.chat_response(answer)
    assert message.response == "hello"
    used = message.details.context_used[0]
    assert (used.id, used.text, used.provider, used.truncated) == ("m1", "text", "claude", True)
    assert used.created_at.ToDatetime(tzinfo=UTC) == when
    assert (message.details.usage.prompt_tokens, message.details.usage.estimated) == (10, True)
    assert message.details.offline and message.details.notice == "n"
