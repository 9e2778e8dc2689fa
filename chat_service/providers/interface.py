"""What every LLM provider answers to, apart from how it reaches its API: the offline one
needs no HTTP client, and neither does a service that runs only it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from chat_service.models import Completion, Prompt, StreamEnd, TextDelta

StreamEvent = TextDelta | StreamEnd


class LlmProvider(Protocol):
    name: str

    async def complete(self, prompt: Prompt, model: str, max_tokens: int) -> Completion: ...

    def stream(
        self, prompt: Prompt, model: str, max_tokens: int
    ) -> AsyncGenerator[StreamEvent, None]:
        """Text deltas as the provider sends them, then one StreamEnd."""
        ...
