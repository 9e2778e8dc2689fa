"""Anthropic's Messages API (POST <base_url>/v1/messages), plain and streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from chat_service.errors import ProviderRateLimitedError, ProviderUnavailableError
from chat_service.models import Completion, Prompt, Role, StreamEnd, TextDelta, Turn, Usage
from chat_service.providers.base import JsonApiProvider
from chat_service.providers.interface import StreamEvent

API_VERSION = "2023-06-01"


class AnthropicProvider(JsonApiProvider):
    name = "anthropic"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        temperature: float | None = None,
    ) -> None:
        super().__init__(
            client,
            f"{base_url.rstrip('/')}/v1/messages",
            {"x-api-key": api_key, "anthropic-version": API_VERSION},
            temperature,
        )

    def request_body(
        self, prompt: Prompt, model: str, max_tokens: int, stream: bool
    ) -> dict[str, Any]:
        return {
            "model": model,
            "system": prompt.system,
            "messages": [
                {"role": turn.role.value, "content": turn.content}
                for turn in alternating(prompt.turns)
            ],
            "max_tokens": max_tokens,
            "stream": stream,
        }

    def completion(self, body: Any) -> Completion:
        text = "".join(block["text"] for block in body["content"] if block.get("type") == "text")
        usage = body.get("usage") or {}
        return Completion(
            text=text,
            usage=Usage(
                prompt_tokens=int(usage.get("input_tokens") or 0),
                completion_tokens=int(usage.get("output_tokens") or 0),
            ),
            finish_reason=body.get("stop_reason") or "",
        )

    async def stream(
        self, prompt: Prompt, model: str, max_tokens: int
    ) -> AsyncGenerator[StreamEvent, None]:
        input_tokens = output_tokens = 0
        finish_reason = ""
        stopped = False
        async with self.events(prompt, model, max_tokens) as events:
            async for data in events:
                event = json.loads(data)
                kind = event.get("type")
                if kind == "content_block_delta":
                    delta = event["delta"]
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield TextDelta(delta["text"])
                elif kind == "message_start":
                    usage = event["message"].get("usage") or {}
                    input_tokens = int(usage.get("input_tokens") or 0)
                    output_tokens = int(usage.get("output_tokens") or 0)
                elif kind == "message_delta":
                    finish_reason = event.get("delta", {}).get("stop_reason") or finish_reason
                    usage = event.get("usage") or {}
                    output_tokens = int(usage.get("output_tokens") or output_tokens)
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    raise stream_error(self.name, event.get("error") or {})
        if not stopped:
            raise ProviderUnavailableError(f"{self.name} ended the answer stream early")
        yield StreamEnd(
            usage=Usage(prompt_tokens=input_tokens, completion_tokens=output_tokens),
            finish_reason=finish_reason,
        )


def stream_error(provider: str, error: dict[str, Any]) -> Exception:
    """An error event sent after the stream started (HTTP status was already 200)."""
    if error.get("type") == "rate_limit_error":
        return ProviderRateLimitedError(f"{provider} is rate limiting")
    return ProviderUnavailableError(f"{provider} failed mid-answer: {error.get('type', '?')}")


def alternating(turns: tuple[Turn, ...]) -> list[Turn]:
    """Turns as the Messages API wants them: starting with the user, roles alternating
    (consecutive turns of one role are joined)."""
    merged: list[Turn] = []
    for turn in turns:
        if not merged and turn.role is not Role.USER:
            continue
        if merged and merged[-1].role is turn.role:
            merged[-1] = Turn(turn.role, f"{merged[-1].content}\n\n{turn.content}")
        else:
            merged.append(turn)
    return merged
