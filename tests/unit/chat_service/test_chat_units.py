"""Pieces of the chat service that need no server: settings, SSE parsing, message shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from chat_service import conversions
from chat_service.config import ChatSettings
from chat_service.errors import (
    InvalidChatRequestError,
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from chat_service.models import AnswerDetails, ChatAnswer, ContextMemory, Role, Turn, Usage
from chat_service.providers.anthropic import alternating
from chat_service.providers.base import raise_for_status, sse_data
from protos.chat.v1 import chat_pb2


async def collect(lines: list[str]) -> list[str]:
    async def source() -> AsyncIterator[str]:
        for line in lines:
            yield line

    return [data async for data in sse_data(source())]


async def test_sse_events_join_data_lines_and_skip_comments_and_names() -> None:
    lines = [
        ": keep-alive",
        "event: content_block_delta",
        'data: {"a":',
        "data:1}",
        "",
        "",
        "data: [DONE]",
    ]
    assert await collect(lines) == ['{"a":\n1}', "[DONE]"]


def test_settings_default_to_offline_and_read_the_shared_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMORY_LAYER_SERVICE_TOKEN", "shared")
    monkeypatch.setenv("CHAT_LLM_PROVIDER", "")
    settings = ChatSettings()
    assert settings.provider == "offline"
    assert settings.port == 50052
    assert settings.service_token is not None
    assert settings.service_token.get_secret_value() == "shared"


def test_settings_refuse_an_incomplete_provider() -> None:
    with pytest.raises(ValidationError, match="CHAT_LLM_MODEL"):
        ChatSettings(llm_provider="openai")
    with pytest.raises(ValidationError, match="CHAT_LLM_API_KEY"):
        ChatSettings(llm_provider="anthropic", llm_model="claude-x")
    local = ChatSettings(llm_provider="OpenAI", llm_model="llama3", llm_base_url="http://h/v1/")
    assert (local.provider, local.base_url) == ("openai", "http://h/v1")
    assert ChatSettings(llm_provider="anthropic", llm_model="m", llm_api_key="k").base_url == (
        "https://api.anthropic.com"
    )


def test_anthropic_turns_start_with_the_user_and_alternate() -> None:
    turns = (
        Turn(Role.ASSISTANT, "greeting"),
        Turn(Role.USER, "a"),
        Turn(Role.USER, "b"),
        Turn(Role.ASSISTANT, "c"),
        Turn(Role.USER, "q"),
    )
    assert alternating(turns) == [
        Turn(Role.USER, "a\n\nb"),
        Turn(Role.ASSISTANT, "c"),
        Turn(Role.USER, "q"),
    ]


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


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ProviderRateLimitedError),
        (500, ProviderUnavailableError),
        (529, ProviderUnavailableError),
        (408, ProviderTimeoutError),
        (404, ProviderRejectedError),
        (401, ProviderAuthError),
    ],
)
async def test_provider_statuses_become_errors_with_a_grpc_meaning(
    status: int, error: type[Exception]
) -> None:
    response = httpx.Response(
        status,
        headers={"retry-after": "30"},
        json={"error": {"type": "x", "message": "model   'nope'\nnot found"}},
        request=httpx.Request("POST", "http://provider/v1/chat/completions"),
    )
    with pytest.raises(error) as raised:
        await raise_for_status("openai", response)
    if status == 429:
        assert isinstance(raised.value, ProviderRateLimitedError)
        assert raised.value.retry_after == "30"
    if status == 404:
        assert str(raised.value) == "openai rejected the request (404): model 'nope' not found"
    if status == 401:
        assert "nope" not in str(raised.value)
