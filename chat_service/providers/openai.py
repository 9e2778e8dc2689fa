"""OpenAI-compatible chat completions: OpenAI, Ollama, vLLM, llama.cpp, LM Studio and others
that serve POST <base_url>/chat/completions."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import httpx

from chat_service.errors import ProviderUnavailableError
from chat_service.models import Completion, Prompt, StreamEnd, TextDelta, Usage
from chat_service.providers.base import JsonApiProvider
from chat_service.providers.interface import StreamEvent


class OpenAIProvider(JsonApiProvider):
    name = "openai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str | None = None,
        temperature: float | None = None,
    ) -> None:
        super().__init__(
            client,
            f"{base_url.rstrip('/')}/chat/completions",
            {"Authorization": f"Bearer {api_key}"} if api_key else {},
            temperature,
        )
        # OpenAI's newer models refuse max_tokens; most compatible servers only know it.
        host = urlsplit(base_url).hostname or ""
        self.max_tokens_field = (
            "max_completion_tokens" if host.endswith("api.openai.com") else "max_tokens"
        )

    def request_body(
        self, prompt: Prompt, model: str, max_tokens: int, stream: bool
    ) -> dict[str, Any]:
        messages = [{"role": "system", "content": prompt.system}]
        messages += [{"role": turn.role.value, "content": turn.content} for turn in prompt.turns]
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            self.max_tokens_field: max_tokens,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def completion(self, body: Any) -> Completion:
        choice = body["choices"][0]
        return Completion(
            text=choice["message"].get("content") or "",
            usage=parse_usage(body.get("usage")),
            finish_reason=choice.get("finish_reason") or "",
        )

    async def stream(
        self, prompt: Prompt, model: str, max_tokens: int
    ) -> AsyncGenerator[StreamEvent, None]:
        usage: Usage | None = None
        finish_reason = ""
        done = False
        async with self.events(prompt, model, max_tokens) as events:
            async for data in events:
                if data.strip() == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if event.get("error"):
                    raise ProviderUnavailableError(f"{self.name} failed mid-answer")
                usage = parse_usage(event.get("usage")) or usage
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield TextDelta(text)
                    finish_reason = choice.get("finish_reason") or finish_reason
        if not (done or finish_reason):
            raise ProviderUnavailableError(f"{self.name} ended the answer stream early")
        yield StreamEnd(usage=usage, finish_reason=finish_reason)


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )
