"""What every provider shares: SSE parsing and HTTP statuses as errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chat_service.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from chat_service.providers.base import raise_for_status, sse_data


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
